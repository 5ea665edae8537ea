#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// The eventfd, timerfd, signalfd, epoll, pidfd and inotify descriptors, made again at their
/// numbers after every other descriptor is in place (an epoll's targets are descriptors of the
/// process): an eventfd with its counter, a timerfd armed with what was left of it, a signalfd
/// with its mask, an epoll with its interest list (events and data as the program registered
/// them), a pidfd opened on the process of the tree it referred to (every process exists by
/// now), an inotify with its watches at their numbers, a fanotify with its flags and marks.
public struct EventDescriptorPhase: RestartPhase {
    public struct Entry: Sendable, Equatable {
        public var fd: Int32
        /// O_NONBLOCK and O_CLOEXEC as fdinfo's flags had them.
        public var nonBlocking: Bool
        public var closeOnExec: Bool
        public var object: ProcessImage.EventObject
    }

    /// In creation order: epolls after what they watch.
    public var entries: [Entry]

    public var name: String { "event descriptors" }
    public var steps: [String] {
        entries.map { "fd \($0.fd): \($0.object.summary)" + ($0.closeOnExec ? " (close-on-exec)" : "") }
    }

    public init(image: ProcessImage) {
        var pending = image.descriptors.compactMap { descriptor -> Entry? in
            guard descriptor.kind == .event, let object = descriptor.event else { return nil }
            return Entry(
                fd: descriptor.fd, nonBlocking: descriptor.flags & O_NONBLOCK != 0,
                closeOnExec: descriptor.flags & O_CLOEXEC != 0, object: object)
        }
        // An epoll may watch another: each after the epolls it watches (a cycle cannot be made
        // by a program either, so none is expected; what is left is appended as it is).
        var ordered: [Entry] = []
        while !pending.isEmpty {
            let made = Set(ordered.map(\.fd))
            let waiting = Set(pending.map(\.fd))
            guard
                let next = pending.firstIndex(where: { entry in
                    guard case .epoll(let targets) = entry.object else { return true }
                    return targets.allSatisfy { !waiting.contains($0.fd) || made.contains($0.fd) }
                })
            else {
                ordered += pending
                break
            }
            ordered.append(pending.remove(at: next))
        }
        entries = ordered
    }

    public func run(in session: RestartSession) throws {
        let calls = session.calls
        for entry in entries {
            let what = "make descriptor \(entry.fd) (\(entry.object.summary))"
            let made = try create(entry, session, what)
            let cloexec = entry.closeOnExec ? O_CLOEXEC : 0
            if made != Int(entry.fd) {
                try calls.call(.dup3, made, entry.fd, cloexec, to: what)
                _ = try calls.result(of: .close, made)
            } else if cloexec == 0 {
                try calls.call(.fcntl, entry.fd, F_SETFD, 0, to: what)
            }
        }
    }

    /// Adds `target` to epoll `epoll`. A target registered through another descriptor (`via`):
    /// that file is put at the target's number for the registration, and whatever was there
    /// put back after, as the program left it.
    private func watch(
        _ target: ProcessImage.EpollTarget, event: [UInt8], in epoll: Int, _ calls: RemoteCalls, _ what: String
    ) throws {
        let add: Int32 = 1  // EPOLL_CTL_ADD
        let doing = "\(what): watch descriptor \(target.fd)"
        guard let via = target.via else {
            try calls.withFrame { () throws(TraceeError) in
                try calls.call(.epollCtl, epoll, add, target.fd, try calls.bytes(event), to: doing)
            }
            return
        }
        // Whatever holds the number now, kept aside at a free number meanwhile.
        let occupant = try calls.result(of: .fcntl, target.fd, F_GETFD)  // its FD_CLOEXEC, or -EBADF
        let aside = occupant >= 0 ? try calls.call(.fcntl, target.fd, F_DUPFD_CLOEXEC, 0, to: doing) : nil
        try calls.call(.dup3, via, target.fd, O_CLOEXEC, to: doing)
        try calls.withFrame { () throws(TraceeError) in
            try calls.call(.epollCtl, epoll, add, target.fd, try calls.bytes(event), to: doing)
        }
        if let aside {
            try calls.call(.dup3, aside, target.fd, occupant & Int(FD_CLOEXEC) != 0 ? O_CLOEXEC : 0, to: doing)
            _ = try calls.result(of: .close, aside)
        } else {
            _ = try calls.result(of: .close, target.fd)
        }
    }

