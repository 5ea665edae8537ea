// chpox-churn-workload [--megabytes M] [--threads T] [--file PATH] [--seed S] [--pace MICROSECONDS]
//
// A live process for checkpointing while it runs. Its threads churn malloc, mmap/mremap/
// madvise and a big M MiB region, hold values in vector, x87 and general registers across
// long spins, sleep in syscalls, take signals and append to a file, and verify all of it as
// they go, so that a checkpointer that freezes it (at any instant, any number of times) and
// disturbs anything -- memory, registers, FPU state, signals, masks, file offsets -- is caught.
//
// Protocol: stdout is one line per event.
//   "ready <pid>"                once every thread has set up
//   stdin "check" -> "ok <iterations> <checksum-hex>"  after a full self-check
//   stdin "quit" or EOF -> "bye", exit 0
//   stdin "restarted" -> "noted": after a restart its stdio are the restarter's (by design),
//                        so their identities are taken again; everything else must hold
//   any unknown line -> "error unknown command"
//   "corrupt <what>"             whenever any thread detects damage; the process then exits 3
// Bad arguments exit 2.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#if !defined(__x86_64__) || !defined(__linux__)
#error "chpox-churn-workload is x86-64 Linux only"
#endif

#define PAGE 4096UL
#define HEAP_SLOTS 256
#define MAP_SLOTS 8
#define MAP_MAX_PAGES 1024          /* 4 MiB */
#define MAX_THREADS 64
#define RECORD 64
#define GOLDEN 0x9E3779B97F4A7C15ULL

// ---- output: every line whole, even when several threads report at once ----

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&out_lock);
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    va_end(ap);
}

// _exit, not exit: other threads are still running and atexit work could hang or crash.
static _Noreturn __attribute__((format(printf, 1, 2))) void corrupt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&out_lock);
    fputs("corrupt ", stdout);
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
    _exit(3);
}

// ---- randomness and hashing ----

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE5E9B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static uint64_t rnd(uint64_t *s) { return mix64(*s += GOLDEN); }
static uint64_t between(uint64_t *s, uint64_t lo, uint64_t hi) { return lo + rnd(s) % (hi - lo + 1); }

