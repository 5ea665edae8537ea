// Exported constants for macros Swift cannot evaluate, and wrappers of functions glibc
// declares only under _GNU_SOURCE.
#define _GNU_SOURCE
#include <sched.h>
#include <spawn.h>
#include <signal.h>
#include "CLinux.h"

// posix_spawn_file_actions_addclosefrom_np (glibc 2.34+): a child gets only the descriptors
// it is given, never ones its parent leaked without O_CLOEXEC.
int chpox_posix_spawn_closefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

// _IOWR('f', 16, struct pm_scan_arg), include/uapi/linux/fs.h (6.7+).
const unsigned long chpox_PAGEMAP_SCAN = _IOWR('f', 16, struct chpox_pm_scan_arg);
_Static_assert(_IOWR('f', 16, struct chpox_pm_scan_arg) == 0xC0606610UL, "PAGEMAP_SCAN request number");
const unsigned long chpox_UFFDIO_API = UFFDIO_API;
const unsigned long chpox_UFFDIO_REGISTER = UFFDIO_REGISTER;
const unsigned long chpox_UFFDIO_UNREGISTER = UFFDIO_UNREGISTER;
const unsigned long chpox_UFFDIO_WRITEPROTECT = UFFDIO_WRITEPROTECT;

// clone3 with `args`, the child straight to execve. Between the two only raw system calls run
// (the parent may have threads: nothing else is safe there).
static long spawn(struct chpox_clone_args *args, const char *path, char *const argv[], char *const envp[]) {
    long child = syscall(SYS_clone3, args, sizeof *args);
    if (child < 0) return -errno;
    if (child == 0) {
        syscall(SYS_close_range, 3, ~0U, 0);
        syscall(SYS_execve, path, argv, envp);
        syscall(SYS_exit, 127);
    }
    return child;
}

// A child with a chosen pid: clone3 with set_tid.
long chpox_spawn_with_pid(const char *path, char *const argv[], char *const envp[], pid_t pid) {
    struct chpox_clone_args args = {0};
    args.exit_signal = SIGCHLD;
    args.set_tid = (uint64_t)(uintptr_t)&pid;
    args.set_tid_size = 1;
    return spawn(&args, path, argv, envp);
}

// A child that is the first process (pid 1) of a new PID namespace (clone3 with CLONE_NEWPID).
long chpox_spawn_in_pid_namespace(const char *path, char *const argv[], char *const envp[]) {
    struct chpox_clone_args args = {0};
    args.flags = CLONE_NEWPID;
    args.exit_signal = SIGCHLD;
    return spawn(&args, path, argv, envp);
}
