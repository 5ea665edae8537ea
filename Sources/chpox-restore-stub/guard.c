// The guardian of a lazy restart (`ld-chpox --lazy`, Incremental/Restore/Lazy).
//
// A lazily restarted process runs before its memory is in: its missing pages are filled on
// first touch by ld-chpox's page server through a userfaultfd. When the last reference to a
// userfaultfd is closed, the kernel unregisters its ranges and a missing page then faults in as
// a zero page: a process whose server died would run on with zeros where its data was. So a
// second process holds a reference to every userfaultfd of the restart: while it lives, a fault
// the dead server cannot answer waits; it notices the server's end (its control socket closes
// without the 'd' message) and kills the restarted processes and all their descendants
// (children forked during the restart get userfaultfds of their own, which it holds too), so
// none runs with a page it never had and none waits forever.
//
// It is `chpox-restore-stub --guard`, started by ld-chpox (posix_spawn: no copy of ld-chpox's
// memory, which may be large) with the control socket as its stdin and a session of its own;
// it ignores the terminal's signals too, so that a Ctrl-C that ends ld-chpox does not end it.
// It keeps only system calls and fixed buffers (no malloc, no stdio): it runs while processes
// it may have to kill are stuck on their memory.
//
// Messages on the control socket (SOCK_SEQPACKET), a kind byte each, with the descriptor they
// hand over as SCM_RIGHTS:
//   'u' + a userfaultfd: held until the guardian exits;
//   'p' + a pidfd, the process's pid in the 4 bytes after the kind: killed if the server dies;
//   'd': the server is done, every page is in: exit, nothing killed.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "guard.h"

#define GUARD_PROCESSES 256
#define GUARD_KILLED 8192

// "/proc/" PID then `tail`, into `path` (room for 96 bytes); no stdio in this process.
static void proc_path(char *path, long pid, long tid, const char *tail) {
    char digits[24];
    int length = 0;
    memcpy(path, "/proc/", 6);
    char *end = path + 6;
    for (int pass = 0; pass < (tid >= 0 ? 2 : 1); pass++) {
        long value = pass == 0 ? pid : tid;
        length = 0;
        do { digits[length++] = (char)('0' + value % 10); value /= 10; } while (value > 0);
        while (length > 0) *end++ = digits[--length];
        if (pass == 0 && tid >= 0) { memcpy(end, "/task/", 6); end += 6; }
    }
    size_t tailLength = strlen(tail);
    memcpy(end, tail, tailLength + 1);
}

static int known(const pid_t *pids, int count, pid_t pid) {
    for (int k = 0; k < count; k++) if (pids[k] == pid) return 1;
    return 0;
}

// Appends the children of every thread of `pid` not yet in `pids` (each stopped with SIGSTOP,
// so that the tree stops growing while it is walked).
static int add_children(pid_t pid, pid_t *pids, int count) {
    char path[96];
    proc_path(path, pid, -1, "/task");
    int tasks = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tasks < 0) return count;
    char entries[4096];
    for (;;) {
        long got = syscall(SYS_getdents64, tasks, entries, sizeof entries);
        if (got <= 0) break;
        for (long offset = 0; offset < got;) {
            unsigned short length;
            memcpy(&length, entries + offset + 16, sizeof length);
            const char *name = entries + offset + 19;
            offset += length;
            long tid = 0;
            if (name[0] < '0' || name[0] > '9') continue;
            for (const char *c = name; *c >= '0' && *c <= '9'; c++) tid = tid * 10 + (*c - '0');
            char childrenPath[96];
            proc_path(childrenPath, pid, tid, "/children");
            int file = (int)syscall(SYS_openat, AT_FDCWD, childrenPath, O_RDONLY | O_CLOEXEC);
            if (file < 0) continue;
            char text[4096];
            long size = syscall(SYS_read, file, text, sizeof text - 1);
            syscall(SYS_close, file);
            long child = -1;
            for (long k = 0; k <= size; k++) {
                char c = k < size ? text[k] : ' ';
                if (c >= '0' && c <= '9') {
                    child = (child < 0 ? 0 : child * 10) + (c - '0');
                } else if (child > 0) {
                    if (!known(pids, count, (pid_t)child) && count < GUARD_KILLED) {
                        syscall(SYS_kill, child, SIGSTOP);
                        pids[count++] = (pid_t)child;
                    }
                    child = -1;
                }
            }
        }
    }
    syscall(SYS_close, tasks);
    return count;
}

// Stops the processes and every descendant, then kills them all.
static void kill_trees(const int *pidfds, const pid_t *roots, int count) {
    static pid_t pids[GUARD_KILLED];
    int total = 0;
    for (int k = 0; k < count; k++) {
        syscall(SYS_pidfd_send_signal, pidfds[k], SIGSTOP, NULL, 0);
        if (!known(pids, total, roots[k])) pids[total++] = roots[k];
    }
    for (int k = 0; k < total; k++) total = add_children(pids[k], pids, total);
    for (int k = 0; k < count; k++) syscall(SYS_pidfd_send_signal, pidfds[k], SIGKILL, NULL, 0);
    for (int k = 0; k < total; k++) if (!known(roots, count, pids[k])) syscall(SYS_kill, pids[k], SIGKILL);
}

static void guard(int control) {
    static int pidfds[GUARD_PROCESSES];
    static pid_t pids[GUARD_PROCESSES];
    int count = 0;
    for (;;) {
        char bytes[8];
        struct iovec vector = {bytes, sizeof bytes};
        union {
            struct cmsghdr header;
            char space[CMSG_SPACE(sizeof(int))];
        } control_data;
        struct msghdr message = {0};
        message.msg_iov = &vector;
        message.msg_iovlen = 1;
        message.msg_control = &control_data;
        message.msg_controllen = sizeof control_data;
        long got = syscall(SYS_recvmsg, control, &message, MSG_CMSG_CLOEXEC);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;  // the server is gone
        int fd = -1;
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        if (header && header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS) {
            memcpy(&fd, CMSG_DATA(header), sizeof fd);
        }
        if (bytes[0] == 'd') syscall(SYS_exit_group, 0);
        if (bytes[0] == 'p' && got >= 5 && fd >= 0 && count < GUARD_PROCESSES) {
            pidfds[count] = fd;
            memcpy(&pids[count], bytes + 1, sizeof(pid_t));
            count++;
        }
        // 'u': the userfaultfd stays open in this process: that is all it is sent for.
    }
    kill_trees(pidfds, pids, count);
    syscall(SYS_exit_group, 0);
}

int run_page_guard(void) {
    static const int ignored[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE, SIGUSR1, SIGUSR2};
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    for (unsigned k = 0; k < sizeof ignored / sizeof ignored[0]; k++) sigaction(ignored[k], &ignore, NULL);
    syscall(SYS_close_range, 1, ~0U, 0);
    guard(0);
    return 0;
}
