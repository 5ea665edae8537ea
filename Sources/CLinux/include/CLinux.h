// CLinux: fixed-argument wrappers for the variadic functions and function-like macros that
// Swift cannot call, and kernel uapi definitions newer than the installed headers (6.1).
// Every symbol is prefixed chpox_; each wrapper says why it exists.
#ifndef CHPOX_CLINUX_H
#define CHPOX_CLINUX_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

// openat(2) is variadic (the mode argument is optional): Swift cannot call it directly.
static inline int chpox_openat(int dirfd, const char *path, int flags, unsigned int mode) {
    return openat(dirfd, path, flags, (mode_t)mode);
}

// fcntl(2) is variadic; this is the integer-argument form (F_GETFL, F_SETFD, ...).
static inline int chpox_fcntl_int(int fd, int command, int argument) {
    return fcntl(fd, command, argument);
}

// S_ISDIR/S_ISREG/S_ISLNK/S_ISFIFO are function-like macros.
static inline int chpox_s_isdir(unsigned int mode) { return S_ISDIR(mode); }
static inline int chpox_s_isreg(unsigned int mode) { return S_ISREG(mode); }
static inline int chpox_s_islnk(unsigned int mode) { return S_ISLNK(mode); }
static inline int chpox_s_isfifo(unsigned int mode) { return S_ISFIFO(mode); }

// mallopt(3) and its M_* constants are in <malloc.h>, which Swift's Glibc module does not
// include (and musl has neither): the one setting cpx makes, as a function that exists anyway.
#if defined(__GLIBC__)
#include <malloc.h>
static inline int chpox_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }
#else
static inline int chpox_set_mmap_threshold(int bytes) { (void)bytes; return 0; }
#endif

// ptrace(2) is variadic in glibc.
static inline long chpox_ptrace(int request, pid_t pid, void *address, void *data) {
    return ptrace((enum __ptrace_request)request, pid, address, data);
}

// ioctl(2) is variadic; every request chpox makes takes a pointer.
static inline int chpox_ioctl(int fd, unsigned long request, void *argument) {
    return ioctl(fd, request, argument);
}

/// MAX_HANDLE_SZ: the largest file handle the kernel makes.
#define CHPOX_MAX_HANDLE_SZ 128
/// Opens (O_PATH, close-on-exec) the file a file handle names, its type and bytes as
/// /proc/PID/fdinfo lists them, on the mount `mount_fd` (an O_PATH descriptor is enough) is on
/// (open_by_handle_at(2), needs CAP_DAC_READ_SEARCH). Returns the descriptor, or -errno.
int chpox_open_by_handle(int mount_fd, int type, const unsigned char *bytes, unsigned int count);

// syscall(2) is variadic; these are the raw calls glibc 2.36 has no wrapper for.
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_userfaultfd
#define SYS_userfaultfd 323
#endif
static inline int chpox_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/// get_robust_list(2) of thread `tid`: its head and length; -1 with errno on failure.
static inline long chpox_get_robust_list(pid_t tid, uint64_t *head, uint64_t *length) {
    void *h = 0; size_t l = 0;
    long result = syscall(SYS_get_robust_list, tid, &h, &l);
    *head = (uint64_t)(uintptr_t)h; *length = (uint64_t)l;
    return result;
}

/// struct sched_attr (linux/sched/types.h), its first version (SCHED_ATTR_SIZE_VER0, 48
/// bytes: no utilization clamps); glibc 2.36 declares neither it nor sched_getattr.
struct chpox_sched_attr {
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
};
_Static_assert(sizeof(struct chpox_sched_attr) == 48, "struct sched_attr (SCHED_ATTR_SIZE_VER0)");
/// sched_getattr(2) of thread `tid` (no glibc wrapper): 0, or -1 with errno.
static inline int chpox_sched_getattr(pid_t tid, struct chpox_sched_attr *attr) {
    return (int)syscall(SYS_sched_getattr, tid, attr, (unsigned int)sizeof *attr, 0u);
}
/// SCHED_RESET_ON_FORK as sched_getattr reports it (SCHED_FLAG_RESET_ON_FORK).
#define CHPOX_SCHED_FLAG_RESET_ON_FORK 0x01
/// The thread's nice value (-20 ... 19) through the raw getpriority(2), which answers 20 - nice
/// and so never a negative value on success: glibc's wrapper answers -1 for nice -1 and for an
/// error alike. 0 with `*nice` set, or -1 with errno.
static inline int chpox_thread_nice(pid_t tid, int *nice) {
    long raw = syscall(SYS_getpriority, 0 /* PRIO_PROCESS */, (id_t)tid);
    if (raw < 0) return -1;
    *nice = 20 - (int)raw;
    return 0;
}
/// capget(2)/capset(2)'s header and data (linux/capability.h, _LINUX_CAPABILITY_VERSION_3:
/// two data structs, the low and high 32 capabilities).
#define CHPOX_LINUX_CAPABILITY_VERSION_3 0x20080522
struct chpox_cap_header { uint32_t version; int32_t pid; };
struct chpox_cap_data { uint32_t effective, permitted, inheritable; };
_Static_assert(sizeof(struct chpox_cap_header) == 8, "struct __user_cap_header_struct");
_Static_assert(sizeof(struct chpox_cap_data) == 12, "struct __user_cap_data_struct");
/// PR_CAPBSET_DROP (linux/prctl.h): drop a capability from the calling thread's bounding set.
#define CHPOX_PR_CAPBSET_DROP 24
/// PR_CAP_AMBIENT with PR_CAP_AMBIENT_RAISE and PR_CAP_AMBIENT_CLEAR_ALL (linux/prctl.h).
#define CHPOX_PR_CAP_AMBIENT 47
#define CHPOX_PR_CAP_AMBIENT_RAISE 2
#define CHPOX_PR_CAP_AMBIENT_CLEAR_ALL 4

