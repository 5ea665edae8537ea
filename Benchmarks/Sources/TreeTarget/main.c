// TreeTarget PROCESSES SHARED_PAGES PRIVATE_PAGES: the process tree the tree benchmark
// checkpoints (with chpox and with CRIU).
//
// The first process maps SHARED_PAGES anonymous private 4 KiB pages (MADV_NOHUGEPAGE, so
// that a write dirties one 4 KiB page) and fills every one with SplitMix64 words from a fixed
// seed: incompressible, yet the same bytes in every run. It then forks PROCESSES - 1 children,
// which share those pages copy-on-write; each process (the first too) then maps and fills
// PRIVATE_PAGES pages of its own, from a seed of its own (its index), so no two private pages
// are alike. `TreeTarget 1 262144 0` is the single 1 GiB process it is compared with.
//
// When every process has filled its pages, the first prints "ready PID PID ..." (its own pid,
// then its children's) and serves commands from stdin, one a line, answering on stdout
// (line-buffered):
//   d     every process writes 1% of the pages it maps (shared and private together, distinct
//         pages chosen at random from a seed of its own; one 8-byte store each, a value the page
//         never held, so a child's write to a shared page breaks the sharing of that page
//         alone); answers "ok N", N the pages written over the tree, once all have written
//   q     exits (as does end of file, or the death of the parent); the children die with it
//
// Commands reach the children by signal, not by pipe or shared memory, so that the tree holds
// no more kernel objects than a checkpoint of memory needs: each child waits in sigwaitinfo
// for SIGUSR1, writes its pages, and answers its parent with SIGRTMIN (a real-time signal:
// those queue, where seven SIGUSR2 sent at once could arrive as one).
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint8_t *mapPages(size_t pages) {
    if (pages == 0) return NULL;
    uint8_t *base = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    madvise(base, pages * 4096, MADV_NOHUGEPAGE);
    return base;
}

// Every word random; the first is the page's number plus one, so no page is zero.
static void fill(uint8_t *base, size_t pages, uint64_t seed) {
    uint64_t state = seed;
    for (size_t p = 0; p < pages; p++) {
        uint64_t *words = (uint64_t *)(base + p * 4096);
        words[0] = p + 1;
        for (int k = 1; k < 512; k++) words[k] = splitmix64(&state);
    }
}

struct Memory {
    uint8_t *shared, *private;
    size_t sharedPages, privatePages;
    uint64_t state;   // chooses the pages to write, one seed per process
    uint64_t *chosen; // bitmap of the pages written by the current command
};

// Writes 1% of the pages the process maps; returns how many it wrote.
static size_t dirty(struct Memory *m) {
    size_t pages = m->sharedPages + m->privatePages;
    size_t count = pages / 100;
    memset(m->chosen, 0, (pages + 63) / 64 * sizeof(uint64_t));
    for (size_t n = 0; n < count;) {
        size_t p = splitmix64(&m->state) % pages;
        if (m->chosen[p / 64] & (1ull << (p % 64))) continue;
        m->chosen[p / 64] |= 1ull << (p % 64);
        uint8_t *page = p < m->sharedPages ? m->shared + p * 4096 : m->private + (p - m->sharedPages) * 4096;
        ((uint64_t *)page)[0] += pages;  // never a value it held before
        n++;
    }
    return count;
}

int main(int argc, char **argv) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (argc != 4) {
        fprintf(stderr, "usage: TreeTarget PROCESSES SHARED_PAGES PRIVATE_PAGES\n");
        return 2;
    }
    // Only stdin, stdout and stderr are ours (see DirtyTarget).
    close_range(3, ~0u, 0);
    int processes = atoi(argv[1]);
    struct Memory m = {0};
    m.sharedPages = strtoull(argv[2], NULL, 10);
    m.privatePages = strtoull(argv[3], NULL, 10);
    if (processes < 1 || processes > 64 || m.sharedPages + m.privatePages < 100) {
        fprintf(stderr, "TreeTarget: 1 to 64 processes of at least 100 pages\n");
        return 2;
    }
    m.shared = mapPages(m.sharedPages);
    fill(m.shared, m.sharedPages, 0x243F6A8885A308D3ull);
    m.chosen = malloc((m.sharedPages + m.privatePages + 63) / 64 * sizeof(uint64_t));

    // Blocked before the forks, so that no signal is lost between a fork and a sigwaitinfo.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGUSR1);
    sigaddset(&signals, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &signals, NULL);
    sigset_t command, answer;
    sigemptyset(&command);
    sigaddset(&command, SIGUSR1);
    sigemptyset(&answer);
    sigaddset(&answer, SIGRTMIN);

    pid_t parent = getpid();
    pid_t children[64];
    int index = 0;
    for (int k = 1; k < processes; k++) {
        pid_t child = fork();
        if (child < 0) {
            perror("fork");
            return 1;
        }
        if (child == 0) {
            index = k;
            break;
        }
        children[k - 1] = child;
    }
    if (index > 0) prctl(PR_SET_PDEATHSIG, SIGKILL);  // die with the first process
    m.private = mapPages(m.privatePages);
    fill(m.private, m.privatePages, 0x13198A2E03707344ull * (uint64_t)(index + 1));
    m.state = 0xA4093822299F31D0ull + (uint64_t)index;

    if (index > 0) {
        // The child's "filled" is its first answer; then one per command.
        kill(parent, SIGRTMIN);
        for (;;) {
            if (sigwaitinfo(&command, NULL) != SIGUSR1) continue;
            dirty(&m);
            kill(parent, SIGRTMIN);
        }
    }

    // The first process: wait until every child has filled its pages.
    for (int k = 1; k < processes;)
        if (sigwaitinfo(&answer, NULL) == SIGRTMIN) k++;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d", (int)getpid());
    for (int k = 1; k < processes; k++) printf(" %d", (int)children[k - 1]);
    printf("\n");

    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'q') break;
        if (line[0] != 'd') {
            printf("error unknown command\n");
            continue;
        }
        for (int k = 1; k < processes; k++) kill(children[k - 1], SIGUSR1);
        size_t written = dirty(&m) * (size_t)processes;  // every process writes as many
        for (int k = 1; k < processes;)
            if (sigwaitinfo(&answer, NULL) == SIGRTMIN) k++;
        printf("ok %zu\n", written);
    }
    for (int k = 1; k < processes; k++) kill(children[k - 1], SIGKILL);
    for (int k = 1; k < processes; k++) waitpid(children[k - 1], NULL, 0);
    return 0;
}