    /// The object, at a descriptor the kernel picks (close-on-exec until it is moved).
    private func create(_ entry: Entry, _ session: RestartSession, _ what: String) throws -> Int {
        let calls = session.calls
        let nonBlocking = entry.nonBlocking ? O_NONBLOCK : 0
        switch entry.object {
        case .eventfd(let count, let semaphore):
            let semaphoreFlag: Int32 = 1  // EFD_SEMAPHORE
            let fd = try calls.call(.eventfd2, 0, (semaphore ? semaphoreFlag : 0) | nonBlocking | O_CLOEXEC, to: what)
            if count > 0 {
                // The counter takes any value below 2^64 - 1 by a write; eventfd2's own is 32 bits.
                try calls.withFrame { () throws(TraceeError) in
                    let written = try calls.call(.write, fd, try calls.words([count]), 8, to: what)
                    guard written == 8 else { throw .unsupported(pid: calls.pid, reason: "\(what): short write") }
                }
            }
            return fd
        case .timerfd(let clock, let remaining, let interval, let ticks):
            let fd = try calls.call(.timerfdCreate, clock, nonBlocking | O_CLOEXEC, to: what)
            if ticks > 0 {
                // Expirations not read yet (TFD_IOC_SET_TICKS, _IOW('T', 0, u64)).
                let setTicks: UInt = 0x4008_5400
                try calls.withFrame { () throws(TraceeError) in
                    try calls.call(.ioctl, fd, setTicks, try calls.words([ticks]), to: "\(what): its expirations")
                }
            }
            // A periodic timer that expired and was not read yet shows nothing left (the kernel
            // moves it on when it is read): it goes on one interval from now.
            let next = remaining > 0 ? remaining : interval
            if next > 0 {
                // struct itimerspec: the interval, then the value; relative (no TFD_TIMER_ABSTIME).
                let spec: [UInt64] = [
                    interval / 1_000_000_000, interval % 1_000_000_000,
                    next / 1_000_000_000, next % 1_000_000_000,
                ]
                try calls.withFrame { () throws(TraceeError) in
                    try calls.call(.timerfdSettime, fd, 0, try calls.words(spec), 0, to: what)
                }
            }
            return fd
        case .signalfd(let mask):
            return try calls.withFrame { () throws(TraceeError) in
                try calls.call(.signalfd4, -1, try calls.words([mask]), 8, nonBlocking | O_CLOEXEC, to: what)
            }
        case .epoll(let targets):
            let fd = try calls.call(.epollCreate1, O_CLOEXEC, to: what)
            for target in targets {
                // struct epoll_event is packed on x86-64: 32-bit events, then 64-bit data.
                var event = [UInt8](repeating: 0, count: 12)
                withUnsafeBytes(of: target.events.littleEndian) { event.replaceSubrange(0..<4, with: $0) }
                withUnsafeBytes(of: target.data.littleEndian) { event.replaceSubrange(4..<12, with: $0) }
                try watch(target, event: event, in: fd, calls, what)
            }
            return fd
        case .pidfd(let pid):
            // PIDFD_NONBLOCK is O_NONBLOCK; the descriptor is always close-on-exec.
            return try calls.call(.pidfdOpen, try session.tree.current(pid), nonBlocking, to: what)
        case .deadPidfd(let key):
            // Opened on a process that stands for the dead one, which then ends and is reaped.
            if session.tree.deadProcesses[key] == nil {
                guard let root = session.tree.root else {
                    throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): the root process is not known")
                }
                session.tree.deadProcesses[key] = try root.forkDeadProcess()
            }
            let stand = session.tree.deadProcesses[key]!
            return try calls.call(.pidfdOpen, stand.inner, nonBlocking, to: what)
        case .inotify(let watches):
            // IN_NONBLOCK and IN_CLOEXEC are O_NONBLOCK and O_CLOEXEC. Non-blocking until its
            // queue is emptied of what making the watches put there.
            let fd = try calls.call(.inotifyInit1, O_NONBLOCK | O_CLOEXEC, to: what)
            try watch(watches, in: fd, calls, what)
            if !entry.nonBlocking { try calls.call(.fcntl, fd, F_SETFL, 0, to: what) }
            return fd
        case .fanotify(let flags, let eventFlags, let marks):
            // Its flags as they were, FAN_CLOEXEC (1) and FAN_NONBLOCK (2) among them: a program
            // reads them back in fdinfo. Close-on-exec until it is moved, as every other here.
            let fd = try calls.call(.fanotifyInit, flags, eventFlags, to: what)
            if flags & 1 == 0 { try calls.call(.fcntl, fd, F_SETFD, FD_CLOEXEC, to: what) }
            for mark in marks {
                try calls.withFrame { () throws(TraceeError) in try self.mark(mark, in: fd, calls, what) }
            }
            if entry.nonBlocking != (flags & 2 != 0) {
                try calls.call(.fcntl, fd, F_SETFL, entry.nonBlocking ? O_NONBLOCK : 0, to: what)
            }
            return fd
        }
    }

    /// Marks again what fanotify `fd` marked: its events, then its ignored events.
    private func mark(
        _ mark: ProcessImage.FanotifyMark, in fd: Int, _ calls: RemoteCalls, _ what: String
    )
        throws(TraceeError)
    {
        // FAN_MARK_ADD; FAN_MARK_DONT_FOLLOW (the path names the marked inode itself),
        // FAN_MARK_MOUNT or FAN_MARK_FILESYSTEM; FAN_MARK_EVICTABLE as it was.
        let add: UInt32 = 0x1
        let object: UInt32 =
            switch mark.object {
            case .inode: 0x4
            case .mount: 0x10
            case .filesystem: 0x100
            }
        let base = add | object | (mark.flags & 0x200)
        let doing = "\(what): mark \(mark.object.rawValue) \(mark.path)"
        let path = try calls.string(mark.path)
        if mark.mask != 0 || mark.ignoredMask == 0 {
            try calls.call(.fanotifyMark, fd, base, mark.mask, AT_FDCWD, path, to: doing)
        }
        if mark.ignoredMask != 0 {
            // FAN_MARK_IGNORE (0x400) where it was set so, FAN_MARK_IGNORED_MASK (0x20) otherwise;
            // FAN_MARK_IGNORED_SURV_MODIFY (0x40) as it was.
            let ignore: UInt32 = mark.flags & 0x400 != 0 ? 0x400 : 0x20
            try calls.call(
                .fanotifyMark, fd, base | ignore | (mark.flags & 0x40), mark.ignoredMask, AT_FDCWD, path,
                to: doing + " (ignored events)")
        }
    }

    /// Adds each watch to inotify `fd` at its number. A fresh inotify numbers watches 1, 2, 3...
    /// and never gives a number again until they wrap (an idr handed out cyclically): a watch
    /// added and removed takes a number, so the numbers below each watch's are taken that way
    /// first. Each removal queues an IN_IGNORED event, read out at the end with whatever else
    /// came meanwhile (an event between the checkpoint and the restart is not seen either).
    private func watch(
        _ watches: [ProcessImage.InotifyWatch], in fd: Int, _ calls: RemoteCalls, _ what: String
    )
        throws
    {
        let dontFollow: UInt32 = 0x0200_0000  // IN_DONT_FOLLOW: the path names the watched inode itself
        for watch in watches.sorted(by: { $0.wd < $1.wd }) {
            let doing = "\(what): watch \(watch.path) as \(watch.wd)"
            try calls.withFrame { () throws(TraceeError) in
                let path = try calls.string(watch.path)
                while true {
                    let wd = try calls.call(.inotifyAddWatch, fd, path, watch.mask | dontFollow, to: doing)
                    if wd == Int(watch.wd) { break }
                    guard wd < Int(watch.wd) else {
                        throw .unsupported(
                            pid: calls.pid, reason: "\(doing): the kernel numbered it \(wd), past \(watch.wd)")
                    }
                    try calls.call(.inotifyRmWatch, fd, wd, to: doing)
                }
            }
        }
        // Read until it is empty (EAGAIN): a read returns whole events only.
        try calls.withFrame { () throws(TraceeError) in
            let size = 4096
            let buffer = try calls.reserve(size)
            var read = 1
            while read > 0 { read = try calls.result(of: .read, fd, buffer, size) }
            if read != -Int(EAGAIN) { try calls.check(read, "\(what): read out what making its watches queued") }
        }
    }
}