/// kcmp(2) with KCMP_EPOLL_TFD (linux/kcmp.h): 0 when descriptor `fd` of `pid` is the file
/// that epoll `epoll` of the same process watches as target `target` (registered as that fd
/// number, the `nth` so registered); 1 or 2 when it is another; -1 with errno when there is no
/// such target.
static inline int chpox_kcmp_epoll_target(pid_t pid, int fd, int epoll, int target, uint32_t nth) {
    struct { uint32_t efd, tfd, toff; } slot = { (uint32_t)epoll, (uint32_t)target, nth };
    return (int)syscall(SYS_kcmp, pid, pid, 7 /* KCMP_EPOLL_TFD */, fd, (unsigned long)&slot);
}
static inline int chpox_pidfd_getfd(int pidfd, int targetfd) { return (int)syscall(SYS_pidfd_getfd, pidfd, targetfd, 0); }
static inline int chpox_userfaultfd(int flags) { return (int)syscall(SYS_userfaultfd, flags); }

// process_vm_readv(2) is declared only under _GNU_SOURCE, which Swift's Glibc module lacks.
static inline long chpox_process_vm_readv(pid_t pid, const struct iovec *local, unsigned long localCount,
                                          const struct iovec *remote, unsigned long remoteCount) {
    return syscall(SYS_process_vm_readv, pid, local, localCount, remote, remoteCount, 0UL);
}

// process_vm_writev(2), like readv, is declared only under _GNU_SOURCE.
static inline long chpox_process_vm_writev(pid_t pid, const struct iovec *local, unsigned long localCount,
                                           const struct iovec *remote, unsigned long remoteCount) {
    return syscall(SYS_process_vm_writev, pid, local, localCount, remote, remoteCount, 0UL);
}

// sync_file_range(2) is declared only under _GNU_SOURCE.
static inline int chpox_sync_file_range(int fd, int64_t offset, int64_t count, unsigned int flags) {
    return (int)syscall(SYS_sync_file_range, fd, offset, count, flags);
}
/// sync_file_range(2) flags (linux/fs.h; fcntl.h names them only under _GNU_SOURCE).
#define CHPOX_SYNC_FILE_RANGE_WAIT_BEFORE 1u
#define CHPOX_SYNC_FILE_RANGE_WRITE 2u
#define CHPOX_SYNC_FILE_RANGE_WAIT_AFTER 4u

// prlimit(2) on another process is declared only under _GNU_SOURCE.
static inline int chpox_prlimit(pid_t pid, int resource, unsigned long long limits[2]) {
    return (int)syscall(SYS_prlimit64, pid, resource, (void *)0, limits);
}

// prlimit(2) setting another process's limits.
static inline int chpox_prlimit_set(pid_t pid, int resource, const unsigned long long limits[2]) {
    return (int)syscall(SYS_prlimit64, pid, resource, limits, (void *)0);
}

