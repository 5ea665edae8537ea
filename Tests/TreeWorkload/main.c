// chpox-tree-workload [--megabytes M] [--pace MICROSECONDS]
//
// A tree of four processes for the tree kill tests: the root (member 0), its two children
// (members 1 and 2) and a grandchild (member 3, the first child's). In each member a worker
// thread rewrites the member's own M MiB region page by page with a pattern of (member, page,
// version), verifying every page before it rewrites it; the main thread answers the root over
// pipes. The root's worker also queues real-time signals to the other members, each counted.
// Once "ready" is printed nothing is mapped, unmapped, opened or closed any more (no
// stdio, no malloc), so that every member's memory map and descriptor table stay as they were:
// whatever a checkpointer leaves behind is its own.
//
// Protocol: the root's stdin and stdout, one line each.
//   "ready <root> <child1> <child2> <grandchild>"   once every member has answered a check
//   stdin "check" -> "ok <steps0> <steps1> <steps2> <steps3>" once every member's worker has
//       verified every page of its region since the request (so damage done before it is
//       caught) and has received every signal the root sent it, each answering within 3 s;
//       otherwise "bad <member> <what>" (a stopped member does not answer: "bad <member> no answer")
//   stdin "quit" or EOF -> every member exits; "bye", exit 0
// Members exit when the root's end of their command pipe closes (the root died). Bad
// arguments exit 2.
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define WORDS (PAGE / sizeof(uint64_t))
#define MEMBERS 4
#define ANSWER_MS 3000

static int member;
static size_t pages;
static uint64_t *region;
static uint64_t *versions;
static unsigned pace = 200;
static _Atomic uint64_t steps;
static _Atomic int damaged;         // the first damaged page + 1, or 0
static int commands[MEMBERS][2];    // root -> member k (k >= 1)
static int answers[2];              // members -> root
// The root's worker queues real-time signals to the other members as it goes (each counted:
// one lost, or delivered twice, in a member frozen or let go is caught); a check pauses them.
static pid_t ids[MEMBERS];
static pthread_mutex_t sending = PTHREAD_MUTEX_INITIALIZER;
static int paused;
static uint64_t sent[MEMBERS];
static _Atomic uint64_t received;

static void count(int signal) {
    (void)signal;
    atomic_fetch_add(&received, 1);
}

static void signalNext(uint64_t step) {
    pthread_mutex_lock(&sending);
    int k = 1 + (int)(step / 64 % (MEMBERS - 1));
    if (!paused && sigqueue(ids[k], SIGRTMIN, (union sigval){.sival_int = (int)step}) == 0) sent[k]++;
    pthread_mutex_unlock(&sending);
}

static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static uint64_t pattern(size_t page, uint64_t version, size_t word) {
    return mix(((uint64_t)member << 56) ^ ((uint64_t)page << 32) ^ (version << 12) ^ word);
}

static void *worker(void *unused) {
    (void)unused;
    for (uint64_t step = 0;; step++) {
        size_t page = step % pages;
        uint64_t *words = region + page * WORDS;
        uint64_t version = versions[page];
        for (size_t w = 0; version > 0 && w < WORDS; w++) {
            if (words[w] != pattern(page, version, w)) {
                int none = 0;
                atomic_compare_exchange_strong(&damaged, &none, (int)page + 1);
                break;
            }
        }
        version++;
        for (size_t w = 0; w < WORDS; w++) words[w] = pattern(page, version, w);
        versions[page] = version;
        atomic_store(&steps, step + 1);
        if (member == 0 && step % 64 == 63) signalNext(step);
        if (pace > 0 && step % 64 == 63) usleep(pace);
    }
    return NULL;
}

