import CLinux

/// A system call run inside another process, by its x86-64 number (`RemoteCalls`).
public struct SystemCall: RawRepresentable, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    init(_ number: chpox_system_call) { rawValue = Int(number.rawValue) }

    /// The corresponding C constant is SYS_brk.
    public static let brk = SystemCall(CHPOX_SYS_brk)
    /// The corresponding C constant is SYS_userfaultfd.
    public static let userfaultfd = SystemCall(CHPOX_SYS_userfaultfd)
    /// The corresponding C constant is SYS_mmap.
    public static let mmap = SystemCall(CHPOX_SYS_mmap)
    /// The corresponding C constant is SYS_munmap.
    public static let munmap = SystemCall(CHPOX_SYS_munmap)
    /// The corresponding C constant is SYS_mremap.
    public static let mremap = SystemCall(CHPOX_SYS_mremap)
    /// The corresponding C constant is SYS_io_setup.
    public static let ioSetup = SystemCall(CHPOX_SYS_io_setup)
    /// The corresponding C constant is SYS_io_submit.
    public static let ioSubmit = SystemCall(CHPOX_SYS_io_submit)
    /// The corresponding C constant is SYS_madvise.
    public static let madvise = SystemCall(CHPOX_SYS_madvise)
    /// The corresponding C constant is SYS_mprotect.
    public static let mprotect = SystemCall(CHPOX_SYS_mprotect)
    /// The corresponding C constant is SYS_close_range.
    public static let closeRange = SystemCall(CHPOX_SYS_close_range)
    /// The corresponding C constant is SYS_openat.
    public static let openat = SystemCall(CHPOX_SYS_openat)
    /// The corresponding C constant is SYS_close.
    public static let close = SystemCall(CHPOX_SYS_close)
    /// The corresponding C constant is SYS_dup3.
    public static let dup3 = SystemCall(CHPOX_SYS_dup3)
    /// The corresponding C constant is SYS_fcntl.
    public static let fcntl = SystemCall(CHPOX_SYS_fcntl)
    /// The corresponding C constant is SYS_lseek.
    public static let lseek = SystemCall(CHPOX_SYS_lseek)
    /// The corresponding C constant is SYS_pipe2.
    public static let pipe2 = SystemCall(CHPOX_SYS_pipe2)
    /// The corresponding C constant is SYS_prctl.
    public static let prctl = SystemCall(CHPOX_SYS_prctl)
    /// The corresponding C constant is SYS_rt_sigaction.
    public static let rtSigaction = SystemCall(CHPOX_SYS_rt_sigaction)
    /// The corresponding C constant is SYS_sigaltstack.
    public static let sigaltstack = SystemCall(CHPOX_SYS_sigaltstack)
    /// The corresponding C constant is SYS_rt_sigqueueinfo.
    public static let rtSigqueueinfo = SystemCall(CHPOX_SYS_rt_sigqueueinfo)
    /// The corresponding C constant is SYS_rt_tgsigqueueinfo.
    public static let rtTgsigqueueinfo = SystemCall(CHPOX_SYS_rt_tgsigqueueinfo)
    /// The corresponding C constant is SYS_getitimer.
    public static let getitimer = SystemCall(CHPOX_SYS_getitimer)
    /// The corresponding C constant is SYS_flock.
    public static let flock = SystemCall(CHPOX_SYS_flock)
    /// The corresponding C constant is SYS_setitimer.
    public static let setitimer = SystemCall(CHPOX_SYS_setitimer)
    /// The corresponding C constant is SYS_rseq.
    public static let rseq = SystemCall(CHPOX_SYS_rseq)
    /// The corresponding C constant is SYS_set_tid_address.
    public static let setTidAddress = SystemCall(CHPOX_SYS_set_tid_address)
    /// The corresponding C constant is SYS_umask.
    public static let umask = SystemCall(CHPOX_SYS_umask)
    /// The corresponding C constant is SYS_chdir.
    public static let chdir = SystemCall(CHPOX_SYS_chdir)
    /// The corresponding C constant is SYS_clone3.
    public static let clone3 = SystemCall(CHPOX_SYS_clone3)
    /// The corresponding C constant is SYS_setresuid.
    public static let setresuid = SystemCall(CHPOX_SYS_setresuid)
    /// The corresponding C constant is SYS_setresgid.
    public static let setresgid = SystemCall(CHPOX_SYS_setresgid)
    /// The corresponding C constant is SYS_setfsuid.
    public static let setfsuid = SystemCall(CHPOX_SYS_setfsuid)
    /// The corresponding C constant is SYS_setfsgid.
    public static let setfsgid = SystemCall(CHPOX_SYS_setfsgid)
    /// The corresponding C constant is SYS_ftruncate.
    public static let ftruncate = SystemCall(CHPOX_SYS_ftruncate)
    /// The corresponding C constant is SYS_setgroups.
    public static let setgroups = SystemCall(CHPOX_SYS_setgroups)
    /// The corresponding C constant is SYS_write.
    public static let write = SystemCall(CHPOX_SYS_write)
    /// The corresponding C constant is SYS_eventfd2.
    public static let eventfd2 = SystemCall(CHPOX_SYS_eventfd2)
    /// The corresponding C constant is SYS_timerfd_create.
    public static let timerfdCreate = SystemCall(CHPOX_SYS_timerfd_create)
    /// The corresponding C constant is SYS_timerfd_settime.
    public static let timerfdSettime = SystemCall(CHPOX_SYS_timerfd_settime)
    /// The corresponding C constant is SYS_signalfd4.
    public static let signalfd4 = SystemCall(CHPOX_SYS_signalfd4)
    /// The corresponding C constant is SYS_epoll_create1.
    public static let epollCreate1 = SystemCall(CHPOX_SYS_epoll_create1)
    /// The corresponding C constant is SYS_epoll_ctl.
    public static let epollCtl = SystemCall(CHPOX_SYS_epoll_ctl)
    /// The corresponding C constant is SYS_ioctl.
    public static let ioctl = SystemCall(CHPOX_SYS_ioctl)
    /// The corresponding C constant is SYS_membarrier.
    public static let membarrier = SystemCall(CHPOX_SYS_membarrier)
    /// The corresponding C constant is SYS_set_robust_list.
    public static let setRobustList = SystemCall(CHPOX_SYS_set_robust_list)
    /// The corresponding C constant is SYS_setsid.
    public static let setsid = SystemCall(CHPOX_SYS_setsid)
    /// The corresponding C constant is SYS_setpgid.
    public static let setpgid = SystemCall(CHPOX_SYS_setpgid)
    /// The corresponding C constant is SYS_pidfd_open.
    public static let pidfdOpen = SystemCall(CHPOX_SYS_pidfd_open)
    /// The corresponding C constant is SYS_pidfd_getfd.
    public static let pidfdGetfd = SystemCall(CHPOX_SYS_pidfd_getfd)
    /// The corresponding C constant is SYS_exit_group.
    public static let exitGroup = SystemCall(CHPOX_SYS_exit_group)
    /// The corresponding C constant is SYS_kill.
    public static let kill = SystemCall(CHPOX_SYS_kill)
    /// The corresponding C constant is SYS_wait4.
    public static let wait4 = SystemCall(CHPOX_SYS_wait4)
    /// The corresponding C constant is SYS_socketpair.
    public static let socketpair = SystemCall(CHPOX_SYS_socketpair)
    /// The corresponding C constant is SYS_sendto.
    public static let sendto = SystemCall(CHPOX_SYS_sendto)
    /// The corresponding C constant is SYS_sendmsg.
    public static let sendmsg = SystemCall(CHPOX_SYS_sendmsg)
    /// The corresponding C constant is SYS_socket.
    public static let socket = SystemCall(CHPOX_SYS_socket)
    /// The corresponding C constant is SYS_bind.
    public static let bind = SystemCall(CHPOX_SYS_bind)
    /// The corresponding C constant is SYS_listen.
    public static let listen = SystemCall(CHPOX_SYS_listen)
    /// The corresponding C constant is SYS_connect.
    public static let connect = SystemCall(CHPOX_SYS_connect)
    /// The corresponding C constant is SYS_accept4.
    public static let accept4 = SystemCall(CHPOX_SYS_accept4)
    /// The corresponding C constant is SYS_unlinkat.
    public static let unlinkat = SystemCall(CHPOX_SYS_unlinkat)
    /// The corresponding C constant is SYS_fchdir.
    public static let fchdir = SystemCall(CHPOX_SYS_fchdir)
    /// The corresponding C constant is SYS_mkdirat.
    public static let mkdirat = SystemCall(CHPOX_SYS_mkdirat)
    /// The corresponding C constant is SYS_mknodat.
    public static let mknodat = SystemCall(CHPOX_SYS_mknodat)
    /// The corresponding C constant is SYS_symlinkat.
    public static let symlinkat = SystemCall(CHPOX_SYS_symlinkat)
    /// The corresponding C constant is SYS_fchmodat.
    public static let fchmodat = SystemCall(CHPOX_SYS_fchmodat)
    /// The corresponding C constant is SYS_fchownat.
    public static let fchownat = SystemCall(CHPOX_SYS_fchownat)
    /// The corresponding C constant is SYS_shutdown.
    public static let shutdown = SystemCall(CHPOX_SYS_shutdown)
    /// The corresponding C constant is SYS_setsockopt.
    public static let setsockopt = SystemCall(CHPOX_SYS_setsockopt)
    /// The corresponding C constant is SYS_sched_setattr.
    public static let schedSetattr = SystemCall(CHPOX_SYS_sched_setattr)
    /// The corresponding C constant is SYS_setpriority.
    public static let setpriority = SystemCall(CHPOX_SYS_setpriority)
    /// The corresponding C constant is SYS_capset.
    public static let capset = SystemCall(CHPOX_SYS_capset)
    /// The corresponding C constant is SYS_chroot.
    public static let chroot = SystemCall(CHPOX_SYS_chroot)
    /// The corresponding C constant is SYS_memfd_create.
    public static let memfdCreate = SystemCall(CHPOX_SYS_memfd_create)
    /// The corresponding C constant is SYS_timer_create.
    public static let timerCreate = SystemCall(CHPOX_SYS_timer_create)
    /// The corresponding C constant is SYS_timer_settime.
    public static let timerSettime = SystemCall(CHPOX_SYS_timer_settime)
    /// The corresponding C constant is SYS_timer_gettime.
    public static let timerGettime = SystemCall(CHPOX_SYS_timer_gettime)
    /// The corresponding C constant is SYS_timer_getoverrun.
    public static let timerGetoverrun = SystemCall(CHPOX_SYS_timer_getoverrun)
    /// The corresponding C constant is SYS_read.
    public static let read = SystemCall(CHPOX_SYS_read)
    /// The corresponding C constant is SYS_inotify_init1.
    public static let inotifyInit1 = SystemCall(CHPOX_SYS_inotify_init1)
    /// The corresponding C constant is SYS_inotify_add_watch.
    public static let inotifyAddWatch = SystemCall(CHPOX_SYS_inotify_add_watch)
    /// The corresponding C constant is SYS_inotify_rm_watch.
    public static let inotifyRmWatch = SystemCall(CHPOX_SYS_inotify_rm_watch)
    /// The corresponding C constant is SYS_fanotify_init.
    public static let fanotifyInit = SystemCall(CHPOX_SYS_fanotify_init)
    /// The corresponding C constant is SYS_fanotify_mark.
    public static let fanotifyMark = SystemCall(CHPOX_SYS_fanotify_mark)
    /// The corresponding C constant is SYS_seccomp.
    public static let seccomp = SystemCall(CHPOX_SYS_seccomp)
}