// System call numbers run inside another process (Tracee's RemoteCalls: the injector's and the
// restorer's), as one enum Swift can read (SYS_* are macros of macros).
enum chpox_system_call {
    CHPOX_SYS_brk = SYS_brk,
    CHPOX_SYS_userfaultfd = SYS_userfaultfd,
    CHPOX_SYS_mmap = SYS_mmap,
    CHPOX_SYS_munmap = SYS_munmap,
    CHPOX_SYS_mremap = SYS_mremap,
    CHPOX_SYS_io_setup = SYS_io_setup,
    CHPOX_SYS_io_submit = SYS_io_submit,
    CHPOX_SYS_madvise = SYS_madvise,
    CHPOX_SYS_mprotect = SYS_mprotect,
    CHPOX_SYS_close_range = SYS_close_range,
    CHPOX_SYS_openat = SYS_openat,
    CHPOX_SYS_close = SYS_close,
    CHPOX_SYS_dup3 = SYS_dup3,
    CHPOX_SYS_fcntl = SYS_fcntl,
    CHPOX_SYS_lseek = SYS_lseek,
    CHPOX_SYS_prctl = SYS_prctl,
    CHPOX_SYS_rt_sigaction = SYS_rt_sigaction,
    CHPOX_SYS_rseq = SYS_rseq,
    CHPOX_SYS_set_tid_address = SYS_set_tid_address,
    CHPOX_SYS_umask = SYS_umask,
    CHPOX_SYS_chdir = SYS_chdir,
    CHPOX_SYS_fchdir = SYS_fchdir,
    CHPOX_SYS_mkdirat = SYS_mkdirat,
    CHPOX_SYS_mknodat = SYS_mknodat,
    CHPOX_SYS_symlinkat = SYS_symlinkat,
    CHPOX_SYS_clone = SYS_clone,
    CHPOX_SYS_setresuid = SYS_setresuid,
    CHPOX_SYS_setresgid = SYS_setresgid,
    CHPOX_SYS_setgroups = SYS_setgroups,
    CHPOX_SYS_setfsuid = SYS_setfsuid,
    CHPOX_SYS_setfsgid = SYS_setfsgid,
    CHPOX_SYS_ftruncate = SYS_ftruncate,
    CHPOX_SYS_clone3 = SYS_clone3,
    CHPOX_SYS_getitimer = SYS_getitimer,
    CHPOX_SYS_rt_sigqueueinfo = SYS_rt_sigqueueinfo,
    CHPOX_SYS_pipe2 = SYS_pipe2,
    CHPOX_SYS_sigaltstack = SYS_sigaltstack,
    CHPOX_SYS_rt_tgsigqueueinfo = SYS_rt_tgsigqueueinfo,
    CHPOX_SYS_setitimer = SYS_setitimer,
    CHPOX_SYS_write = SYS_write,
    CHPOX_SYS_eventfd2 = SYS_eventfd2,
    CHPOX_SYS_timerfd_create = SYS_timerfd_create,
    CHPOX_SYS_timerfd_settime = SYS_timerfd_settime,
    CHPOX_SYS_signalfd4 = SYS_signalfd4,
    CHPOX_SYS_epoll_create1 = SYS_epoll_create1,
    CHPOX_SYS_epoll_ctl = SYS_epoll_ctl,
    CHPOX_SYS_ioctl = SYS_ioctl,
    CHPOX_SYS_membarrier = SYS_membarrier,
    CHPOX_SYS_flock = SYS_flock,
    CHPOX_SYS_set_robust_list = SYS_set_robust_list,
    CHPOX_SYS_setsid = SYS_setsid,
    CHPOX_SYS_setpgid = SYS_setpgid,
    CHPOX_SYS_pidfd_open = 434,
    CHPOX_SYS_pidfd_getfd = 438,
    CHPOX_SYS_exit_group = SYS_exit_group,
    CHPOX_SYS_kill = SYS_kill,
    CHPOX_SYS_wait4 = SYS_wait4,
    CHPOX_SYS_socketpair = SYS_socketpair,
    CHPOX_SYS_sendto = SYS_sendto,
    CHPOX_SYS_sendmsg = SYS_sendmsg,
    CHPOX_SYS_socket = SYS_socket,
    CHPOX_SYS_bind = SYS_bind,
    CHPOX_SYS_listen = SYS_listen,
    CHPOX_SYS_connect = SYS_connect,
    CHPOX_SYS_accept4 = SYS_accept4,
    CHPOX_SYS_unlinkat = SYS_unlinkat,
    CHPOX_SYS_fchmodat = SYS_fchmodat,
    CHPOX_SYS_fchownat = SYS_fchownat,
    CHPOX_SYS_shutdown = SYS_shutdown,
    CHPOX_SYS_setsockopt = SYS_setsockopt,
    CHPOX_SYS_sched_setattr = SYS_sched_setattr,
    CHPOX_SYS_setpriority = SYS_setpriority,
    CHPOX_SYS_capset = SYS_capset,
    CHPOX_SYS_chroot = SYS_chroot,
    CHPOX_SYS_memfd_create = SYS_memfd_create,
    CHPOX_SYS_timer_create = SYS_timer_create,
    CHPOX_SYS_timer_settime = SYS_timer_settime,
    CHPOX_SYS_timer_gettime = SYS_timer_gettime,
    CHPOX_SYS_timer_getoverrun = SYS_timer_getoverrun,
    CHPOX_SYS_read = SYS_read,
    CHPOX_SYS_inotify_init1 = SYS_inotify_init1,
    CHPOX_SYS_inotify_add_watch = SYS_inotify_add_watch,
    CHPOX_SYS_inotify_rm_watch = SYS_inotify_rm_watch,
    CHPOX_SYS_fanotify_init = SYS_fanotify_init,
    CHPOX_SYS_fanotify_mark = SYS_fanotify_mark,
    CHPOX_SYS_seccomp = SYS_seccomp,
};
/// PR_SET_MM and PR_SET_MM_MAP (linux/prctl.h), and struct prctl_mm_map.
#define CHPOX_PR_SET_MM 35
#define CHPOX_PR_SET_MM_MAP 14
struct chpox_prctl_mm_map {
    uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
    uint64_t arg_start, arg_end, env_start, env_end;
    uint64_t auxv;
    uint32_t auxv_size;
    uint32_t exe_fd;
};
_Static_assert(sizeof(struct chpox_prctl_mm_map) == 104, "struct prctl_mm_map");
#define CHPOX_PTRACE_SETREGSET 0x4205
/// PTRACE_O_TRACECLONE and PTRACE_EVENT_CLONE, PTRACE_SETOPTIONS, PTRACE_GETEVENTMSG.
#define CHPOX_PTRACE_O_TRACECLONE 0x8
#define CHPOX_PTRACE_EVENT_CLONE 3
/// PTRACE_O_TRACEFORK and PTRACE_EVENT_FORK: a process forked by a remote call is attached.
#define CHPOX_PTRACE_O_TRACEFORK 0x2
#define CHPOX_PTRACE_EVENT_FORK 1
#define CHPOX_PTRACE_SETOPTIONS 0x4200
#define CHPOX_PTRACE_GETEVENTMSG 0x4201
/// PTRACE_O_SUSPEND_SECCOMP (linux/ptrace.h): the tracee's seccomp filters and strict mode
/// are not applied while it is traced with it (the tracer needs CAP_SYS_ADMIN).
#define CHPOX_PTRACE_O_SUSPEND_SECCOMP (1 << 21)
/// PTRACE_SECCOMP_GET_FILTER and PTRACE_SECCOMP_GET_METADATA (struct seccomp_metadata).
#define CHPOX_PTRACE_SECCOMP_GET_FILTER 0x420c
#define CHPOX_PTRACE_SECCOMP_GET_METADATA 0x420d
struct chpox_seccomp_metadata {
    uint64_t filter_off;
    uint64_t flags;
};
/// seccomp(2) operations and SECCOMP_SET_MODE_FILTER's flags (linux/seccomp.h).
#define CHPOX_SECCOMP_SET_MODE_STRICT 0
#define CHPOX_SECCOMP_SET_MODE_FILTER 1
#define CHPOX_SECCOMP_FILTER_FLAG_TSYNC 1
#define CHPOX_SECCOMP_FILTER_FLAG_LOG 2
/// PR_SET_NO_NEW_PRIVS (linux/prctl.h): execve grants nothing from then on; never unset.
#define CHPOX_PR_SET_NO_NEW_PRIVS 38
/// Thread-creation flags for a remote clone(2) (sched.h declares them only under _GNU_SOURCE).
/// CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |
/// CLONE_SETTLS | CLONE_CHILD_CLEARTID: what pthread_create asks for.
static inline uint64_t chpox_clone_thread_flags(void) {
    return 0x00000100 | 0x00000200 | 0x00000400 | 0x00000800 | 0x00010000 | 0x00040000 | 0x00080000 | 0x00200000;
}
/// struct clone_args (linux/sched.h, 5.5+ with set_tid).
struct chpox_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};
_Static_assert(sizeof(struct chpox_clone_args) == 88, "struct clone_args");
/// Starts `path` as a child with process id `pid` (clone3 with set_tid; needs CAP_SYS_ADMIN and
/// a free pid), only descriptors 0-2 inherited. Returns the pid, or -errno.
long chpox_spawn_with_pid(const char *path, char *const argv[], char *const envp[], pid_t pid);
/// Starts `path` as the first process (pid 1) of a new PID namespace (clone3 with CLONE_NEWPID;
/// needs CAP_SYS_ADMIN), only descriptors 0-2 inherited. Returns its pid here, or -errno.
long chpox_spawn_in_pid_namespace(const char *path, char *const argv[], char *const envp[]);
/// mremap(2) flags (declared only under _GNU_SOURCE).
#define CHPOX_MREMAP_MAYMOVE 1
#define CHPOX_MREMAP_FIXED 2