// Log-uniform sizes: mostly small, some huge, so the footprint stays modest.
static size_t log_uniform(uint64_t *s, size_t lo, size_t hi) {
    double u = (double)(rnd(s) >> 11) / 9007199254740992.0;
    size_t v = (size_t)exp(log((double)lo) + u * (log((double)hi) - log((double)lo)));
    return v < lo ? lo : v > hi ? hi : v;
}

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// Four independent lanes so hashing 64 MiB at "check" is quick. len is a multiple of 32.
static uint64_t hash_words(const void *p, size_t len) {
    const uint64_t *w = p;
    uint64_t a = 1, b = 2, c = 3, d = 4;
    for (size_t i = 0; i < len / 8; i += 4) {
        a = rotl(a + w[i] * 0xC2B2AE3D27D4EB4FULL, 31) * GOLDEN;
        b = rotl(b + w[i + 1] * 0xC2B2AE3D27D4EB4FULL, 31) * GOLDEN;
        c = rotl(c + w[i + 2] * 0xC2B2AE3D27D4EB4FULL, 31) * GOLDEN;
        d = rotl(d + w[i + 3] * 0xC2B2AE3D27D4EB4FULL, 31) * GOLDEN;
    }
    return mix64(a ^ rotl(b, 17) ^ rotl(c, 29) ^ rotl(d, 43) ^ len);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

// ---- shared state ----

static size_t megabytes = 64;
static int nthreads = 4;
static const char *file_path;
static uint64_t seed = 1;

static unsigned char *big;           // the M MiB region; worker t writes only its stripe
static uint64_t *page_sums;          // per-page hash of big, kept apart from big itself
static size_t big_pages;
static uint64_t zero_page_sum;

static atomic_bool quitting;
static atomic_int workers_ready;
static atomic_uint_fast64_t check_request;
static bool have_avx;

static volatile sig_atomic_t alarms;
static __thread volatile sig_atomic_t self_signals;

struct block { unsigned char *p; size_t size; uint64_t gen; };
struct region { unsigned char *base; size_t len; uint64_t sum; };

struct worker {
    pthread_t thread;
    int index;
    uint64_t rng, gen;
    size_t lo, hi;                   // stripe of big, in pages
    atomic_uint_fast64_t iterations, served;
    uint64_t digest;                 // hash of the stripe's page sums at the last check
    struct block heap[HEAP_SLOTS];
    struct region maps[MAP_SLOTS];
    double acc_d;                    // a running sum kept in double and in long double
    long double acc_ld;
    unsigned mxcsr;
    unsigned short fpucw;
    sigset_t mask;
    int fd;                          // worker 0 only, with --file
    uint64_t records;
    struct stat file_id;
};
static struct worker workers[MAX_THREADS];

// ---- patterns ----

static void fill_random(unsigned char *p, size_t len, uint64_t s) {
    uint64_t *w = (uint64_t *)p;
    for (size_t i = 0; i < len / 8; i++) w[i] = rnd(&s);
}

// Text-like bytes compress well, unlike fill_random's, so the store sees both kinds.
static const char *const words[] = {
    "checkpoint", "restore", "page", "dirty", "thread", "memory", "region", "freeze",
    "signal", "register", "chunk", "store", "delta", "generation", "the", "of", "and", "a",
};
static void fill_text(unsigned char *p, uint64_t s) {
    size_t i = 0;
    while (i < PAGE) {
        const char *w = words[rnd(&s) % (sizeof words / sizeof *words)];
        while (*w && i < PAGE) p[i++] = (unsigned char)*w++;
        if (i < PAGE) p[i++] = rnd(&s) % 12 ? ' ' : '\n';
    }
}

// Cheap arithmetic patterns for heap blocks and maps: checkable without a shadow copy.
static uint64_t block_seed(const struct worker *w, size_t slot, uint64_t gen) {
    return mix64(((uint64_t)w->index << 56) ^ ((uint64_t)slot << 40) ^ gen ^ seed);
}

static void fill_block(struct block *b, uint64_t s) {
    size_t n = b->size / 8;
    uint64_t *w = (uint64_t *)b->p;
    for (size_t i = 0; i < n; i++) w[i] = s + i * GOLDEN;
    for (size_t j = n * 8; j < b->size; j++) b->p[j] = (unsigned char)(s >> (j % 8 * 8));
}

static void verify_block(const struct worker *w, size_t slot) {
    const struct block *b = &w->heap[slot];
    uint64_t s = block_seed(w, slot, b->gen);
    size_t n = b->size / 8;
    const uint64_t *q = (const uint64_t *)b->p;
    for (size_t i = 0; i < n; i++)
        if (q[i] != s + i * GOLDEN)
            corrupt("heap block thread %d slot %zu gen %llu size %zu offset %zu", w->index, slot,
                    (unsigned long long)b->gen, b->size, i * 8);
    for (size_t j = n * 8; j < b->size; j++)
        if (b->p[j] != (unsigned char)(s >> (j % 8 * 8)))
            corrupt("heap block thread %d slot %zu tail offset %zu", w->index, slot, j);
}

static void new_block(struct worker *w, size_t slot) {
    struct block *b = &w->heap[slot];
    b->size = log_uniform(&w->rng, 16, 256 * 1024);
    b->p = malloc(b->size);
    if (!b->p) corrupt("malloc(%zu) failed", b->size);
    b->gen = ++w->gen;
    fill_block(b, block_seed(w, slot, b->gen));
}

// ---- the big region ----

enum { ZERO, TEXT, RANDOM };
static int page_kind(size_t page) { return (int)(page % 3); }

static void write_big_page(struct worker *w, size_t page) {
    unsigned char *p = big + page * PAGE;
    uint64_t s = mix64(page ^ (++w->gen << 24) ^ seed);
    if (page_kind(page) == TEXT) fill_text(p, s);
    else fill_random(p, PAGE, s);
    page_sums[page] = hash_words(p, PAGE);
}

static void verify_big_page(size_t page) {
    uint64_t h = hash_words(big + page * PAGE, PAGE);
    if (h != page_sums[page])
        corrupt("big region page %zu (%s) hash %016llx expected %016llx", page,
                page_kind(page) == ZERO ? "zero" : page_kind(page) == TEXT ? "text" : "random",
                (unsigned long long)h, (unsigned long long)page_sums[page]);
}

static size_t random_stripe_page(struct worker *w, bool writable) {
    for (;;) {
        size_t p = w->lo + rnd(&w->rng) % (w->hi - w->lo);
        if (!writable || page_kind(p) != ZERO) return p;
    }
}

// ---- anonymous maps ----

static void fill_map_pages(struct worker *w, unsigned char *p, size_t len) {
    fill_random(p, len, mix64(++w->gen ^ seed ^ ((uint64_t)w->index << 48)));
}

static void verify_map(const struct worker *w, size_t slot) {
    const struct region *r = &w->maps[slot];
    uint64_t h = hash_words(r->base, r->len);
    if (h != r->sum)
        corrupt("mmap region thread %d slot %zu len %zu at %p hash %016llx expected %016llx", w->index,
                slot, r->len, (void *)r->base, (unsigned long long)h, (unsigned long long)r->sum);
}

static void map_step(struct worker *w) {
    size_t slot = rnd(&w->rng) % MAP_SLOTS;
    struct region *r = &w->maps[slot];
    if (!r->base) {
        r->len = log_uniform(&w->rng, 1, MAP_MAX_PAGES) * PAGE;
        r->base = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r->base == MAP_FAILED) corrupt("mmap(%zu) failed: %s", r->len, strerror(errno));
        fill_map_pages(w, r->base, r->len);
        r->sum = hash_words(r->base, r->len);
        return;
    }
    verify_map(w, slot);
    switch (rnd(&w->rng) % 4) {
    case 0:
        munmap(r->base, r->len);
        r->base = NULL;
        return;
    case 1: {
        // Moving or resizing must carry the kept prefix over byte for byte.
        size_t len = log_uniform(&w->rng, 1, MAP_MAX_PAGES) * PAGE;
        size_t keep = len < r->len ? len : r->len;
        uint64_t before = hash_words(r->base, keep);
        unsigned char *p = mremap(r->base, r->len, len, MREMAP_MAYMOVE);
        if (p == MAP_FAILED) corrupt("mremap(%zu -> %zu) failed: %s", r->len, len, strerror(errno));
        if (hash_words(p, keep) != before)
            corrupt("mremap thread %d slot %zu lost contents (%zu -> %zu)", w->index, slot, r->len, len);
        if (len > keep) fill_map_pages(w, p + keep, len - keep);
        r->base = p;
        r->len = len;
        break;
    }
    case 2: {
        // Dropped pages must read back as zero, then take new data.
        size_t pages = r->len / PAGE, first = rnd(&w->rng) % pages;
        size_t count = 1 + rnd(&w->rng) % (pages - first);
        unsigned char *p = r->base + first * PAGE;
        if (madvise(p, count * PAGE, MADV_DONTNEED) != 0) corrupt("madvise failed: %s", strerror(errno));
        for (size_t i = 0; i < count * PAGE; i += 8)
            if (*(uint64_t *)(p + i) != 0)
                corrupt("MADV_DONTNEED page not zero: thread %d slot %zu offset %zu", w->index, slot,
                        first * PAGE + i);
        fill_map_pages(w, p, count * PAGE);
        break;
    }
    default:
        fill_map_pages(w, r->base + rnd(&w->rng) % (r->len / PAGE) * PAGE, PAGE);
        break;
    }
    r->sum = hash_words(r->base, r->len);
}

