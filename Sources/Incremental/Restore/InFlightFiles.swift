#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// The open files a socket's queue had in flight (SCM_RIGHTS), as descriptors of the stub to
/// send again with their messages (`SocketPhase`), made once each (one open file sent twice is
/// sent twice): a descriptor of the process is sent as it is (a UNIX socket from where
/// `SocketPhase` holds it); a pipe end is opened again through the process's descriptor on the
/// same pipe, or taken from a new pipe no process holds; a regular file is opened again at its
/// path and offset. What was made is closed once the queues are sent (`close()`).
struct InFlightFiles {
    let calls: RemoteCalls
    /// The stub's pid as ld-chpox sees it: its descriptors are opened again through
    /// /proc/PID/fd.
    let pid: Int32
    /// What `SocketPhase` made, by id: the stub's descriptor on each.
    private var made: [Int: Int32] = [:]
    /// The new pipes, by inode: the stub's read and write ends, until a file in flight takes one.
    private var pipes: [UInt64: (read: Int32?, write: Int32?, holder: Int32)] = [:]
    /// Every descriptor made here, closed at the end.
    private var opened: [Int32] = []

    /// The process's descriptors in place while the sockets are made (`SocketPhase.placedBefore`).
    let placed: Set<Int32>

    init(calls: RemoteCalls, pid: Int32, placed: Set<Int32>) {
        (self.calls, self.pid, self.placed) = (calls, pid, placed)
    }

    /// Refused unless descriptor `fd` of the image is in place now.
    private func requirePlaced(_ fd: Int32, _ what: String) throws {
        guard placed.contains(fd) else {
            throw TraceeError.unsupported(
                pid: calls.pid,
                reason: "\(what): descriptor \(fd) is not a file or pipe made before the sockets")
        }
    }

    /// The stub's descriptors for the files of `rights`, `sockets` telling where each UNIX
    /// socket of this process is held.
    mutating func descriptors(
        _ rights: ProcessImage.UnixSocket.QueuedRights, sockets: [UInt64: Int32], _ what: String
    ) throws -> [Int32] {
        try rights.files.map { file throws in try descriptor(file, sockets: sockets, what) }
    }

