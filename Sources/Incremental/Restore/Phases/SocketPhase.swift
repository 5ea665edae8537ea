#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Syscall
import Tracee

/// The UNIX socket pairs, made again after the other descriptors and before the epolls that may
/// watch them. Each pair is one socketpair(2) of its type; what each end had queued to read is
/// sent again from the other end (a datagram's or seqpacket's messages one by one, so their
/// boundaries hold); SO_PEEK_OFF and SO_PASSCRED are set again; each end is shut down as it was
/// and moved to its descriptor numbers (duplicates dup'ed from the first) with its status flags.
/// An end no descriptor holds (the program closed it) is closed last, as the program had done:
/// a stream end then reads its queue and end of file, and a reset when the closed end had data
/// left unread.
///
/// The plan decides per pair which ends, and which numbers, a process makes: a pair whose ends
/// live in two processes can be made by one of them and one end passed to the other.
public struct SocketPhase: RestartPhase {
    /// A descriptor number an end is put at.
    public struct Placement: Sendable, Equatable {
        public var fd: Int32
        public var closeOnExec: Bool
    }

    /// One end of a pair.
    public struct End: Sendable, Equatable {
        public var inode: UInt64
        /// Its descriptors, lowest first (the first is made from the pair, the others dup'ed
        /// from it); none: closed once the pair is set up.
        public var descriptors: [Placement]
        /// O_NONBLOCK and the other F_SETFL flags of its open file.
        public var statusFlags: Int32
        /// What it reads, in order (sent by the other end).
        public var queue: [Data]
        public var readShutdown: Bool
        public var writeShutdown: Bool
        public var peekOffset: Int32?
        public var passCredentials: Bool
        /// SO_SNDBUF and SO_RCVBUF as read back, when the program had set them.
        public var sendBuffer: Int32? = nil
        public var receiveBuffer: Int32? = nil
    }

    public struct Pair: Sendable, Equatable {
        public var type: ProcessImage.UnixSocket.SocketType
        /// Two ends; the pair's socketpair makes them in this order.
        public var ends: [End]
        /// An end without descriptors is closed with a byte left unread in it: the other end
        /// then reports ECONNRESET once, as it did at the checkpoint.
        public var resetPending: Bool
        /// The effective uid and gid the pair is made under: what its SO_PEERCRED names.
        public var user: UInt32
        public var group: UInt32
    }

    public var pairs: [Pair]
    /// Above every descriptor of the image: the pair's ends are kept there while their numbers
    /// are set, so that neither lands on the other's number.
    public var holderBase: Int32

    public var name: String { "UNIX socket pairs" }
    public var steps: [String] {
        pairs.enumerated().flatMap { number, pair in
            pair.ends.map { end in
                let fds = end.descriptors.map { "fd \($0.fd)" + ($0.closeOnExec ? " (close-on-exec)" : "") }
                var words = [
                    "pair \(number + 1) (UNIX \(pair.type.rawValue)) "
                        + (fds.isEmpty ? "end closed once set up" : "end " + fds.joined(separator: ", "))
                ]
                let bytes = end.queue.reduce(0) { $0 + $1.count }
                if !end.queue.isEmpty {
                    words.append(
                        pair.type == .stream
                            ? "reads \(bytes) bytes queued" : "reads \(end.queue.count) messages (\(bytes) bytes)")
                }
                let shut = [(end.readShutdown, "reading"), (end.writeShutdown, "writing")].filter(\.0).map(\.1)
                if !shut.isEmpty { words.append("shut down for " + shut.joined(separator: " and ")) }
                if end.statusFlags & O_NONBLOCK != 0 { words.append("non-blocking") }
                if end.descriptors.isEmpty && pair.resetPending { words.append("leaves a connection reset pending") }
                return words.joined(separator: ", ")
            }
        }
    }

    public init(image: ProcessImage) {
        let sockets = image.descriptors.filter { $0.kind == .socket && $0.socket != nil }
        func end(_ inode: UInt64) -> End {
            let held = sockets.filter { $0.socket?.inode == inode }.sorted { $0.fd < $1.fd }
            let socket = held.first { $0.socket?.queue != nil }?.socket ?? held.first?.socket
            return End(
                inode: inode, descriptors: held.map { .init(fd: $0.fd, closeOnExec: $0.flags & O_CLOEXEC != 0) },
                statusFlags: (held.first?.flags ?? 0) & DescriptorPhase.statusFlags, queue: socket?.queue ?? [],
                readShutdown: socket?.readShutdown == true, writeShutdown: socket?.writeShutdown == true,
                peekOffset: socket?.peekOffset, passCredentials: socket?.passCredentials == true,
                sendBuffer: socket?.sendBuffer, receiveBuffer: socket?.receiveBuffer)
        }
        var pairs: [Pair] = []
        var made: Set<UInt64> = []
        for descriptor in sockets.sorted(by: { $0.fd < $1.fd }) {
            guard let socket = descriptor.socket, !made.contains(socket.inode) else { continue }
            made.insert(socket.inode)
            // A closed peer has inode 0 in the image: an end made only to be closed.
            let closed = End(
                inode: 0, descriptors: [], statusFlags: 0, queue: [], readShutdown: false, writeShutdown: false,
                peekOffset: nil, passCredentials: false)
            let peer = socket.peer == 0 ? closed : end(socket.peer)
            if socket.peer != 0 { made.insert(socket.peer) }
            let ids = socket.peerCredentials ?? [image.credentials.user.effective, image.credentials.group.effective]
            pairs.append(
                .init(
                    type: socket.type, ends: [end(socket.inode), peer], resetPending: socket.resetPending == true,
                    user: ids.first ?? 0, group: ids.last ?? 0))
        }
        self.pairs = pairs
        holderBase = (image.descriptors.map(\.fd).max() ?? 2) + 1
    }