/// O_TMPFILE (an unnamed file in a directory), which glibc's headers define only under
/// _GNU_SOURCE.
#define CHPOX_O_TMPFILE (020000000 | 0200000)
_Static_assert(CHPOX_O_TMPFILE == (__O_TMPFILE), "O_TMPFILE");
/// O_PATH (a handle that only names a file), also behind _GNU_SOURCE in glibc's headers.
#define CHPOX_O_PATH 010000000
_Static_assert(CHPOX_O_PATH == (__O_PATH), "O_PATH");
/// PR_SET_PDEATHSIG (linux/prctl.h): the signal a process gets when its parent dies.
#define CHPOX_PR_SET_PDEATHSIG 1
#define CHPOX_PR_GET_PDEATHSIG 2
/// PR_SET_NAME (linux/prctl.h): a thread's name (comm), at most 16 bytes with the NUL.
#define CHPOX_PR_SET_NAME 15
/// PR_GET_TID_ADDRESS (linux/prctl.h): where the kernel clears the thread id at exit.
#define CHPOX_PR_GET_TID_ADDRESS 40
/// PR_GET_DUMPABLE and PR_SET_DUMPABLE (linux/prctl.h): whether the process dumps core and
/// whom /proc and ptrace let at it; changing ids clears it.
#define CHPOX_PR_GET_DUMPABLE 3
#define CHPOX_PR_SET_DUMPABLE 4
/// PR_SET_CHILD_SUBREAPER and PR_GET_CHILD_SUBREAPER (linux/prctl.h): orphaned descendants
/// are reparented to this process, not to init.
#define CHPOX_PR_SET_CHILD_SUBREAPER 36
#define CHPOX_PR_GET_CHILD_SUBREAPER 37
/// prctl(2) with one argument (glibc's is variadic): 0, or -1 with errno set.
static inline int chpox_prctl1(int option, unsigned long argument) {
    return prctl(option, argument, 0UL, 0UL, 0UL);
}
/// PR_SET_THP_DISABLE and PR_GET_THP_DISABLE (linux/prctl.h): no transparent huge pages.
#define CHPOX_PR_SET_THP_DISABLE 41
#define CHPOX_PR_GET_THP_DISABLE 42
/// MEMBARRIER_CMD_GET_REGISTRATIONS (linux/membarrier.h, Linux 6.3): the REGISTER_* commands
/// the calling process's mm has made, as their bits.
#define CHPOX_MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
/// PR_TIMER_CREATE_RESTORE_IDS (linux/prctl.h, Linux 6.15): while ON, timer_create(2) takes the
/// new timer's id from the timer_t its third argument points to, instead of picking one.
#define CHPOX_PR_TIMER_CREATE_RESTORE_IDS 77
#define CHPOX_PR_TIMER_CREATE_RESTORE_IDS_OFF 0
#define CHPOX_PR_TIMER_CREATE_RESTORE_IDS_ON 1
/// SIGEV_THREAD_ID (asm-generic/siginfo.h; glibc names it only under _GNU_SOURCE): the timer's
/// signal goes to one thread, named in struct sigevent's _tid.
#define CHPOX_SIGEV_THREAD_ID 4
/// F_OFD_SETLK (fcntl.h, behind _GNU_SOURCE in glibc): a byte-range lock owned by the open
/// file description, not the process.
#define CHPOX_F_OFD_SETLK 37
/// F_SETLEASE and F_GETLEASE (fcntl.h, behind _GNU_SOURCE in glibc): a lease on an open file,
/// F_RDLCK or F_WRLCK (F_UNLCK: none).
#define CHPOX_F_SETLEASE 1024
#define CHPOX_F_GETLEASE 1025