static void say(int fd, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void say(int fd, const char *format, ...) {
    char line[256];
    va_list arguments;
    va_start(arguments, format);
    int n = vsnprintf(line, sizeof line, format, arguments);
    va_end(arguments);
    if (n > (int)sizeof line - 1) n = sizeof line - 1;
    // One write of under PIPE_BUF bytes: lines of several members never interleave.
    while (write(fd, line, (size_t)n) < 0 && errno == EINTR) {}
}

static uint64_t milliseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

// Waits until the worker has verified every page since now: "ok <steps>" or "bad <what>".
static void selfCheck(unsigned sequence) {
    uint64_t from = atomic_load(&steps), started = milliseconds();
    while (atomic_load(&steps) < from + pages + 1 && milliseconds() - started < ANSWER_MS) usleep(1000);
    int page = atomic_load(&damaged);
    if (page != 0) {
        say(answers[1], "%d %u bad page %d damaged\n", member, sequence, page - 1);
    } else if (atomic_load(&steps) < from + pages + 1) {
        say(answers[1], "%d %u bad worker stalled\n", member, sequence);
    } else {
        say(answers[1], "%d %u ok %llu %llu\n", member, sequence, (unsigned long long)atomic_load(&steps),
            (unsigned long long)atomic_load(&received));
    }
}

static void start(void) {
    region = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    versions = mmap(NULL, pages * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED || versions == MAP_FAILED) _exit(4);
    memset(versions, 0, pages * sizeof(uint64_t));
    pthread_t thread;
    if (pthread_create(&thread, NULL, worker, NULL) != 0) _exit(4);
}

// A member other than the root: answers each check until its command pipe closes or says quit.
static void serve(pid_t child) {
    for (int k = 1; k < MEMBERS; k++) {
        if (k != member) close(commands[k][0]);
        close(commands[k][1]);
    }
    close(answers[0]);
    start();
    for (unsigned sequence = 1;; sequence++) {
        char command;
        ssize_t n = read(commands[member][0], &command, 1);
        if (n < 0 && errno == EINTR) { sequence--; continue; }
        if (n <= 0 || command == 'q') break;
        selfCheck(sequence);
    }
    if (child > 0) waitpid(child, NULL, __WALL);
    _exit(0);
}

// The root: asks every member to check, and says "ok ..." or what is wrong (unless quiet);
// true if every member is whole.
static int checkTree(unsigned sequence, int quiet) {
    pthread_mutex_lock(&sending);
    paused = 1;  // every signal sent is counted before the members count theirs
    pthread_mutex_unlock(&sending);
    for (int k = 1; k < MEMBERS; k++) {
        while (write(commands[k][1], "c", 1) < 0 && errno == EINTR) {}
    }
    uint64_t counts[MEMBERS] = {0};
    int answered[MEMBERS] = {0};
    char bad[128] = "";
    // The root checks itself while the others do.
    uint64_t from = atomic_load(&steps), started = milliseconds();
    while (atomic_load(&steps) < from + pages + 1 && milliseconds() - started < ANSWER_MS) usleep(1000);
    if (atomic_load(&damaged) != 0) snprintf(bad, sizeof bad, "0 page %d damaged", atomic_load(&damaged) - 1);
    else if (atomic_load(&steps) < from + pages + 1) snprintf(bad, sizeof bad, "0 worker stalled");
    counts[0] = atomic_load(&steps);
    answered[0] = 1;
    char buffer[1024];
    size_t held = 0;
    int remaining = MEMBERS - 1;
    while (remaining > 0) {
        int waited = (int)(milliseconds() - started);
        struct pollfd poller = {.fd = answers[0], .events = POLLIN};
        if (waited >= 2 * ANSWER_MS || poll(&poller, 1, 2 * ANSWER_MS - waited) <= 0) break;
        ssize_t n = read(answers[0], buffer + held, sizeof buffer - 1 - held);
        if (n <= 0) break;
        held += (size_t)n;
        buffer[held] = 0;
        char *line = buffer, *end;
        while ((end = strchr(line, '\n')) != NULL) {
            *end = 0;
            int who = -1;
            unsigned got = 0;
            char verdict[8] = "";
            int used = 0;
            if (sscanf(line, "%d %u %7s %n", &who, &got, verdict, &used) >= 3 && who > 0 && who < MEMBERS
                && got == sequence && !answered[who]) {
                answered[who] = 1;
                remaining--;
                char *rest;
                if (strcmp(verdict, "ok") == 0) {
                    counts[who] = strtoull(line + used, &rest, 10);
                    // Each member counted its signals after a whole round of its worker: every
                    // signal queued before the pause has been handled by then.
                    unsigned long long got = strtoull(rest, NULL, 10);
                    if (got != sent[who] && bad[0] == 0) {
                        snprintf(bad, sizeof bad, "%d received %llu of %llu signals", who, got,
                            (unsigned long long)sent[who]);
                    }
                } else if (bad[0] == 0) snprintf(bad, sizeof bad, "%d %s", who, line + used);
            }  // an answer to an earlier check, from a member that was late: dropped
            line = end + 1;
        }
        held = strlen(line);
        memmove(buffer, line, held);
    }
    for (int k = 1; k < MEMBERS && bad[0] == 0; k++) {
        if (!answered[k]) snprintf(bad, sizeof bad, "%d no answer", k);
    }
    pthread_mutex_lock(&sending);
    paused = 0;
    pthread_mutex_unlock(&sending);
    if (quiet) return bad[0] == 0;
    if (bad[0] != 0) say(1, "bad %s\n", bad);
    else {
        say(1, "ok %llu %llu %llu %llu\n", (unsigned long long)counts[0], (unsigned long long)counts[1],
            (unsigned long long)counts[2], (unsigned long long)counts[3]);
    }
    return bad[0] == 0;
}

int main(int argc, char **argv) {
    unsigned megabytes = 4;
    static const struct option options[] = {
        {"megabytes", required_argument, NULL, 'm'}, {"pace", required_argument, NULL, 'p'}, {0}};
    for (int c; (c = getopt_long(argc, argv, "", options, NULL)) != -1;) {
        if (c == 'm') megabytes = (unsigned)strtoul(optarg, NULL, 10);
        else if (c == 'p') pace = (unsigned)strtoul(optarg, NULL, 10);
        else {
            fprintf(stderr, "usage: chpox-tree-workload [--megabytes M] [--pace MICROSECONDS]\n");
            return 2;
        }
    }
    if (megabytes == 0 || optind != argc) {
        fprintf(stderr, "usage: chpox-tree-workload [--megabytes M] [--pace MICROSECONDS]\n");
        return 2;
    }
    pages = (size_t)megabytes * (1024 * 1024 / PAGE);
    for (int k = 1; k < MEMBERS; k++) {
        if (pipe(commands[k]) != 0) return 4;
    }
    if (pipe(answers) != 0) return 4;
    ids[0] = getpid();
    // Inherited by every member; SA_RESTART: a signal interrupts no read or write of the pipes.
    struct sigaction action = {.sa_handler = count, .sa_flags = SA_RESTART};
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGRTMIN, &action, NULL) != 0) return 4;
    sigset_t counted;  // a mask inherited from the starter (a test runner's thread) must not hold it
    sigemptyset(&counted);
    sigaddset(&counted, SIGRTMIN);
    if (sigprocmask(SIG_UNBLOCK, &counted, NULL) != 0) return 4;
    int ready[2];  // the first child tells the root its child's pid
    if (pipe(ready) != 0) return 4;
    ids[1] = fork();
    if (ids[1] == 0) {
        close(ready[0]);
        member = 3;
        pid_t grandchild = fork();
        if (grandchild == 0) {
            close(ready[1]);
            serve(0);
        }
        member = 1;
        while (write(ready[1], &grandchild, sizeof grandchild) < 0 && errno == EINTR) {}
        close(ready[1]);
        serve(grandchild);
    }
    close(ready[1]);
    ids[2] = fork();
    if (ids[2] == 0) {
        close(ready[0]);
        member = 2;
        serve(0);
    }
    if (read(ready[0], &ids[3], sizeof ids[3]) != sizeof ids[3]) return 4;
    close(ready[0]);
    for (int k = 1; k < MEMBERS; k++) close(commands[k][0]);
    close(answers[1]);
    start();
    unsigned sequence = 1;
    // Every member has set up once it answers: nothing is mapped or opened from here on.
    if (!checkTree(sequence, 1)) return 3;
    say(1, "ready %d %d %d %d\n", ids[0], ids[1], ids[2], ids[3]);
    char line[64];
    size_t held = 0;
    for (;;) {
        ssize_t n = read(0, line + held, sizeof line - held);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        held += (size_t)n;
        char *end;
        int quit = 0;
        while ((end = memchr(line, '\n', held)) != NULL) {
            *end = 0;
            if (strcmp(line, "check") == 0) checkTree(++sequence, 0);
            else if (strcmp(line, "quit") == 0) quit = 1;
            else say(1, "error unknown command\n");
            held -= (size_t)(end + 1 - line);
            memmove(line, end + 1, held);
            if (quit) break;
        }
        if (quit) break;
        if (held == sizeof line) held = 0;  // a line too long: dropped
    }
    for (int k = 1; k < MEMBERS; k++) {
        while (write(commands[k][1], "q", 1) < 0 && errno == EINTR) {}
    }
    waitpid(ids[1], NULL, __WALL);
    waitpid(ids[2], NULL, __WALL);
    say(1, "bye\n");
    return 0;
}