    public func run(in session: RestartSession) throws {
        guard !pairs.isEmpty else { return }
        let status = try ProcFS.status(session.pid)
        let ids = Ids(users: status.userIDs, groups: status.groupIDs)
        for pair in pairs { try make(pair, ids, session.calls) }
    }

    /// The stub's real, effective, saved and filesystem ids (/proc/PID/status's Uid and Gid).
    struct Ids {
        var users: [UInt32]
        var groups: [UInt32]
        var user: UInt32 { users.count == 4 ? users[1] : 0 }
        var group: UInt32 { groups.count == 4 ? groups[1] : 0 }
    }

    /// Runs `body` with the stub's effective ids set to `user` and `group` (a socketpair takes
    /// its SO_PEERCRED from them), then puts its ids back as they were, the filesystem ids
    /// too (setresuid moves them with the effective ones). Needs root when they differ.
    private func making<T>(
        as user: UInt32, _ group: UInt32, _ ids: Ids, _ calls: RemoteCalls, _ what: String,
        _ body: () throws -> T
    ) throws -> T {
        guard user != ids.user || group != ids.group, ids.users.count == 4, ids.groups.count == 4 else {
            return try body()
        }
        let keep = -1
        try calls.call(.setresgid, keep, group, keep, to: "\(what): take gid \(group), which its SO_PEERCRED names")
        try calls.call(.setresuid, keep, user, keep, to: "\(what): take uid \(user), which its SO_PEERCRED names")
        let result = try body()
        try calls.call(.setresuid, keep, ids.user, keep, to: "\(what): take back uid \(ids.user)")
        try calls.call(.setresgid, keep, ids.group, keep, to: "\(what): take back gid \(ids.group)")
        // setfsuid and setfsgid answer the previous id, never an error.
        _ = try calls.result(of: .setfsuid, ids.users[3])
        _ = try calls.result(of: .setfsgid, ids.groups[3])
        return result
    }

    /// socketpair(2)'s type argument.
    static func typeNumber(_ type: ProcessImage.UnixSocket.SocketType) -> Int32 {
        switch type {
        case .stream: Int32(SOCK_STREAM.rawValue)
        case .datagram: Int32(SOCK_DGRAM.rawValue)
        case .seqpacket: Int32(SOCK_SEQPACKET.rawValue)
        }
    }