// ptrace requests newer than glibc's enum (linux/ptrace.h), with the structs they fill.
#define CHPOX_PTRACE_PEEKSIGINFO 0x4209
#define CHPOX_PTRACE_GETSIGMASK 0x420a
#define CHPOX_PTRACE_SETSIGMASK 0x420b
#define CHPOX_PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#define CHPOX_PTRACE_PEEKSIGINFO_SHARED 1
#define CHPOX_NT_X86_XSTATE 0x202
struct chpox_peeksiginfo_args { uint64_t off; uint32_t flags; int32_t nr; };
_Static_assert(sizeof(struct chpox_peeksiginfo_args) == 16, "ptrace_peeksiginfo_args");
struct chpox_rseq_configuration { uint64_t rseq_abi_pointer; uint32_t rseq_abi_size; uint32_t signature; uint32_t flags; uint32_t pad; };
_Static_assert(sizeof(struct chpox_rseq_configuration) == 24, "ptrace_rseq_configuration");

// pipe2(2) is declared only under _GNU_SOURCE.
static inline int chpox_pipe2(int fds[2], int flags) { return (int)syscall(SYS_pipe2, fds, flags); }

// POSIX_SPAWN_SETSID is declared only under _GNU_SOURCE (glibc 2.26+ has it, value 0x80).
#ifndef POSIX_SPAWN_SETSID
#define POSIX_SPAWN_SETSID 0x80
#endif
static inline short chpox_posix_spawn_setsid(void) { return POSIX_SPAWN_SETSID; }
#include <spawn.h>
int chpox_posix_spawn_closefrom(posix_spawn_file_actions_t *actions, int from);

// A read the optimizer must keep: it is done for its side effect (a read fault maps the
// shared zero page), which Swift cannot express.
static inline unsigned char chpox_touch_read(const void *address) {
    return *(const volatile unsigned char *)address;
}

// The W* status macros.
static inline int chpox_wifexited(int status) { return WIFEXITED(status); }
static inline int chpox_wexitstatus(int status) { return WEXITSTATUS(status); }
static inline int chpox_wifsignaled(int status) { return WIFSIGNALED(status); }
static inline int chpox_wtermsig(int status) { return WTERMSIG(status); }
static inline int chpox_wifstopped(int status) { return WIFSTOPPED(status); }
static inline int chpox_wstopsig(int status) { return WSTOPSIG(status); }
// The ptrace event of a stop (status >> 16), e.g. PTRACE_EVENT_STOP.
static inline int chpox_wptrace_event(int status) { return (status >> 16) & 0xff; }

