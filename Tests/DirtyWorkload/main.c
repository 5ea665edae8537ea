// chpox-dirty-workload SEED [PAGES]
//
// A process whose memory changes in every way the dirty-page trackers must follow. It reads
// commands on stdin, one per line, and answers each on stdout:
//   "r N"  run round N (seeded by SEED and N), answer "ok N"
//   "c"    self-check, answer "selfcheck ok" or "selfcheck FAIL <why>"
//   "a"    answer "main 0x... shadow 0x..." (where the main region and its shadow are)
//   "w K..." write pages K... of the main region (and the shadow) with fresh random bytes and
//          nothing else, answer "ok" (the inspection tests know exactly which pages changed)
//   "f"    fork a child that compares the main region with its shadow, answer "fork ok" or
//          "fork FAIL" (its memory is the parent's copy: a lazy restart must serve it too)
//   "m"    move the main region elsewhere (mremap MREMAP_FIXED), answer "moved" or "move FAIL"
//   "t"    read the clocks through the vDSO (as libc calls it), answer "clock REALTIME_NS
//          MONOTONIC_NS GETTIMEOFDAY_US TIME_S CPU RESOLUTION_NS" (a restart under another
//          kernel must keep these right), or "clock FAIL <which>"
//   "v"    answer "vdso 0x..." (AT_SYSINFO_EHDR: where the process's vDSO is said to be)
//   "q"    exit 0
// A round writes random pages of a main region and of a shadow copy of it (the self-check
// compares the two), maps, unmaps, remaps at the same address, mremaps (moves and grows),
// MADV_DONTNEEDs then re-reads, mprotects, grows the stack, writes into a THP region, churns
// malloc (brk growth), and forks a child that writes its own copy and exits.
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
static size_t main_pages = 4096;   /* 16 MiB; PAGES sets it (a guest sends its store out small) */
#define MAIN_PAGES main_pages
#define THP_SIZE (4UL << 20)       /* 2 huge pages */
#define SLOTS 8

static uint64_t rng_state;
static uint64_t next_random(void) {
    rng_state += 0x9E3779B97F4A7C15ULL;
    uint64_t z = rng_state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE5E9B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static unsigned char *main_region, *shadow, *thp;
static struct { unsigned char *base; size_t pages; } slots[SLOTS];
static void *heap_blocks[64];
static int initial_fds;

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

static void fill_page(unsigned char *page) {
    for (size_t i = 0; i < PAGE; i += 8) {
        uint64_t v = next_random();
        memcpy(page + i, &v, 8);
    }
}

static void write_main(size_t k) {
    fill_page(main_region + k * PAGE);
    memcpy(shadow + k * PAGE, main_region + k * PAGE, PAGE);
}

static __attribute__((noinline)) uint64_t grow_stack(int depth) {
    volatile unsigned char frame[8192];
    frame[0] = (unsigned char)depth;
    frame[8191] = (unsigned char)next_random();
    if (depth <= 0) return frame[0] + frame[8191];
    return grow_stack(depth - 1) + frame[100];
}

static void *map_anon(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(3); }
    return p;
}