    private func make(_ pair: Pair, _ ids: Ids, _ calls: RemoteCalls) throws {
        let numbers = pair.ends.flatMap(\.descriptors).map { "\($0.fd)" }.joined(separator: ", ")
        let what = "make the UNIX \(pair.type.rawValue) socket pair of descriptor \(numbers)"
        let made = try making(as: pair.user, pair.group, ids, calls, what) {
            try calls.withFrame { () throws(TraceeError) in
                let ends = try calls.reserve(8)
                try calls.call(
                    .socketpair, AF_UNIX, Self.typeNumber(pair.type) | Int32(SOCK_CLOEXEC.rawValue), 0, ends, to: what)
                return try calls.words(at: ends, count: 1)[0]
            }
        }
        // Both ends above every number of the image first: the kernel may have handed out the
        // number the other end is to take.
        var holders: [Int32] = []
        defer { for holder in holders { _ = try? calls.result(of: .close, holder) } }
        for fd in [Int32(truncatingIfNeeded: made), Int32(truncatingIfNeeded: made >> 32)] {
            holders.append(Int32(try calls.call(.fcntl, fd, F_DUPFD_CLOEXEC, holderBase, to: what)))
            _ = try calls.result(of: .close, fd)
        }
        // Buffer sizes first: the sender's bounds what the queue it fills may hold.
        for (index, end) in pair.ends.enumerated() {
            if let size = end.sendBuffer {
                try setBuffer(
                    .sendBufferForce, else: .sendBuffer, size, on: holders[index], calls, "\(what): SO_SNDBUF")
            }
            if let size = end.receiveBuffer {
                try setBuffer(
                    .receiveBufferForce, else: .receiveBuffer, size, on: holders[index], calls, "\(what): SO_RCVBUF")
            }
        }
        for (index, end) in pair.ends.enumerated() {
            for message in end.queue {
                try send(message, from: holders[1 - index], pair.type, calls, "\(what): queue what it held")
            }
            if let offset = end.peekOffset {
                try setOption(.peekOffset, offset, on: holders[index], calls, "\(what): its SO_PEEK_OFF")
            }
            if end.passCredentials {
                try setOption(.passCredentials, 1, on: holders[index], calls, "\(what): its SO_PASSCRED")
            }
        }
        if pair.resetPending, let closed = pair.ends.firstIndex(where: { $0.descriptors.isEmpty }) {
            try send(Data([0]), from: holders[1 - closed], pair.type, calls, "\(what): a byte left in its closed end")
        }
        for (index, end) in pair.ends.enumerated() where !end.descriptors.isEmpty {
            let how: Int32? =
                end.readShutdown && end.writeShutdown
                ? Int32(SHUT_RDWR) : end.readShutdown ? Int32(SHUT_RD) : end.writeShutdown ? Int32(SHUT_WR) : nil
            if let how { try calls.call(.shutdown, holders[index], how, to: "\(what): shut it down as it was") }
        }
        for (index, end) in pair.ends.enumerated() {
            guard let first = end.descriptors.first else { continue }
            try calls.call(.dup3, holders[index], first.fd, first.closeOnExec ? O_CLOEXEC : 0, to: what)
            try calls.call(.fcntl, first.fd, F_SETFL, end.statusFlags, to: "\(what): set its status flags")
            for other in end.descriptors.dropFirst() {
                try calls.call(
                    .dup3, first.fd, other.fd, other.closeOnExec ? O_CLOEXEC : 0,
                    to: "\(what): descriptor \(other.fd), a duplicate of \(first.fd)")
            }
        }
    }

    /// Bytes sent in one remote call from the scratch pages; a longer message goes through a
    /// mapping of its own, unmapped after.
    static let scratchPiece = 8192

    /// Sends `message` from `holder` without waiting: one message of a datagram or seqpacket
    /// socket, or a stream's bytes, as many calls as it takes.
    private func send(
        _ message: Data, from holder: Int32, _ type: ProcessImage.UnixSocket.SocketType, _ calls: RemoteCalls,
        _ what: String
    ) throws {
        let bytes = [UInt8](message)
        let flags = Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL)
        func sendAll(at address: UInt64) throws(TraceeError) {
            var sent = 0
            repeat {
                let count = try calls.result(
                    of: .sendto, holder, address + UInt64(sent), bytes.count - sent, flags, 0, 0)
                if count == -Int(EAGAIN) {
                    throw .unsupported(
                        pid: calls.pid,
                        reason: "\(what): the queue does not fit in the new socket (its sender's SO_SNDBUF, "
                            + "net.core.wmem_max)")
                }
                try calls.check(count, what)
                guard type == .stream ? count > 0 || bytes.isEmpty : count == bytes.count else {
                    throw .unsupported(pid: calls.pid, reason: "\(what): sent \(count) of \(bytes.count) bytes")
                }
                sent += count
            } while sent < bytes.count
        }
        if bytes.count <= Self.scratchPiece {
            try calls.withFrame { () throws(TraceeError) in
                try sendAll(at: bytes.isEmpty ? try calls.reserve(1) : try calls.bytes(bytes))
            }
            return
        }
        let size = (bytes.count + Page.size - 1) / Page.size * Page.size
        let buffer = try calls.call(
            .mmap, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, to: "\(what): a buffer")
        defer { _ = try? calls.result(of: .munmap, buffer, size) }
        try calls.write(bytes, at: UInt64(buffer))
        try sendAll(at: UInt64(buffer))
    }

    /// Sets a buffer size as getsockopt read it back (the kernel doubles what it is given):
    /// beyond the system's maximum where the stub may (`force`, CAP_NET_ADMIN), else as far as
    /// the maximum lets it.
    private func setBuffer(
        _ force: FileDescriptor.SocketOption, else plain: FileDescriptor.SocketOption, _ size: Int32, on fd: Int32,
        _ calls: RemoteCalls, _ what: String
    ) throws {
        let forced = try calls.withFrame { () throws(TraceeError) in
            try calls.result(of: .setsockopt, fd, SOL_SOCKET, force.rawValue, try calls.value(size / 2), 4)
        }
        if forced < 0 { try setOption(plain, size / 2, on: fd, calls, what) }
    }

    private func setOption(
        _ option: FileDescriptor.SocketOption, _ value: Int32, on fd: Int32, _ calls: RemoteCalls, _ what: String
    ) throws {
        try calls.withFrame { () throws(TraceeError) in
            let address = try calls.value(value)
            try calls.call(.setsockopt, fd, SOL_SOCKET, option.rawValue, address, 4, to: what)
        }
    }
}
