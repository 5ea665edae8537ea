// Exported constants for macros Swift cannot evaluate, and wrappers of functions glibc
// declares only under _GNU_SOURCE.
#define _GNU_SOURCE
#include <sched.h>
#include <spawn.h>
#include <signal.h>
#include <pthread.h>
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
const unsigned long chpox_UFFDIO_COPY = UFFDIO_COPY;
const unsigned long chpox_UFFDIO_ZEROPAGE = UFFDIO_ZEROPAGE;
const unsigned long chpox_UFFDIO_WAKE = UFFDIO_WAKE;

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

// open_by_handle_at(2) takes its mount as a descriptor open for real (not O_PATH) or as the
// working directory (AT_FDCWD). Opening a directory would show an inotify or fanotify watch on
// it an open and a close, in the very process being checkpointed; moving to it does not. So a
// thread of its own, with a working directory of its own (unshare CLONE_FS), moves there by
// its O_PATH descriptor: the process's working directory is never changed.
struct chpox_file_handle {
    unsigned int handle_bytes;
    int handle_type;
    unsigned char f_handle[CHPOX_MAX_HANDLE_SZ];
};
_Static_assert(__builtin_offsetof(struct chpox_file_handle, f_handle) == 8, "struct file_handle");

struct handle_open {
    int mount;
    struct chpox_file_handle handle;
    int result;
};

static void *open_by_handle_in_mount(void *argument) {
    struct handle_open *call = argument;
    if (unshare(CLONE_FS) != 0 || fchdir(call->mount) != 0) {
        call->result = -errno;
        return NULL;
    }
    long fd = syscall(SYS_open_by_handle_at, AT_FDCWD, &call->handle, O_PATH | O_CLOEXEC);
    call->result = fd < 0 ? -errno : (int)fd;
    return NULL;
}

int chpox_open_by_handle(int mount_fd, int type, const unsigned char *bytes, unsigned int count) {
    if (count > CHPOX_MAX_HANDLE_SZ) return -EINVAL;
    struct handle_open call = {.mount = mount_fd, .handle = {.handle_bytes = count, .handle_type = type}};
    for (unsigned int i = 0; i < count; i++) call.handle.f_handle[i] = bytes[i];
    pthread_t thread;
    int error = pthread_create(&thread, NULL, open_by_handle_in_mount, &call);
    if (error != 0) return -error;
    pthread_join(thread, NULL);
    return call.result;
}