// ---- userfaultfd: features newer than the 6.1 headers ----
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
_Static_assert(sizeof(struct uffdio_api) == 24, "uffdio_api layout");
_Static_assert(sizeof(struct uffdio_register) == 32, "uffdio_register layout");
_Static_assert(sizeof(struct uffdio_writeprotect) == 24, "uffdio_writeprotect layout");
_Static_assert(sizeof(struct uffdio_copy) == 40, "uffdio_copy layout");
_Static_assert(sizeof(struct uffdio_zeropage) == 32, "uffdio_zeropage layout");
_Static_assert(sizeof(struct uffd_msg) == 32, "uffd_msg layout");
_Static_assert(__builtin_offsetof(struct uffd_msg, arg) == 8, "uffd_msg arguments");

// ---- PAGEMAP_SCAN (Linux 6.7, include/uapi/linux/fs.h), absent from the 6.1 headers ----
struct chpox_page_region {
    uint64_t start;
    uint64_t end;
    uint64_t categories;
};

struct chpox_pm_scan_arg {
    uint64_t size;
    uint64_t flags;
    uint64_t start;
    uint64_t end;
    uint64_t walk_end;
    uint64_t vec;
    uint64_t vec_len;
    uint64_t max_pages;
    uint64_t category_inverted;
    uint64_t category_mask;
    uint64_t category_anyof_mask;
    uint64_t return_mask;
};
_Static_assert(sizeof(struct chpox_page_region) == 24, "page_region layout");
_Static_assert(sizeof(struct chpox_pm_scan_arg) == 96, "pm_scan_arg layout");

#define CHPOX_PAGE_IS_WPALLOWED  (1ULL << 0)
#define CHPOX_PAGE_IS_WRITTEN    (1ULL << 1)
#define CHPOX_PAGE_IS_FILE       (1ULL << 2)
#define CHPOX_PAGE_IS_PRESENT    (1ULL << 3)
#define CHPOX_PAGE_IS_SWAPPED    (1ULL << 4)
#define CHPOX_PAGE_IS_PFNZERO    (1ULL << 5)
#define CHPOX_PAGE_IS_HUGE       (1ULL << 6)
#define CHPOX_PAGE_IS_SOFT_DIRTY (1ULL << 7)
#define CHPOX_PM_SCAN_WP_MATCHING    (1ULL << 0)
#define CHPOX_PM_SCAN_CHECK_WPASYNC  (1ULL << 1)

// ioctl request numbers, exported as constants (the _IO* macros are function-like).
extern const unsigned long chpox_PAGEMAP_SCAN;
extern const unsigned long chpox_UFFDIO_API;
extern const unsigned long chpox_UFFDIO_REGISTER;
extern const unsigned long chpox_UFFDIO_UNREGISTER;
extern const unsigned long chpox_UFFDIO_WRITEPROTECT;
extern const unsigned long chpox_UFFDIO_COPY;
extern const unsigned long chpox_UFFDIO_ZEROPAGE;
extern const unsigned long chpox_UFFDIO_WAKE;


// kcmp(2) has no glibc wrapper: KCMP_FILE tells whether two descriptors of processes share
// one open file description (dup, fork), which /proc does not show.
#ifndef SYS_kcmp
#define SYS_kcmp 312
#endif
#define CHPOX_KCMP_FILE 0
static inline int chpox_kcmp_file(pid_t pid1, pid_t pid2, int fd1, int fd2) {
    return (int)syscall(SYS_kcmp, pid1, pid2, CHPOX_KCMP_FILE, (unsigned long)fd1, (unsigned long)fd2);
}
/// kcmp(2) of a whole kernel object two processes may share (clone flags): KCMP_VM 1
/// (CLONE_VM), KCMP_FILES 2 (CLONE_FILES), KCMP_FS 3 (CLONE_FS), KCMP_SIGHAND 4 (CLONE_SIGHAND).
/// 0 when shared.
static inline int chpox_kcmp_object(pid_t pid1, pid_t pid2, int type) {
    return (int)syscall(SYS_kcmp, pid1, pid2, type, 0UL, 0UL);
}