static void round_(uint64_t seed, unsigned long n) {
    rng_state = seed * 1000003ULL + n;
    /* Random writes to the main region (and its shadow). */
    int writes = 20 + next_random() % 60;
    for (int i = 0; i < writes; i++) write_main(next_random() % MAIN_PAGES);

    /* A slot: new mapping, partial unmap, remap at the same address, move, grow. */
    int s = next_random() % SLOTS;
    switch (next_random() % 6) {
    case 0:  /* new mapping, some pages touched */
        if (!slots[s].base) {
            slots[s].pages = 16 + next_random() % 256;
            slots[s].base = map_anon(slots[s].pages * PAGE);
            for (size_t k = 0; k < slots[s].pages; k += 1 + next_random() % 5) fill_page(slots[s].base + k * PAGE);
        }
        break;
    case 1:  /* unmap a hole in the middle */
        if (slots[s].base && slots[s].pages > 8) {
            size_t at = 1 + next_random() % (slots[s].pages - 4);
            munmap(slots[s].base + at * PAGE, PAGE);
            slots[s].pages = at;   /* keep using only the part below the hole */
        }
        break;
    case 2:  /* unmap and map again at the same address */
        if (slots[s].base) {
            munmap(slots[s].base, slots[s].pages * PAGE);
            void *p = mmap(slots[s].base, slots[s].pages * PAGE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (p == MAP_FAILED) { slots[s].base = NULL; break; }
            fill_page(slots[s].base);
        }
        break;
    case 3:  /* move */
        if (slots[s].base) {
            void *p = mremap(slots[s].base, slots[s].pages * PAGE, slots[s].pages * PAGE, MREMAP_MAYMOVE);
            if (p != MAP_FAILED) slots[s].base = p;
            if (next_random() % 2) fill_page(slots[s].base);
        }
        break;
    case 4:  /* grow */
        if (slots[s].base) {
            size_t bigger = slots[s].pages + 1 + next_random() % 64;
            void *p = mremap(slots[s].base, slots[s].pages * PAGE, bigger * PAGE, MREMAP_MAYMOVE);
            if (p != MAP_FAILED) { slots[s].base = p; slots[s].pages = bigger; }
            fill_page(slots[s].base + (slots[s].pages - 1) * PAGE);
        }
        break;
    default: /* drop a mapping entirely */
        if (slots[s].base) { munmap(slots[s].base, slots[s].pages * PAGE); slots[s].base = NULL; }
        break;
    }

    /* MADV_DONTNEED: the pages read back as zero; sometimes read one again. */
    if (next_random() % 3 == 0) {
        size_t k = next_random() % (MAIN_PAGES - 4);
        madvise(main_region + k * PAGE, 2 * PAGE, MADV_DONTNEED);
        memset(shadow + k * PAGE, 0, 2 * PAGE);
        if (next_random() % 2) { volatile unsigned char c = main_region[k * PAGE]; (void)c; }
    }
    /* mprotect read-only and back. */
    if (next_random() % 4 == 0) {
        size_t k = next_random() % (MAIN_PAGES - 8);
        mprotect(main_region + k * PAGE, 4 * PAGE, PROT_READ);
        mprotect(main_region + k * PAGE, 4 * PAGE, PROT_READ | PROT_WRITE);
    }
    /* THP: a byte in one huge page. */
    thp[(next_random() % (THP_SIZE / PAGE)) * PAGE + 17] = (unsigned char)n;
    /* Stack growth. */
    if (next_random() % 4 == 0) grow_stack(4 + next_random() % 24);
    /* malloc churn: brk grows and shrinks. */
    for (int i = 0; i < 8; i++) {
        int b = next_random() % 64;
        free(heap_blocks[b]);
        heap_blocks[b] = malloc(1 + next_random() % 200000);
        if (heap_blocks[b]) memset(heap_blocks[b], (int)n, 64);
    }
    /* fork: the child writes its own copy; the parent's memory must not change. */
    if (next_random() % 5 == 0) {
        pid_t child = fork();
        if (child == 0) {
            for (size_t k = 0; k < 64; k++) main_region[k * PAGE] ^= 0xff;
            _exit(0);
        }
        if (child > 0) waitpid(child, NULL, 0);
    }
}

int main(int argc, char **argv) {
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
    if (argc > 2 && strtoul(argv[2], NULL, 10) >= 64) main_pages = strtoul(argv[2], NULL, 10);
    setvbuf(stdout, NULL, _IOLBF, 0);
    main_region = map_anon(MAIN_PAGES * PAGE);
    shadow = map_anon(MAIN_PAGES * PAGE);
    rng_state = seed;
    for (size_t k = 0; k < MAIN_PAGES; k += 2) write_main(k);
    /* A 2 MiB-aligned region asking for transparent huge pages. */
    unsigned char *raw = map_anon(THP_SIZE + (2UL << 20));
    thp = (unsigned char *)(((uintptr_t)raw + (2UL << 20) - 1) & ~((2UL << 20) - 1));
    madvise(thp, THP_SIZE, MADV_HUGEPAGE);
    memset(thp, 1, THP_SIZE);
    initial_fds = count_fds();

    static char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'r') {
            unsigned long n = strtoul(line + 1, NULL, 10);
            round_(seed, n);
            printf("ok %lu\n", n);
        } else if (line[0] == 'c') {
            if (memcmp(main_region, shadow, MAIN_PAGES * PAGE) != 0) printf("selfcheck FAIL memory differs from its shadow\n");
            else if (count_fds() != initial_fds) printf("selfcheck FAIL %d descriptors open, %d at start\n", count_fds(), initial_fds);
            else printf("selfcheck ok\n");
        } else if (line[0] == 'a') {
            printf("main %p shadow %p\n", (void *)main_region, (void *)shadow);
        } else if (line[0] == 'w') {
            char *cursor = line + 1, *end;
            for (unsigned long k = strtoul(cursor, &end, 10); end != cursor; k = strtoul(cursor, &end, 10)) {
                if (k < MAIN_PAGES) write_main(k);
                cursor = end;
            }
            printf("ok\n");
        } else if (line[0] == 'f') {
            pid_t child = fork();
            if (child == 0) _exit(memcmp(main_region, shadow, MAIN_PAGES * PAGE) == 0 ? 0 : 1);
            int status = 0;
            if (child > 0) waitpid(child, &status, 0);
            printf(child > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "fork ok\n" : "fork FAIL\n");
        } else if (line[0] == 'm') {
            void *target = mmap(NULL, MAIN_PAGES * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            void *moved = target == MAP_FAILED ? MAP_FAILED
                : mremap(main_region, MAIN_PAGES * PAGE, MAIN_PAGES * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target);
            if (moved == MAP_FAILED) {
                printf("move FAIL\n");
            } else {
                main_region = moved;
                printf("moved\n");
            }
        } else if (line[0] == 't') {
            struct timespec real, mono, res;
            struct timeval tv;
            unsigned cpu = 0;
            if (clock_gettime(CLOCK_REALTIME, &real) != 0) printf("clock FAIL clock_gettime realtime\n");
            else if (clock_gettime(CLOCK_MONOTONIC, &mono) != 0) printf("clock FAIL clock_gettime monotonic\n");
            else if (gettimeofday(&tv, NULL) != 0) printf("clock FAIL gettimeofday\n");
            else if (getcpu(&cpu, NULL) != 0) printf("clock FAIL getcpu\n");
            else if (clock_getres(CLOCK_MONOTONIC, &res) != 0) printf("clock FAIL clock_getres\n");
            else {
                time_t now = time(NULL);
                printf("clock %lld %lld %lld %lld %u %lld\n", (long long)real.tv_sec * 1000000000LL + real.tv_nsec,
                       (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec,
                       (long long)tv.tv_sec * 1000000LL + tv.tv_usec, (long long)now, cpu,
                       (long long)res.tv_sec * 1000000000LL + res.tv_nsec);
            }
        } else if (line[0] == 'v') {
            printf("vdso %#lx\n", getauxval(AT_SYSINFO_EHDR));
        } else if (line[0] == 'q') {
            return 0;
        }
    }
    return 0;
}