// ---- FPU ----

// noinline: two calls must run the same instructions, so equal inputs give equal bits.
static __attribute__((noinline)) double series_d(double x, int n) {
    double s = 0;
    for (int i = 1; i <= n; i++) s += sqrt(x + i) * sin(x * 0.01 * i);
    return s;
}
static __attribute__((noinline)) long double series_ld(long double x, int n, long double *abs_sum) {
    long double s = 0, a = 0;
    for (int i = 1; i <= n; i++) {
        long double t = sqrtl(x + i) * sinl(x * 0.01L * i);
        s += t;
        a += fabsl(t);
    }
    *abs_sum = a;
    return s;
}

static unsigned read_mxcsr(void) {
    unsigned m;
    __asm__ volatile("stmxcsr %0" : "=m"(m));
    return m & ~0x3Fu; // the low six bits are sticky exception flags, not state we own
}
static unsigned short read_fpucw(void) {
    unsigned short cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    return cw;
}

static void check_fpu_control(const struct worker *w) {
    if (read_mxcsr() != w->mxcsr) corrupt("MXCSR thread %d is %#x expected %#x", w->index, read_mxcsr(), w->mxcsr);
    if (read_fpucw() != w->fpucw)
        corrupt("x87 control word thread %d is %#x expected %#x", w->index, read_fpucw(), w->fpucw);
}

