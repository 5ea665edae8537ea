// chpox-restore-stub: the process ld-chpox turns into a restarted one.
//
// It only waits. ld-chpox stops it with ptrace, unmaps everything it has, maps the saved
// process's memory in its place and gives it the saved registers: nothing of this program
// survives. It is started with GLIBC_TUNABLES=glibc.pthread.rseq=0, so that it registers no
// rseq area of its own (the saved process's is registered instead).
//
// Until the restart hands the process over, it must not outlive ld-chpox (it would hold the
// saved pid forever): it asks for SIGKILL when its parent dies (PR_SET_PDEATHSIG; the restart
// clears it as its last call), and exits at once if that parent, named by ld-chpox in
// CHPOX_RESTORE_PARENT, is already gone.
//
// `chpox-restore-stub --guard` is the guardian of a lazy restart (guard.c).
//
// `chpox-restore-stub --init PID` is the init of a new PID namespace (ld-chpox starts it with
// CLONE_NEWPID where a tree's saved pids are taken): it forks the stub with pid PID inside the
// namespace, then reaps every process of it, and exits once none is left with the stub's exit
// code (128 + the signal that ended it, as a shell says: a namespace's init cannot die of a
// signal it sends itself). It dies with ld-chpox until ld-chpox sends it SIGUSR1 (the restart
// is done), and with it every process of the namespace.
//
// The namespace gets a mount namespace of its own too (host mounts propagate in, none out), so
// that it can have its own /proc: while ld-chpox rebuilds the processes, /proc is the host's
// (ld-chpox names them by their pids there); on SIGUSR1, before any of them runs again, the init
// mounts a /proc of the new PID namespace over it, where each process finds itself by its pid.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guard.h"

static volatile sig_atomic_t handed = 0;

static void handed_over(int signal) {
    (void)signal;
    prctl(PR_SET_PDEATHSIG, 0);
    handed = 1;
}

// The parent's pid as the host's /proc sees it (getppid() is 0 in a new namespace: the
// parent is outside it; /proc is the host's).
static long outer_parent(void) {
    FILE *status = fopen("/proc/self/status", "r");
    if (status == NULL) return -1;
    char line[256];
    long parent = -1;
    while (fgets(line, sizeof line, status) != NULL) {
        if (strncmp(line, "PPid:", 5) == 0) {
            parent = atol(line + 5);
            break;
        }
    }
    fclose(status);
    return parent;
}

static int init(char *path, pid_t root) {
    // Before anything: a namespace's init gets from outside only the signals it handles, and
    // none blocked (ld-chpox's mask is inherited; a caller may block SIGUSR1).
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) return 1;
    struct sigaction action = {0};
    action.sa_handler = handed_over;
    if (sigaction(SIGUSR1, &action, NULL) != 0) return 1;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return 1;
    const char *parent = getenv("CHPOX_RESTORE_PARENT");
    if (parent != NULL && outer_parent() != atol(parent)) return 1;
    if (syscall(SYS_unshare, CLONE_NEWNS) != 0) return 1;
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0) return 1;
    struct clone_args arguments = {0};
    arguments.exit_signal = SIGCHLD;
    arguments.set_tid = (uint64_t)(uintptr_t)&root;
    arguments.set_tid_size = 1;
    long child = syscall(SYS_clone3, &arguments, sizeof arguments);
    if (child < 0) return 1;
    if (child == 0) {
        char *argv[] = {path, NULL};
        char *envp[] = {"GLIBC_TUNABLES=glibc.pthread.rseq=0", "CHPOX_RESTORE_PARENT=1", NULL};
        execve(path, argv, envp);
        _exit(127);
    }
    int ended = 0, mounted = 0;
    for (;;) {
        // ld-chpox repeats SIGUSR1 until it sees this mount: one that came before the wait is
        // not lost.
        if (handed && !mounted) {
            mounted = 1;
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
        }
        int status = 0;
        pid_t pid = waitpid(-1, &status, __WALL);
        if (pid < 0 && errno == EINTR) continue;
        if (pid < 0) break;
        if (pid == root) ended = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    }
    return ended;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--guard") == 0) return run_page_guard();
    if (argc == 3 && strcmp(argv[1], "--init") == 0) return init(argv[0], (pid_t)atol(argv[2]));
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return 1;
    const char *parent = getenv("CHPOX_RESTORE_PARENT");
    if (parent != NULL && getppid() != (pid_t)atol(parent)) return 1;
    for (;;) pause();
}
