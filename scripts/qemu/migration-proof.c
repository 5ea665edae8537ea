// migration-proof: one half of the two-kernel migration proof (scripts/qemu-tests.sh), run as
// a guest's program, with cpx, ld-chpox, chpox-restore-stub and chpox-dirty-workload in /bin.
//
//   migration-proof checkpoint OUT   runs the dirty workload (small), proves it, checkpoints it
//                                    with cpx --kill into /tmp/migrate/store, and writes
//                                    /tmp/migrate (store and the workload's last clock) as a tar
//                                    to OUT (the guest's second serial port, which the host
//                                    keeps in a file)
//   migration-proof restart TAR      unpacks TAR into /tmp and restarts the workload with
//                                    ld-chpox: its memory must prove itself and its clocks read
//                                    through its vDSO must be this kernel's (between this
//                                    program's own reads, after the checkpoint's)
//
// Prints "PASS <check>" / "FAIL <check>: <why>" lines and "GUEST N passed, M failed" last;
// exits 0 when nothing failed.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;

static void check(int ok, const char *what, const char *why, ...) {
    if (ok) {
        printf("PASS %s\n", what);
        passed++;
        return;
    }
    va_list args;
    va_start(args, why);
    printf("FAIL %s: ", what);
    vprintf(why, args);
    printf("\n");
    va_end(args);
    failed++;
}