static void fpu_step(struct worker *w) {
    double x = 1.0 + (double)(rnd(&w->rng) % 100000) / 7.0;
    int n = 16 + (int)(rnd(&w->rng) % 48);
    double a = series_d(x, n), b = series_d(x, n);
    long double abs_sum, c = series_ld(x, n, &abs_sum);
    if (memcmp(&a, &b, sizeof a) != 0) corrupt("double recomputation differs thread %d: %a vs %a", w->index, a, b);
    if (fabsl((long double)a - c) > 1e-9L * abs_sum + 1e-300L)
        corrupt("double vs x87 differ thread %d: %a vs %La", w->index, a, c);
    w->acc_d += sqrt(x);
    w->acc_ld += sqrtl(x);
    if (fabsl((long double)w->acc_d - w->acc_ld) > 1e-7L * w->acc_ld)
        corrupt("running sum drifted thread %d: %a vs %La", w->index, w->acc_d, w->acc_ld);
    check_fpu_control(w);
}

// ---- registers held across a spin ----

// Vector slots are 32 bytes (xmm uses the first 16); then four GPRs, then two x87 values.
struct held {
    _Alignas(64) unsigned char v[8][32];
    uint64_t g[4];
    long double x[2];
};
_Static_assert(__builtin_offsetof(struct held, g) == 256, "asm offsets");
_Static_assert(__builtin_offsetof(struct held, x) == 288, "asm offsets");

#define VLD(op, n, r) op " " #n "*32(%[i]), %%" r "\n\t"
#define VST(op, n, r) op " %%" r ", " #n "*32(%[o])\n\t"
#define GPR_X87_SPIN                                                                             \
    "mov 256(%[i]), %%r8\n\tmov 264(%[i]), %%r9\n\tmov 272(%[i]), %%r10\n\tmov 280(%[i]), %%r11\n\t" \
    "fldt 288(%[i])\n\tfldt 304(%[i])\n\t"                                                       \
    "mov %[n], %%rcx\n"                                                                          \
    "1:\n\tdec %%rcx\n\tjnz 1b\n\t"                                                              \
    "fstpt 304(%[o])\n\tfstpt 288(%[o])\n\t"                                                     \
    "mov %%r8, 256(%[o])\n\tmov %%r9, 264(%[o])\n\tmov %%r10, 272(%[o])\n\tmov %%r11, 280(%[o])\n\t"
#define HOLD_CLOBBERS                                                                             \
    "rcx", "r8", "r9", "r10", "r11", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", \
        "xmm15", "st", "st(1)", "memory", "cc"

