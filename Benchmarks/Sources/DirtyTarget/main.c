// DirtyTarget PAGES: the process the tracker benchmarks freeze and collect.
//
// Maps PAGES anonymous private 4 KiB pages (MADV_NOHUGEPAGE, so that a write dirties one
// 4 KiB page and not a 2 MiB one), writes every page (non-zero, distinct: page number and a
// SplitMix64 value), prints "ready ADDRESS PAGES" (hex address) and then serves commands
// from stdin, one a line, answering on stdout (line-buffered):
//   d K   writes K distinct pages chosen at random (one 8-byte store each, a value the page
//         never held before, so a hashing tracker sees the change too); answers "ok"
//   q     exits (as does end of file, or the death of the parent)
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

static uint64_t state = 0x243F6A8885A308D3ull;

static uint64_t splitmix64(void) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int main(int argc, char **argv) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (argc != 2) {
        fprintf(stderr, "usage: DirtyTarget PAGES\n");
        return 2;
    }
    size_t pages = strtoull(argv[1], NULL, 10);
    size_t size = pages * 4096;
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    madvise(base, size, MADV_NOHUGEPAGE);
    for (size_t p = 0; p < pages; p++) {
        uint64_t *words = (uint64_t *)(base + p * 4096);
        words[0] = p + 1;
        for (int k = 1; k < 512; k += 8) words[k] = splitmix64() | 1;
    }
    // Pages written by the current command, so that each is chosen once: a bitmap (8 pages
    // for 1 GiB), cleared whole per command, so that it adds the same few dirty pages each time.
    size_t words = (pages + 63) / 64;
    uint64_t *chosen = malloc(words * sizeof(uint64_t));
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %lx %zu\n", (unsigned long)(uintptr_t)base, pages);

    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'q') break;
        if (line[0] != 'd') {
            printf("error unknown command\n");
            continue;
        }
        size_t count = strtoull(line + 1, NULL, 10);
        if (count > pages) count = pages;
        memset(chosen, 0, words * sizeof(uint64_t));
        for (size_t n = 0; n < count;) {
            size_t p = splitmix64() % pages;
            if (chosen[p / 64] & (1ull << (p % 64))) continue;
            chosen[p / 64] |= 1ull << (p % 64);
            uint64_t *words = (uint64_t *)(base + p * 4096);
            words[0] += pages;  // never a value it held before
            n++;
        }
        printf("ok\n");
    }
    return 0;
}