static int finish(void) {
    printf("GUEST %d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed == 0 ? 0 : 1;
}

/// A child process with its stdin and stdout piped to us.
struct child { pid_t pid; FILE *in, *out; };

static struct child spawn(char *const argv[]) {
    int to[2], from[2];
    struct child c = {-1, NULL, NULL};
    if (pipe(to) != 0 || pipe(from) != 0) return c;
    c.pid = fork();
    if (c.pid == 0) {
        dup2(to[0], 0);
        dup2(from[1], 1);
        close(to[0]); close(to[1]); close(from[0]); close(from[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    c.in = fdopen(to[1], "w");
    c.out = fdopen(from[0], "r");
    setvbuf(c.in, NULL, _IOLBF, 0);
    return c;
}

/// Sends `command`, returns its answer line (static buffer, newline dropped; "" at end of file).
static const char *ask(struct child *c, const char *command) {
    static char line[65536];
    fprintf(c->in, "%s\n", command);
    fflush(c->in);
    if (!fgets(line, sizeof line, c->out)) return "";
    line[strcspn(line, "\n")] = 0;
    return line;
}

static long long now(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/// Reads the workload's clocks ("t") between two reads of our own: the workload's realtime and
/// monotonic must fall between ours, gettimeofday and time agree, getcpu names a CPU here.
/// Returns its realtime (0 when the answer was not a clock line).
static long long check_clocks(struct child *c, const char *when, long long after) {
    long long real0 = now(CLOCK_REALTIME), mono0 = now(CLOCK_MONOTONIC);
    const char *line = ask(c, "t");
    long long real1 = now(CLOCK_REALTIME), mono1 = now(CLOCK_MONOTONIC);
    long long real, mono, micro, seconds, resolution;
    unsigned cpu;
    char what[128];
    snprintf(what, sizeof what, "clocks through the vDSO %s", when);
    if (sscanf(line, "clock %lld %lld %lld %lld %u %lld", &real, &mono, &micro, &seconds, &cpu, &resolution) != 6) {
        check(0, what, "the workload answered '%s'", line);
        return 0;
    }
    int ok = real0 <= real && real <= real1 && mono0 <= mono && mono <= mono1 && micro >= real0 / 1000 &&
             micro <= real1 / 1000 && seconds >= real0 / 1000000000LL - 1 && seconds <= real1 / 1000000000LL &&
             cpu < (unsigned)sysconf(_SC_NPROCESSORS_CONF) && resolution > 0 && real > after;
    check(ok, what, "realtime %lld not in [%lld, %lld] or not after %lld, monotonic %lld not in [%lld, %lld], "
          "gettimeofday %lld us, time %lld, cpu %u, resolution %lld", real, real0, real1, after, mono, mono0, mono1,
          micro, seconds, cpu, resolution);
    return real;
}

static int run(const char *command) {
    int status = system(command);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static const char *workload[] = {"/bin/chpox-dirty-workload", "41", "256", NULL};

static int checkpoint(const char *out) {
    struct child w = spawn((char *const *)workload);
    char command[512];
    for (int n = 0; n < 4; n++) {
        snprintf(command, sizeof command, "r %d", n);
        ask(&w, command);
    }
    check(strcmp(ask(&w, "c"), "selfcheck ok") == 0, "the workload's memory before the checkpoint", "no");
    long long real = check_clocks(&w, "before the checkpoint", 0);
    mkdir("/tmp/migrate", 0700);
    snprintf(command, sizeof command, "/bin/cpx --store /tmp/migrate/store --name migrate --kill %d", w.pid);
    int status = run(command);
    check(status == 0, "cpx --kill", "exit status %d", status);
    kill(w.pid, SIGKILL);  // gone already, unless cpx failed
    waitpid(w.pid, NULL, 0);
    if (status != 0) return finish();
    FILE *clock = fopen("/tmp/migrate/clock", "w");
    if (clock) { fprintf(clock, "%lld\n", real); fclose(clock); }
    snprintf(command, sizeof command,
             "stty -F %s raw -echo 2>/dev/null; tar -cf /tmp/migrate.tar -C /tmp migrate && "
             "ls -l /tmp/migrate.tar && cat /tmp/migrate.tar > %s", out, out);
    status = run(command);
    check(status == 0, "the store written out", "exit status %d", status);
    return finish();
}

static int restart(const char *tar) {
    char command[512];
    snprintf(command, sizeof command, "tar -xf %s -C /tmp", tar);
    int status = run(command);
    check(status == 0, "the store read in", "tar exit status %d", status);
    long long before = 0;
    FILE *clock = fopen("/tmp/migrate/clock", "r");
    if (!clock || fscanf(clock, "%lld", &before) != 1) check(0, "the clock at the checkpoint", "not in the tar");
    if (clock) fclose(clock);
    run("/bin/ld-chpox --store /tmp/migrate/store --name migrate --plan | grep -i vdso");
    char *argv[] = {"/bin/ld-chpox", "--store", "/tmp/migrate/store", "--name", "migrate", "--wait", "--json", NULL};
    struct child w = spawn(argv);
    char document[65536];
    if (!fgets(document, sizeof document, w.out)) document[0] = 0;
    check(strstr(document, "\"pid\"") != NULL, "ld-chpox restarted it", "it said '%s'", document);
    check(strstr(document, "vDSO proxied") != NULL, "the vDSO is proxied (the kernels' vDSOs differ)",
          "no notice says so: %s", document);
    check(strcmp(ask(&w, "c"), "selfcheck ok") == 0, "the workload's memory after the restart", "no");
    long long real = check_clocks(&w, "after the restart", before);
    for (int n = 4; n < 8; n++) {
        snprintf(command, sizeof command, "r %d", n);
        ask(&w, command);
    }
    check(strcmp(ask(&w, "f"), "fork ok") == 0, "a fork after the restart", "no");
    check(strcmp(ask(&w, "c"), "selfcheck ok") == 0, "the workload's memory after four more rounds", "no");
    usleep(10000);
    check_clocks(&w, "after four more rounds", real);
    fprintf(w.in, "q\n");
    fclose(w.in);
    int wstatus = 0;
    waitpid(w.pid, &wstatus, 0);
    check(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0, "the workload exits 0", "status 0x%x", wstatus);
    return finish();
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "checkpoint") == 0) return checkpoint(argv[2]);
    if (argc == 3 && strcmp(argv[1], "restart") == 0) return restart(argv[2]);
    fprintf(stderr, "usage: migration-proof checkpoint OUT | restart TAR\n");
    return 2;
}