static void hold_sse(const struct held *in, struct held *out, uint64_t spins) {
    __asm__ volatile(VLD("movdqu", 0, "xmm8") VLD("movdqu", 1, "xmm9") VLD("movdqu", 2, "xmm10")
                     VLD("movdqu", 3, "xmm11") VLD("movdqu", 4, "xmm12") VLD("movdqu", 5, "xmm13")
                     VLD("movdqu", 6, "xmm14") VLD("movdqu", 7, "xmm15") GPR_X87_SPIN
                     VST("movdqu", 0, "xmm8") VST("movdqu", 1, "xmm9") VST("movdqu", 2, "xmm10")
                     VST("movdqu", 3, "xmm11") VST("movdqu", 4, "xmm12") VST("movdqu", 5, "xmm13")
                     VST("movdqu", 6, "xmm14") VST("movdqu", 7, "xmm15")
                     : : [i] "r"(in), [o] "r"(out), [n] "r"(spins) : HOLD_CLOBBERS);
}

// The upper ymm halves live only in XSAVE state: the part a careless restore drops.
static __attribute__((target("avx"))) void hold_avx(const struct held *in, struct held *out, uint64_t spins) {
    __asm__ volatile(VLD("vmovdqu", 0, "ymm8") VLD("vmovdqu", 1, "ymm9") VLD("vmovdqu", 2, "ymm10")
                     VLD("vmovdqu", 3, "ymm11") VLD("vmovdqu", 4, "ymm12") VLD("vmovdqu", 5, "ymm13")
                     VLD("vmovdqu", 6, "ymm14") VLD("vmovdqu", 7, "ymm15") GPR_X87_SPIN
                     VST("vmovdqu", 0, "ymm8") VST("vmovdqu", 1, "ymm9") VST("vmovdqu", 2, "ymm10")
                     VST("vmovdqu", 3, "ymm11") VST("vmovdqu", 4, "ymm12") VST("vmovdqu", 5, "ymm13")
                     VST("vmovdqu", 6, "ymm14") VST("vmovdqu", 7, "ymm15") "vzeroupper\n\t"
                     : : [i] "r"(in), [o] "r"(out), [n] "r"(spins) : HOLD_CLOBBERS);
}

static void hold_step(struct worker *w) {
    struct held in, out;
    memset(&in, 0, sizeof in);
    memset(&out, 0, sizeof out);
    fill_random(&in.v[0][0], sizeof in.v + sizeof in.g, rnd(&w->rng));
    in.x[0] = (long double)rnd(&w->rng) * 0x1p-37L;
    in.x[1] = -(long double)rnd(&w->rng) / 3.0L;
    uint64_t spins = between(&w->rng, 1u << 17, 1u << 20);
    size_t width = have_avx ? 32 : 16;
    if (have_avx) hold_avx(&in, &out, spins);
    else hold_sse(&in, &out, spins);
    for (int r = 0; r < 8; r++)
        if (memcmp(in.v[r], out.v[r], width) != 0)
            corrupt("%s%d clobbered thread %d", have_avx ? "ymm" : "xmm", r + 8, w->index);
    for (int r = 0; r < 4; r++)
        if (in.g[r] != out.g[r]) corrupt("r%d clobbered thread %d", r + 8, w->index);
    for (int r = 0; r < 2; r++)
        if (memcmp(&in.x[r], &out.x[r], 10) != 0) corrupt("x87 st(%d) clobbered thread %d", 1 - r, w->index);
}

// ---- signals ----

static void on_alarm(int sig) { (void)sig; alarms++; }
static void on_usr2(int sig) { (void)sig; self_signals++; }

static bool same_mask(const sigset_t *a, const sigset_t *b) {
    for (int s = 1; s <= SIGRTMAX; s++)
        if (sigismember(a, s) != sigismember(b, s)) return false;
    return true;
}

static void check_handler(int sig, void (*fn)(int)) {
    struct sigaction sa;
    sigaction(sig, NULL, &sa);
    if (sa.sa_handler != fn || !(sa.sa_flags & SA_RESTART)) corrupt("handler for signal %d replaced", sig);
}