// tee(2) and the pipe fcntls are declared only under _GNU_SOURCE: tee copies a pipe's
// buffers into another pipe without consuming them (how a pipe's data is read at checkpoint).
static inline long chpox_tee(int in, int out, size_t length, unsigned int flags) {
    return (long)syscall(SYS_tee, in, out, length, flags);
}
#define CHPOX_SPLICE_F_NONBLOCK 2
#define CHPOX_F_SETPIPE_SZ 1031
/// F_GETSIG (fcntl.h, _GNU_SOURCE only): the signal of signal-driven I/O (0: SIGIO).
#define CHPOX_F_GETSIG 11
/// F_SETSIG, F_SETOWN_EX, F_GETOWN_EX, F_GETOWNER_UIDS (fcntl.h, _GNU_SOURCE only): the
/// signal, the owner (type F_OWNER_TID 0, F_OWNER_PID 1, F_OWNER_PGRP 2, and a pid) and the
/// real and effective uid recorded with the owner, which decide whether the signal may be sent.
#define CHPOX_F_SETSIG 10
#define CHPOX_F_SETOWN_EX 15
#define CHPOX_F_GETOWN_EX 16
#define CHPOX_F_GETOWNER_UIDS 17
/// FASYNC / O_ASYNC: signal-driven I/O on.
#define CHPOX_O_ASYNC 020000
/// O_LARGEFILE as the kernel shows it in fdinfo (x86-64 libc defines it 0): every open(2) of a
/// 64-bit process sets it; pipe(2) does not.
#define CHPOX_O_LARGEFILE 0100000
/// The owner of an open file's I/O signals (fcntl F_GETOWN_EX): type and pid.
static inline int chpox_fcntl_get_owner(int fd, int *type, int *pid) {
    struct { int type; int pid; } owner = {0, 0};
    int result = fcntl(fd, CHPOX_F_GETOWN_EX, &owner);
    *type = owner.type;
    *pid = owner.pid;
    return result;
}
/// The uid and euid recorded with an open file's owner (fcntl F_GETOWNER_UIDS).
static inline int chpox_fcntl_get_owner_uids(int fd, unsigned int uids[2]) {
    return fcntl(fd, CHPOX_F_GETOWNER_UIDS, uids);
}
// O_DIRECT (a packet-mode pipe) and O_NOATIME, _GNU_SOURCE only too.
#define CHPOX_O_DIRECT 040000
#define CHPOX_O_NOATIME 01000000
#define CHPOX_F_GETPIPE_SZ 1032
// File sealing (fcntl.h, _GNU_SOURCE only) and memfd_create's flags (linux/memfd.h; MFD_EXEC
// and F_SEAL_EXEC are newer than the installed headers, kernel 6.3).
#define CHPOX_F_ADD_SEALS 1033
#define CHPOX_F_GET_SEALS 1034
#define CHPOX_F_SEAL_SEAL 0x0001
#define CHPOX_F_SEAL_SHRINK 0x0002
#define CHPOX_F_SEAL_GROW 0x0004
#define CHPOX_F_SEAL_WRITE 0x0008
#define CHPOX_F_SEAL_FUTURE_WRITE 0x0010
#define CHPOX_F_SEAL_EXEC 0x0020
#define CHPOX_MFD_CLOEXEC 0x0001U
#define CHPOX_MFD_ALLOW_SEALING 0x0002U
#define CHPOX_MFD_EXEC 0x0010U
/// statfs(2)'s f_type of tmpfs and shmem (memfds, shared anonymous memory): TMPFS_MAGIC.
#define CHPOX_TMPFS_MAGIC 0x01021994
#include <sys/vfs.h>
/// fstatfs(2)'s f_type alone (struct statfs is not in Swift's Glibc module); -1 with errno set
/// when it fails.
static inline long chpox_fstatfs_type(int fd) {
    struct statfs info;
    if (fstatfs(fd, &info) != 0) return -1;
    return (long)info.f_type;
}
// lseek's SEEK_DATA/SEEK_HOLE, also _GNU_SOURCE only.
#define CHPOX_SEEK_DATA 3
#define CHPOX_SEEK_HOLE 4
// futimens(2)'s "leave this time as it is" (a macro of an expression).
#define CHPOX_UTIME_OMIT 1073741822

// UNIX sockets: sock_diag(7) answers what /proc does not say about a UNIX socket (its peer,
// name, state, queue lengths, shutdown); the request and answer structs come from the installed
// uapi headers, framed here in one netlink message so Swift sends a single fixed-size value.
#include <sys/socket.h>
#include <poll.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
struct chpox_unix_diag_request {
    struct nlmsghdr header;
    struct unix_diag_req request;
};
_Static_assert(sizeof(struct nlmsghdr) == 16, "nlmsghdr layout");
_Static_assert(sizeof(struct unix_diag_req) == 24, "unix_diag_req layout");
_Static_assert(sizeof(struct chpox_unix_diag_request) == 40, "one netlink message, no padding");
_Static_assert(sizeof(struct unix_diag_msg) == 16, "unix_diag_msg layout");
_Static_assert(sizeof(struct unix_diag_rqlen) == 8, "unix_diag_rqlen layout");
_Static_assert(sizeof(struct nlmsgerr) == 20, "nlmsgerr layout");
// Socket options asm/socket.h defines as macros Swift may not see on every libc.
#define CHPOX_SO_PEEK_OFF 42
#define CHPOX_SO_DOMAIN 39
// SO_PEERCRED answers struct ucred (pid, uid, gid), declared only under _GNU_SOURCE.
#define CHPOX_SO_PEERCRED 17
struct chpox_ucred { int32_t pid; uint32_t uid; uint32_t gid; };
_Static_assert(CHPOX_SO_PEERCRED == SO_PEERCRED, "SO_PEERCRED");
_Static_assert(sizeof(struct chpox_ucred) == 12, "struct ucred layout");
_Static_assert(CHPOX_SO_PEEK_OFF == SO_PEEK_OFF, "SO_PEEK_OFF");
_Static_assert(CHPOX_SO_DOMAIN == SO_DOMAIN, "SO_DOMAIN");
// The kernel's sk_shutdown bits (include/net/sock.h) that UNIX_DIAG_SHUTDOWN reports.
#define CHPOX_RCV_SHUTDOWN 1
#define CHPOX_SEND_SHUTDOWN 2