    private mutating func descriptor(
        _ file: ProcessImage.UnixSocket.InFlightFile, sockets: [UInt64: Int32], _ what: String
    ) throws -> Int32 {
        if let fd = made[file.id] { return fd }
        let what = "\(what): make \(file.summary), in flight"
        let fd: Int32
        switch file.kind {
        case .descriptor:
            if let inode = file.socket {
                guard let holder = sockets[inode] else {
                    throw TraceeError.unsupported(
                        pid: calls.pid, reason: "\(what): socket \(inode) is not made by this process")
                }
                fd = holder
            } else {
                guard let number = file.fd else {
                    throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): the image names no descriptor")
                }
                try requirePlaced(number, what)
                fd = number
            }
            made[file.id] = fd
            return fd
        case .pipe:
            guard let inode = file.pipe else {
                throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): the image names no pipe")
            }
            if let through = file.through {
                try requirePlaced(through, what)
                fd = try reopen("/proc/\(pid)/fd/\(through)", file.flags, what)
            } else {
                if pipes[inode] == nil { try makePipe(inode, capacity: file.capacity, what) }
                let reading = file.flags & O_ACCMODE == O_RDONLY
                if reading, let end = pipes[inode]?.read {
                    pipes[inode]?.read = nil
                    fd = end
                } else if !reading, let end = pipes[inode]?.write {
                    pipes[inode]?.write = nil
                    fd = end
                } else {
                    fd = try reopen("/proc/\(pid)/fd/\(pipes[inode]?.holder ?? -1)", file.flags, what)
                }
            }
            try calls.call(.fcntl, fd, F_SETFL, file.flags, to: "\(what): set its status flags")
        case .file:
            guard let path = file.path, let offset = file.offset else {
                throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): the image names no path")
            }
            let flags = file.flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY) | O_CLOEXEC
            fd = Int32(try calls.openRecorded(path, flags: flags, to: what))
            opened.append(fd)
            try calls.call(.lseek, fd, offset, SEEK_SET, to: "\(what): set its offset")
        case .epoll:
            fd = Int32(try calls.call(.epollCreate1, O_CLOEXEC, to: what))
            opened.append(fd)
            let targets = file.targets ?? []
            let watched = file.watched ?? []
            guard targets.count == watched.count else {
                throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): its targets do not match its files")
            }
            for (target, inode) in zip(targets, watched) {
                guard let holder = sockets[inode] else {
                    throw TraceeError.unsupported(
                        pid: calls.pid, reason: "\(what): socket \(inode) is not made by this process")
                }
                try watch(target, through: holder, in: fd, what)
            }
            try calls.call(.fcntl, fd, F_SETFL, file.flags, to: "\(what): set its status flags")
        }
        made[file.id] = fd
        return fd
    }

    /// Adds `target` to epoll `epoll` under its number, the socket `holder` put there for the
    /// registration (an epoll knows a target by file and number), and whatever held that
    /// number put back after.
    private func watch(
        _ target: ProcessImage.EpollTarget, through holder: Int32, in epoll: Int32, _ what: String
    ) throws {
        let add: Int32 = 1  // EPOLL_CTL_ADD
        let doing = "\(what): watch socket descriptor \(target.fd)"
        // struct epoll_event is packed on x86-64: 32-bit events, then 64-bit data.
        var event = [UInt8](repeating: 0, count: 12)
        withUnsafeBytes(of: target.events.littleEndian) { event.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: target.data.littleEndian) { event.replaceSubrange(4..<12, with: $0) }
        let occupant = try calls.result(of: .fcntl, target.fd, F_GETFD)  // its FD_CLOEXEC, or -EBADF
        let aside = occupant >= 0 ? try calls.call(.fcntl, target.fd, F_DUPFD_CLOEXEC, 0, to: doing) : nil
        if holder != target.fd { try calls.call(.dup3, holder, target.fd, O_CLOEXEC, to: doing) }
        try calls.withFrame { () throws(TraceeError) in
            try calls.call(.epollCtl, epoll, add, target.fd, try calls.bytes(event), to: doing)
        }
        if let aside {
            try calls.call(.dup3, aside, target.fd, occupant & Int(FD_CLOEXEC) != 0 ? O_CLOEXEC : 0, to: doing)
            _ = try calls.result(of: .close, aside)
        } else if holder != target.fd {
            _ = try calls.result(of: .close, target.fd)
        }
    }

    /// A new pipe (empty) with `capacity`: both ends kept, and a copy of the read end to open
    /// more ends through.
    private mutating func makePipe(_ inode: UInt64, capacity: Int?, _ what: String) throws {
        let pair = try calls.withFrame { () throws(TraceeError) in
            let ends = try calls.reserve(8)
            try calls.call(.pipe2, ends, O_CLOEXEC, to: "\(what): create its pipe")
            return try calls.words(at: ends, count: 1)[0]
        }
        let read = Int32(truncatingIfNeeded: pair)
        let write = Int32(truncatingIfNeeded: pair >> 32)
        let holder = Int32(try calls.call(.fcntl, read, F_DUPFD_CLOEXEC, 0, to: "\(what): keep its pipe"))
        opened += [read, write, holder]
        pipes[inode] = (read, write, holder)
        if let capacity {
            try calls.call(.fcntl, holder, CHPOX_F_SETPIPE_SZ, capacity, to: "\(what): give its pipe its capacity")
        }
    }

    /// Opens `path` (a /proc descriptor link of a pipe) with the access mode of `flags`, never
    /// waiting for the other end.
    private mutating func reopen(_ path: String, _ flags: Int32, _ what: String) throws -> Int32 {
        let fd = try calls.withFrame { () throws(TraceeError) in
            let result = try calls.result(
                of: .openat, AT_FDCWD, try calls.string(path), flags & O_ACCMODE | O_NONBLOCK | O_CLOEXEC, 0)
            if result == -Int(ENXIO) {
                throw TraceeError.unsupported(
                    pid: calls.pid, reason: "\(what): the pipe has no reader to open a write end against")
            }
            try calls.check(result, what)
            return Int32(result)
        }
        opened.append(fd)
        return fd
    }

    /// Closes what was made for the messages (their files stay in flight).
    func close() {
        for fd in opened { _ = try? calls.result(of: .close, fd) }
    }
}