// A signal a thread sends itself is handled before the syscall returns; a tracer that
// swallows it at a signal-delivery stop shows up here.
static void signal_step(struct worker *w) {
    sig_atomic_t before = self_signals;
    syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), SIGUSR2);
    if (self_signals != before + 1) corrupt("SIGUSR2 to self lost thread %d (%d -> %d)", w->index, (int)before, (int)self_signals);
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    if (!same_mask(&now, &w->mask)) corrupt("signal mask changed thread %d", w->index);
}

// ---- the file ----

static void file_verify(const struct worker *w) {
    off_t at = lseek(w->fd, 0, SEEK_CUR);
    if (at != (off_t)(w->records * RECORD))
        corrupt("file offset %lld expected %llu", (long long)at, (unsigned long long)(w->records * RECORD));
    struct stat st;
    if (fstat(w->fd, &st) != 0 || st.st_dev != w->file_id.st_dev || st.st_ino != w->file_id.st_ino)
        corrupt("file descriptor %d no longer refers to %s", w->fd, file_path);
    if (st.st_size != (off_t)(w->records * RECORD))
        corrupt("file size %lld expected %llu", (long long)st.st_size, (unsigned long long)(w->records * RECORD));
    int flags = fcntl(w->fd, F_GETFL);
    if (flags < 0 || (flags & O_ACCMODE) != O_WRONLY || (flags & O_APPEND)) corrupt("file flags changed: %#x", flags);
}

static void file_append(struct worker *w) {
    char rec[RECORD];
    memset(rec, ' ', sizeof rec);
    int n = snprintf(rec, sizeof rec, "chpox-churn record %020llu", (unsigned long long)w->records);
    rec[n] = ' ';
    rec[RECORD - 1] = '\n';
    ssize_t put = write(w->fd, rec, RECORD);
    if (put != RECORD) corrupt("file write returned %zd: %s", put, put < 0 ? strerror(errno) : "short");
    w->records++;
    off_t at = lseek(w->fd, 0, SEEK_CUR);
    if (at != (off_t)(w->records * RECORD))
        corrupt("file offset %lld after record %llu", (long long)at, (unsigned long long)w->records);
}

// ---- workers ----

// --pace: a sleep after every loop, so that tests can checkpoint a process that writes
// megabytes, not gigabytes, per second (0: as fast as it can).
static unsigned long long pace_us;

