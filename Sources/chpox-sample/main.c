// chpox-sample: the program the demo checkpoints and restarts.
//
// Every 0.3 s it advances a counter, rewrites a page of a 4 MiB buffer and prints
// "tick N: checksum C", where C sums the whole buffer, so a restarted copy that continues
// from tick N with the same checksum has its memory back exactly as it was then.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(void) {
    enum { pages = 1024 };
    uint64_t *buffer = calloc(pages * 512, sizeof(uint64_t));
    if (!buffer) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (uint64_t tick = 1;; tick++) {
        uint64_t *page = buffer + (tick * 2654435761u % pages) * 512;
        for (int k = 0; k < 512; k++) page[k] = page[k] * 6364136223846793005u + tick + (uint64_t)k;
        uint64_t checksum = 0;
        for (size_t k = 0; k < (size_t)pages * 512; k++) checksum = checksum * 31 + buffer[k];
        printf("tick %llu: checksum %016llx\n", (unsigned long long)tick, (unsigned long long)checksum);
        struct timespec pause = {0, 300 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}