// IPv4 and IPv6 sockets: sock_diag with INET_DIAG (a dump of one protocol's sockets, matched
// by inode) says what getsockopt does not: a socket's shutdown state. Structs from the
// installed uapi header, framed in one netlink message.
#include <linux/inet_diag.h>
struct chpox_inet_diag_request {
    struct nlmsghdr header;
    struct inet_diag_req_v2 request;
};
_Static_assert(sizeof(struct inet_diag_req_v2) == 56, "inet_diag_req_v2 layout");
_Static_assert(sizeof(struct chpox_inet_diag_request) == 72, "one netlink message, no padding");
_Static_assert(sizeof(struct inet_diag_msg) == 72, "inet_diag_msg layout");
/// TCP repair mode (linux/tcp.h, which clashes with netinet/tcp.h): the option numbers, the
/// queues TCP_REPAIR_QUEUE selects, and TCP_REPAIR_WINDOW's struct.
#define CHPOX_TCP_REPAIR 19
#define CHPOX_TCP_REPAIR_QUEUE 20
#define CHPOX_TCP_QUEUE_SEQ 21
#define CHPOX_TCP_REPAIR_OPTIONS 22
#define CHPOX_TCP_TIMESTAMP 24
#define CHPOX_TCP_REPAIR_WINDOW 29
#define CHPOX_TCP_RECV_QUEUE 1
#define CHPOX_TCP_SEND_QUEUE 2
/// TCP_REPAIR_OFF_NO_WP: leave repair mode without sending a window probe.
#define CHPOX_TCP_REPAIR_OFF_NO_WP (-1)
struct chpox_tcp_repair_window {
    uint32_t snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup;
};
_Static_assert(sizeof(struct chpox_tcp_repair_window) == 20, "struct tcp_repair_window");
/// SIOCINQ (FIONREAD), SIOCOUTQ (TIOCOUTQ) and SIOCOUTQNSD (linux/sockios.h): the bytes in a
/// TCP socket's receive queue, its send queue, and the part of it not sent yet.
#define CHPOX_SIOCINQ 0x541B
#define CHPOX_SIOCOUTQ 0x5411
#define CHPOX_SIOCOUTQNSD 0x894B
_Static_assert(CHPOX_SIOCINQ == FIONREAD, "SIOCINQ");
_Static_assert(CHPOX_SIOCOUTQ == TIOCOUTQ, "SIOCOUTQ");


/// Pseudo-terminal requests (asm-generic/ioctls.h; the _IO* ones are function-like macros):
/// a pty's number (TIOCGPTN), its lock (TIOCGPTLCK, TIOCSPTLCK), packet mode (TIOCGPKT; set by
/// TIOCPKT), exclusive mode (TIOCGEXCL; TIOCEXCL, TIOCNXCL), an open file of the slave made
/// from the master (TIOCGPTPEER), and the slave's termios as termios2 (TCGETS2, TCSETS2: the
/// kernel's struct, whose c_cc has 19 entries where glibc's termios has 32).
struct chpox_termios2 {
    uint32_t c_iflag, c_oflag, c_cflag, c_lflag;
    uint8_t c_line;
    uint8_t c_cc[19];
    uint32_t c_ispeed, c_ospeed;
};
_Static_assert(sizeof(struct chpox_termios2) == 44, "struct termios2");
#define CHPOX_TCGETS2 0x802C542AUL
#define CHPOX_TCSETS2 0x402C542BUL
_Static_assert(CHPOX_TCGETS2 == _IOR('T', 0x2A, struct chpox_termios2), "TCGETS2");
_Static_assert(CHPOX_TCSETS2 == _IOW('T', 0x2B, struct chpox_termios2), "TCSETS2");
#define CHPOX_TIOCGPTN 0x80045430UL
#define CHPOX_TIOCSPTLCK 0x40045431UL
#define CHPOX_TIOCGPKT 0x80045438UL
#define CHPOX_TIOCGPTLCK 0x80045439UL
#define CHPOX_TIOCGEXCL 0x80045440UL
#define CHPOX_TIOCGPTPEER 0x5441UL
_Static_assert(CHPOX_TIOCGPTN == TIOCGPTN, "TIOCGPTN");
_Static_assert(CHPOX_TIOCSPTLCK == TIOCSPTLCK, "TIOCSPTLCK");
_Static_assert(CHPOX_TIOCGPKT == TIOCGPKT, "TIOCGPKT");
_Static_assert(CHPOX_TIOCGPTLCK == TIOCGPTLCK, "TIOCGPTLCK");
_Static_assert(CHPOX_TIOCGEXCL == TIOCGEXCL, "TIOCGEXCL");
_Static_assert(CHPOX_TIOCGPTPEER == TIOCGPTPEER, "TIOCGPTPEER");
/// TIOCGPTPEER takes its open flags as the argument itself, not a pointer to them.
static inline int chpox_ioctl_value(int fd, unsigned long request, unsigned long value) {
    return ioctl(fd, request, value);
}

#endif