static void pace(void) {
    if (!pace_us) return;
    struct timespec t = {(time_t)(pace_us / 1000000), (long)(pace_us % 1000000) * 1000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

static void nap(struct worker *w) {
    uint64_t ns = between(&w->rng, 100000, 2000000);
    struct timespec t = {0, (long)ns};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {} // nanosleep ignores SA_RESTART
}

// Everything the thread owns, verified in full; only the owner may do it, since only it writes.
static void full_verify(struct worker *w) {
    for (size_t s = 0; s < HEAP_SLOTS; s++) verify_block(w, s);
    for (size_t s = 0; s < MAP_SLOTS; s++)
        if (w->maps[s].base) verify_map(w, s);
    for (size_t p = w->lo; p < w->hi; p++) verify_big_page(p);
    if (w->fd >= 0) file_verify(w);
    check_fpu_control(w);
    uint64_t d = 0;
    for (size_t p = w->lo; p < w->hi; p++) d = mix64(d ^ page_sums[p]);
    w->digest = d;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    // A non-default MXCSR (flush-to-zero; no effect on these normal numbers) catches a
    // restore that resets FPU control state to defaults.
    unsigned m = read_mxcsr() | 0x8000u;
    __asm__ volatile("ldmxcsr %0" : : "m"(m));
    w->mxcsr = read_mxcsr();
    w->fpucw = read_fpucw();
    pthread_sigmask(SIG_BLOCK, NULL, &w->mask);
    for (size_t p = w->lo; p < w->hi; p++) {
        if (page_kind(p) == ZERO) page_sums[p] = zero_page_sum; // never written: stays unpopulated
        else write_big_page(w, p);
    }
    for (size_t s = 0; s < HEAP_SLOTS; s++) new_block(w, s);
    atomic_fetch_add(&workers_ready, 1);

    while (!atomic_load(&quitting)) {
        uint64_t req = atomic_load(&check_request);
        if (req != atomic_load(&w->served)) {
            full_verify(w);
            atomic_store(&w->served, req);
        }
        for (int k = 0; k < 4; k++) {
            size_t s = rnd(&w->rng) % HEAP_SLOTS;
            verify_block(w, s);
            free(w->heap[s].p);
            new_block(w, s);
        }
        verify_block(w, rnd(&w->rng) % HEAP_SLOTS);
        map_step(w);
        for (int k = 0; k < 2; k++) write_big_page(w, random_stripe_page(w, true));
        for (int k = 0; k < 4; k++) verify_big_page(random_stripe_page(w, false));
        fpu_step(w);
        hold_step(w);
        signal_step(w);
        if (w->fd >= 0) file_append(w);
        if (rnd(&w->rng) % 4 == 0) nap(w);
        pace();
        atomic_fetch_add(&w->iterations, 1);
    }
    return NULL;
}

// ---- main thread ----

struct fd_id { bool open; dev_t dev; ino_t ino; mode_t mode; int accmode; };
static struct fd_id std_fds[3];

static struct fd_id identify(int fd) {
    struct fd_id id = {0};
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && fstat(fd, &st) == 0)
        id = (struct fd_id){true, st.st_dev, st.st_ino, st.st_mode & S_IFMT, fl & O_ACCMODE};
    return id;
}

static sigset_t main_mask;
static double last_alarm_time;
static sig_atomic_t last_alarms;

static void check_main_thread(void) {
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    if (!sigismember(&now, SIGUSR1)) corrupt("SIGUSR1 no longer blocked in main thread");
    if (!same_mask(&now, &main_mask)) corrupt("main thread signal mask changed");
    check_handler(SIGALRM, on_alarm);
    check_handler(SIGUSR2, on_usr2);
    struct itimerval it;
    getitimer(ITIMER_REAL, &it);
    if (it.it_interval.tv_sec != 0 || it.it_interval.tv_usec != 5000) corrupt("ITIMER_REAL interval changed");
    for (int fd = 0; fd < 3; fd++) {
        struct fd_id id = identify(fd), was = std_fds[fd];
        if (id.open != was.open || id.dev != was.dev || id.ino != was.ino || id.mode != was.mode ||
            id.accmode != was.accmode)
            corrupt("fd %d changed identity", fd);
    }
}

// The timer fires every 5 ms; alarms that fire during a freeze merge into one pending
// signal, so only "some arrived" is checkable, and only once enough time has passed.
static void check_alarms(void) {
    double t = now_s();
    if (t - last_alarm_time < 0.2) return;
    for (int i = 0; alarms == last_alarms && i < 100; i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    if (alarms == last_alarms)
        corrupt("SIGALRM stopped arriving: still %d after %.3f s", (int)alarms, now_s() - last_alarm_time);
    last_alarm_time = t;
    last_alarms = alarms;
}

static void run_check(void) {
    check_main_thread();
    uint64_t req = atomic_fetch_add(&check_request, 1) + 1;
    double start = now_s();
    for (int t = 0; t < nthreads; t++) {
        while (atomic_load(&workers[t].served) < req) {
            // Generous: a slow checkpoint may hold the whole process frozen meanwhile.
            if (now_s() - start > 300) corrupt("worker %d did not answer check", t);
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
    check_alarms();
    uint64_t iterations = 0, sum = seed;
    for (int t = 0; t < nthreads; t++) {
        iterations += atomic_load(&workers[t].iterations);
        sum = mix64(sum ^ workers[t].digest);
    }
    say("ok %llu %016llx", (unsigned long long)iterations, (unsigned long long)sum);
}

static void finish(void) {
    atomic_store(&quitting, true);
    for (int t = 0; t < nthreads; t++) pthread_join(workers[t].thread, NULL);
    say("bye");
    exit(0);
}

static _Noreturn void usage(void) {
    fprintf(stderr, "usage: chpox-churn-workload [--megabytes M] [--threads T] [--file PATH] [--seed S] [--pace MICROSECONDS]\n");
    exit(2);
}

static unsigned long long number(const char *s, unsigned long long lo, unsigned long long hi) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || end == s || v < lo || v > hi) usage();
    return v;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"megabytes", required_argument, NULL, 'm'}, {"threads", required_argument, NULL, 't'},
        {"file", required_argument, NULL, 'f'},      {"seed", required_argument, NULL, 's'},
        {"pace", required_argument, NULL, 'p'},      {NULL, 0, NULL, 0},
    };
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'm': megabytes = number(optarg, 1, 1u << 20); break;
        case 't': nthreads = (int)number(optarg, 1, MAX_THREADS); break;
        case 'f': file_path = optarg; break;
        case 's': seed = number(optarg, 0, ~0ULL); break;
        case 'p': pace_us = number(optarg, 0, 10000000); break;
        default: usage();
        }
    }
    if (optind != argc) usage();
    have_avx = __builtin_cpu_supports("avx");

    big_pages = megabytes * (1024 * 1024 / PAGE);
    if (big_pages < (size_t)nthreads) usage();
    big = mmap(NULL, big_pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    page_sums = malloc(big_pages * sizeof *page_sums);
    if (big == MAP_FAILED || !page_sums) corrupt("cannot allocate %zu MiB", megabytes);
    static uint64_t zeros[PAGE / 8];
    zero_page_sum = hash_words(zeros, PAGE);

    for (int fd = 0; fd < 3; fd++) std_fds[fd] = identify(fd);

    // Workers inherit this mask; SIGUSR1 blocked is the state the check expects to survive.
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_SETMASK, &usr1, NULL);  // SET, not BLOCK: a parent (a test runner) may have blocked SIGALRM or SIGUSR2
    pthread_sigmask(SIG_BLOCK, NULL, &main_mask);
    struct sigaction sa = {0};
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);

    for (int t = 0; t < nthreads; t++) {
        struct worker *w = &workers[t];
        w->index = t;
        w->rng = mix64(seed + (uint64_t)t * 0x1000193);
        w->lo = big_pages * (size_t)t / (size_t)nthreads;
        w->hi = big_pages * (size_t)(t + 1) / (size_t)nthreads;
        w->fd = -1;
    }
    if (file_path) {
        struct worker *w = &workers[0];
        w->fd = open(file_path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
        if (w->fd < 0) {
            fprintf(stderr, "chpox-churn-workload: %s: %s\n", file_path, strerror(errno));
            exit(2);
        }
        fstat(w->fd, &w->file_id);
    }
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&workers[t].thread, NULL, worker_main, &workers[t]) != 0)
            corrupt("pthread_create failed");
    while (atomic_load(&workers_ready) < nthreads) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }

    struct itimerval it = {{0, 5000}, {0, 5000}};
    setitimer(ITIMER_REAL, &it, NULL);
    last_alarm_time = now_s();
    last_alarms = alarms;
    say("ready %d", (int)getpid());

    // Blocking read on purpose: being frozen inside it is part of the test.
    char line[256];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(0, line + have, sizeof line - 1 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {0, POLLIN, 0};
            poll(&p, 1, -1);
            continue;
        }
        if (n <= 0) finish();
        have += (size_t)n;
        char *nl;
        while ((nl = memchr(line, '\n', have))) {
            *nl = '\0';
            if (nl > line && nl[-1] == '\r') nl[-1] = '\0';
            if (strcmp(line, "check") == 0) run_check();
            else if (strcmp(line, "quit") == 0) finish();
            else if (strcmp(line, "restarted") == 0) {
                for (int fd = 0; fd < 3; fd++) std_fds[fd] = identify(fd);
                say("noted");
            }
            else if (line[0]) say("error unknown command");
            have -= (size_t)(nl + 1 - line);
            memmove(line, nl + 1, have);
        }
        if (have == sizeof line - 1) have = 0; // an overlong line: drop it
    }
}
