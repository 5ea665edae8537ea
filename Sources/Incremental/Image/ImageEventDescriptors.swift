/// Descriptors on the kernel's anonymous event objects, recorded from /proc/PID/fdinfo and
/// created again by `EventDescriptorPhase`: eventfd, timerfd, signalfd, epoll, pidfd, inotify and
/// fanotify.
extension ProcessImage {
    public enum EventObject: Codable, Sendable, Equatable {
        /// eventfd(2): its counter, and EFD_SEMAPHORE.
        case eventfd(count: UInt64, semaphore: Bool)
        /// timerfd_create(2): its clock and, when armed, what is left of it and its interval
        /// (nanoseconds); it is restarted relative, as it stood at the checkpoint.
        case timerfd(clock: Int32, remainingNanoseconds: UInt64, intervalNanoseconds: UInt64, ticks: UInt64 = 0)
        /// signalfd(2): the signals it reads.
        case signalfd(mask: UInt64)
        /// epoll_create1(2): its interest list, each target a descriptor of the process.
        case epoll(targets: [EpollTarget])
        /// pidfd_open(2): the process it refers to, by its saved pid, one of the image's tree.
        case pidfd(pid: Int32)
        /// A pidfd of a process that had exited and been reaped (fdinfo Pid: -1): `process`
        /// tells the dead processes apart (the pidfs inode every pidfd of one process shares),
        /// so that the descriptors of one come back as pidfds of one dead process again (an
        /// older chpox cannot read this case, and refuses the image).
        case deadPidfd(process: UInt64)
        /// inotify_init1(2): its watches, by watch descriptor (an older chpox cannot read this
        /// case, and refuses the image).
        case inotify(watches: [InotifyWatch])
        /// fanotify_init(2): its flags (FAN_CLASS_*, FAN_REPORT_*, FAN_NONBLOCK...) and those of
        /// the descriptors its events carry (O_RDONLY, O_LARGEFILE...), and its marks.
        case fanotify(flags: UInt32, eventFlags: UInt32, marks: [FanotifyMark])

        /// What it is, for people.
        public var summary: String {
            switch self {
            case .eventfd(let count, let semaphore): "eventfd, counter \(count)" + (semaphore ? ", semaphore" : "")
            case .timerfd(let clock, let remaining, let interval, let ticks):
                "timerfd, clock \(clock), "
                    + (remaining == 0 ? "disarmed" : "next in \(remaining) ns, every \(interval) ns")
                    + (ticks == 0 ? "" : ", \(ticks) expirations unread")
            case .signalfd(let mask): "signalfd, mask 0x\(String(mask, radix: 16))"
            case .epoll(let targets):
                "epoll watching "
                    + targets.map { "fd \($0.fd)" + ($0.via.map { " (closed; its file is fd \($0))" } ?? "") }
                    .joined(separator: ", ")
            case .pidfd(let pid): "pidfd of process \(pid)"
            case .deadPidfd(let process): "pidfd of a process that has exited (pidfs inode \(process))"
            case .inotify(let watches):
                "inotify watching "
                    + (watches.isEmpty
                        ? "nothing"
                        : watches.map { "\($0.path) (wd \($0.wd), mask 0x\(String($0.mask, radix: 16)))" }
                            .joined(separator: ", "))
            case .fanotify(let flags, let eventFlags, let marks):
                "fanotify, flags 0x\(String(flags, radix: 16)), event flags 0x\(String(eventFlags, radix: 16)), marking "
                    + (marks.isEmpty ? "nothing" : marks.map(\.summary).joined(separator: ", "))
            }
        }
    }

    /// One entry of an epoll interest list: the descriptor number it was registered as, its
    /// events (EPOLLIN, EPOLLET...) and the data the program gave with them. `via`: that number
    /// was closed (or now holds another file) while another descriptor keeps the file open, and
    /// the epoll still watches it; the restart registers it through `via` at that number.
    public struct EpollTarget: Codable, Sendable, Equatable {
        public var fd: Int32
        public var events: UInt32
        public var data: UInt64
        public var via: Int32? = nil

        enum CodingKeys: String, CodingKey { case fd, events, data, via }

        public init(fd: Int32, events: UInt32, data: UInt64, via: Int32? = nil) {
            (self.fd, self.events, self.data, self.via) = (fd, events, data, via)
        }
    }
}

extension ProcessImage {
    /// One watch of an inotify descriptor: the number the program knows it by (programs keep
    /// them, so a restart must give the same), its mask as inotify_add_watch(2) takes it (events,
    /// IN_ONESHOT, IN_EXCL_UNLINK) and the path of the file or directory it watches, as the
    /// checkpoint found it from the file handle the kernel keeps.
    public struct InotifyWatch: Codable, Sendable, Equatable {
        public var wd: Int32
        public var mask: UInt32
        public var path: String

        public init(wd: Int32, mask: UInt32, path: String) { (self.wd, self.mask, self.path) = (wd, mask, path) }
    }
}

extension ProcessImage {
    /// One mark of a fanotify descriptor: on a file or directory, a mount or a whole file system,
    /// each by a path (the file's own, the mount's point, a mount point of the file system); its
    /// flags as fdinfo shows them (FAN_MARK_IGNORED_SURV_MODIFY, FAN_MARK_EVICTABLE,
    /// FAN_MARK_IGNORE), its events and its ignored events.
    public struct FanotifyMark: Codable, Sendable, Equatable {
        public enum Object: String, Codable, Sendable { case inode, mount, filesystem }
        public var object: Object
        public var path: String
        public var flags: UInt32
        public var mask: UInt32
        public var ignoredMask: UInt32

        public init(object: Object, path: String, flags: UInt32, mask: UInt32, ignoredMask: UInt32) {
            (self.object, self.path, self.flags, self.mask, self.ignoredMask) = (object, path, flags, mask, ignoredMask)
        }

        var summary: String {
            "\(object.rawValue) \(path) (mask 0x\(String(mask, radix: 16)), ignored 0x\(String(ignoredMask, radix: 16))"
                + (flags == 0 ? ")" : ", flags 0x\(String(flags, radix: 16)))")
        }
    }
}
