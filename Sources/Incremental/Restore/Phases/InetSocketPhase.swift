#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Syscall
import Tracee

/// The IPv4 and IPv6 sockets, made after the other descriptors and before the epolls that may
/// watch them: socket(2) of the family and protocol, its options and socket filter set again,
/// bound to its address (a listening socket's port must be free: the checkpointed process's
/// socket is gone), then listen(2) with its backlog, connect(2) for a connected datagram
/// socket, shutdown(2) as it was. A connection made again closed (`State.closed`, --tcp-close)
/// is a new socket with its options, neither bound nor connected, shut down both ways: the
/// program's next read returns end of file, its next write fails with EPIPE, and poll(2) says
/// it is readable and hung up, as for a connection its peer closed. An established TCP connection is made in TCP repair mode
/// (no packet leaves): bound, its sequence numbers set, connected without a handshake, its
/// negotiated options, timestamp clock and window set, its queues written back; it leaves
/// repair mode in `TcpResumePhase`, once every process of the tree has made its sockets, so
/// that no end is sent a packet before its peer exists again. Each socket is then put at its
/// descriptor numbers with its status flags.
public struct InetSocketPhase: RestartPhase {
    public struct Made: Sendable, Equatable {
        public var socket: ProcessImage.InetSocket
        /// Its descriptors, lowest first; the others are dup'ed from the first.
        public var descriptors: [SocketPhase.Placement]
        public var statusFlags: Int32
        /// SO_REUSEADDR and SO_REUSEPORT set on for bind(2) only, then back to the recorded
        /// value (0 when none is recorded): another socket of the image binds its port with
        /// the option, which the kernel lets share the port only when both hold it as they
        /// bind. A program that set it before bind and cleared it after (zdtm
        /// socket-tcp-reuseport) kept its port shared.
        public var bindSharing: [ProcessImage.InetSocket.Option] = []
    }

    public var sockets: [Made]
    /// Above every descriptor of the image: a socket is kept there while it is set up.
    public var holderBase: Int32

    public var name: String { "IPv4 and IPv6 sockets" }
    public var steps: [String] {
        sockets.map { made in
            let fds = made.descriptors.map { "fd \($0.fd)" + ($0.closeOnExec ? " (close-on-exec)" : "") }
            return fds.joined(separator: ", ") + ": " + made.socket.summary
                + (made.statusFlags & O_NONBLOCK != 0 ? ", non-blocking" : "")
        }
    }

    public init(image: ProcessImage) {
        var sockets: [Made] = []
        var made: Set<UInt64> = []
        let held = image.descriptors.filter { $0.kind == .inetSocket && $0.inet != nil }.sorted { $0.fd < $1.fd }
        for descriptor in held {
            guard let socket = descriptor.inet, !made.contains(socket.inode) else { continue }
            made.insert(socket.inode)
            let all = held.filter { $0.inet?.inode == socket.inode }
            sockets.append(
                Made(
                    socket: socket, descriptors: all.map { .init(fd: $0.fd, closeOnExec: $0.flags & O_CLOEXEC != 0) },
                    statusFlags: descriptor.flags & DescriptorPhase.statusFlags))
        }
        for k in sockets.indices { sockets[k].bindSharing = Self.bindSharing(of: sockets[k].socket, among: sockets) }
        self.sockets = sockets
        holderBase = (image.descriptors.map(\.fd).max() ?? 2) + 1
    }

    public func run(in session: RestartSession) throws {
        for made in sockets { try make(made, session.calls) }
    }

    static let sharingLabels = ["SO_REUSEADDR", "SO_REUSEPORT"]

    /// The sharing options `socket` needs on while it binds: those another socket of the image
    /// bound to the same port (and transport) holds. A connection (repair mode binds by force)
    /// needs none.
    static func bindSharing(
        of socket: ProcessImage.InetSocket, among sockets: [Made]
    ) -> [ProcessImage.InetSocket.Option] {
        guard socket.connection == nil, socket.state != .closed, let port = socket.local?.port, port != 0 else {
            return []
        }
        let sharers = sockets.map(\.socket).filter { other in
            other.inode != socket.inode && other.connection == nil && other.state != .closed
                && other.transport == socket.transport
                && other.local?.port == port
        }
        guard !sharers.isEmpty else { return [] }
        return sharingLabels.compactMap { label in
            let held = ([socket] + sharers).contains { member in
                member.options?.contains { $0.label == label && $0.value != 0 } ?? false
            }
            guard held else { return nil }
            let own = socket.options?.first { $0.label == label }
            return ProcessImage.InetSocket.Option(
                label: label, level: 1, name: label == "SO_REUSEADDR" ? SO_REUSEADDR : SO_REUSEPORT,
                value: own?.value ?? 0)
        }
    }

    static let tcpRepair = (level: Int32(6), name: TCPRepair.repair.name)

    private func make(_ made: Made, _ calls: RemoteCalls) throws {
        let socket = made.socket
        let what = "make the socket of descriptor \(made.descriptors.first?.fd ?? -1) (\(socket.summary))"
        let domain = socket.family == .ipv4 ? AF_INET : AF_INET6
        let (type, proto): (Int32, Int32) =
            switch socket.transport {
            case .tcp: (Int32(SOCK_STREAM.rawValue), Int32(IPPROTO_TCP))
            case .udp: (Int32(SOCK_DGRAM.rawValue), Int32(IPPROTO_UDP))
            case .udplite: (Int32(SOCK_DGRAM.rawValue), 136)
            case .ping:
                (
                    Int32(SOCK_DGRAM.rawValue),
                    socket.family == .ipv4 ? Int32(IPPROTO_ICMP) : Int32(IPPROTO_ICMPV6)
                )
            case .raw: (Int32(SOCK_RAW.rawValue), socket.rawProtocol ?? 0)
            }
        let opened = try calls.call(.socket, domain, type | Int32(SOCK_CLOEXEC.rawValue), proto, to: what)
        let fd = Int32(try calls.call(.fcntl, opened, F_DUPFD_CLOEXEC, holderBase, to: what))
        _ = try calls.result(of: .close, opened)
        var placed = false
        defer { if !placed { _ = try? calls.result(of: .close, fd) } }
        let connection = socket.connection
        if connection != nil {
            try set(
                fd, level: Self.tcpRepair.level, name: Self.tcpRepair.name, 1, calls, "\(what): enter TCP repair mode")
        }
        if let filter = socket.filter { try attach(filter, to: fd, calls, what) }
        // SO_REUSEADDR would undo repair mode's forced reuse (the listener holds the port):
        // `TcpResumePhase` sets it once the connection leaves repair mode.
        for option in socket.options ?? [] where connection == nil || option.label != "SO_REUSEADDR" {
            try set(option, on: fd, calls, what)
        }
        for option in made.bindSharing {
            try set(fd, level: option.level, name: option.name, 1, calls, "\(what): \(option.label) on to bind")
        }
        // A closed connection is not bound: its port may be its listener's, or another's by now.
        if let local = socket.local, socket.state != .closed {
            // An address that is not the host's was bound with IP_FREEBIND, perhaps turned
            // off since: on while binding, then as it was.
            let freebind =
                socket.family == .ipv4 ? (level: Int32(0), name: Int32(15)) : (level: Int32(41), name: Int32(78))
            let freed = !(socket.options ?? []).contains {
                ($0.label == "IP_FREEBIND" || $0.label == "IPV6_FREEBIND") && $0.value != 0
            }
            if freed {
                try set(fd, level: freebind.level, name: freebind.name, 1, calls, "\(what): IP_FREEBIND to bind")
            }
            let result = try calls.withFrame { () throws(TraceeError) in
                let address = try Self.sockaddr(local, family: socket.family)
                return try calls.result(of: .bind, fd, try calls.bytes(address), address.count)
            }
            if result < 0 {
                let reason =
                    result == -Int(EADDRINUSE)
                    ? "another socket holds \(local) (a process that took the port since the checkpoint?)"
                    : "\(Errno(rawValue: Int32(-result)))"
                throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): cannot bind it to \(local): \(reason)")
            }
            if freed { try set(fd, level: freebind.level, name: freebind.name, 0, calls, "\(what): IP_FREEBIND off") }
        }
        switch socket.state {
        case .unconnected, .closed: break
        case .listening:
            try calls.call(.listen, fd, socket.backlog ?? 128, to: "\(what): listen")
        case .synSent:
            guard let remote = socket.remote else {
                throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): the image names no peer")
            }
            // Non-blocking for the connect (the descriptor's own flags, O_NONBLOCK among them,
            // are set when it is placed): it answers EINPROGRESS, its SYN on the way.
            try calls.call(.fcntl, fd, F_SETFL, O_NONBLOCK, to: "\(what): make it non-blocking to connect")
            let result = try calls.withFrame { () throws(TraceeError) in
                let address = try Self.sockaddr(remote, family: socket.family)
                return try calls.result(of: .connect, fd, try calls.bytes(address), address.count)
            }
            if result != -Int(EINPROGRESS) {
                try calls.check(result, "\(what): connect to \(remote) again")
                throw TraceeError.unsupported(
                    pid: calls.pid, reason: "\(what): connect to \(remote) again did not stay in progress")
            }
        case .connected, .established, .finWait1, .finWait2, .closeWait, .lastAck, .closing:
            guard let remote = socket.remote else {
                throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): the image names no peer")
            }
            if let connection {
                try setQueue(fd, TCPRepair.receiveQueue, calls, what)
                try set(
                    fd, level: 6, name: TCPRepair.queueSequence.name,
                    Int32(
                        bitPattern: Self.receiveSequence(connection, socket.state)
                            &- UInt32(connection.receiveQueue.count)),
                    calls, "\(what): its receive sequence")
                try setQueue(fd, TCPRepair.sendQueue, calls, what)
                try set(
                    fd, level: 6, name: TCPRepair.queueSequence.name,
                    Int32(
                        bitPattern: Self.sendSequence(connection, socket.state) &- UInt32(connection.sendQueue.count)),
                    calls, "\(what): its send sequence")
            }
            try calls.withFrame { () throws(TraceeError) in
                let address = try Self.sockaddr(remote, family: socket.family)
                try calls.call(
                    .connect, fd, try calls.bytes(address), address.count, to: "\(what): connect to \(remote)")
            }
            if let connection { try repair(connection, state: socket.state, fd, calls, what) }
        }
        // After listen(2): a listening socket joins its port's SO_REUSEPORT group there.
        for option in made.bindSharing where option.value != 1 {
            try set(fd, level: option.level, name: option.name, option.value ?? 0, calls, "\(what): \(option.label)")
        }
        let how: Int32? =
            socket.state == .closed || socket.readShutdown == true && socket.writeShutdown == true
            ? Int32(SHUT_RDWR)
            : socket.readShutdown == true ? Int32(SHUT_RD) : socket.writeShutdown == true ? Int32(SHUT_WR) : nil
        // A connection's FINs and SHUT_RD are made again in `TcpResumePhase`.
        if let how, connection == nil {
            // An unconnected socket answers ENOTCONN, and is shut down all the same.
            let result = try calls.result(of: .shutdown, fd, how)
            if result != -Int(ENOTCONN) || (socket.state != .unconnected && socket.state != .closed) {
                try calls.check(result, "\(what): shut it down as it was")
            }
        }
        guard let first = made.descriptors.first else { return }
        try calls.call(.dup3, fd, first.fd, first.closeOnExec ? O_CLOEXEC : 0, to: what)
        placed = true
        _ = try calls.result(of: .close, fd)
        try calls.call(.fcntl, first.fd, F_SETFL, made.statusFlags, to: "\(what): set its status flags")
        for other in made.descriptors.dropFirst() {
            try calls.call(
                .dup3, first.fd, other.fd, other.closeOnExec ? O_CLOEXEC : 0,
                to: "\(what): descriptor \(other.fd), a duplicate of \(first.fd)")
        }
    }

    /// The sequence numbers the connection is made with: without the FINs, which
    /// `TcpResumePhase` has the socket send (its own) and receive (the peer's) again.
    static func sendSequence(
        _ connection: ProcessImage.InetSocket.Connection, _ state: ProcessImage.InetSocket.State
    )
        -> UInt32
    {
        connection.sendSequence &- (state.sentFin ? 1 : 0)
    }

    static func receiveSequence(
        _ connection: ProcessImage.InetSocket.Connection, _ state: ProcessImage.InetSocket.State
    ) -> UInt32 {
        connection.receiveSequence &- (state.receivedFin ? 1 : 0)
    }

    /// TCP_REPAIR_WINDOW's values while the peer's FIN is not received again: the kernel takes
    /// no rcv_wup beyond rcv_nxt, which is one short of the recorded one until the FIN comes,
    /// so the window's right edge (rcv_wup + rcv_wnd) is kept with rcv_wup moved back.
    static func windowBeforeFin(
        _ connection: ProcessImage.InetSocket.Connection, _ state: ProcessImage.InetSocket.State
    ) -> [UInt32] {
        var window = connection.window
        guard state.receivedFin, window.count == 5 else { return window }
        let next = receiveSequence(connection, state)
        let ahead = Int32(bitPattern: window[4] &- next)
        if ahead > 0 {
            window[4] = next
            window[3] = window[3] &+ UInt32(ahead)
        }
        return window
    }

    /// The connection's negotiated options, timestamp clock, queues and window, in repair mode.
    private func repair(
        _ connection: ProcessImage.InetSocket.Connection, state: ProcessImage.InetSocket.State, _ fd: Int32,
        _ calls: RemoteCalls, _ what: String
    )
        throws
    {
        // struct tcp_repair_opt pairs: TCPOPT_MSS 2, TCPOPT_WINDOW 3, TCPOPT_SACK_PERM 4,
        // TCPOPT_TIMESTAMP 8.
        var options: [UInt32] = [2, connection.mss]
        if let send = connection.sendScale, let receive = connection.receiveScale {
            options += [3, UInt32(send) | UInt32(receive) << 16]
        }
        if connection.sack { options += [4, 0] }
        if connection.timestamps { options += [8, 0] }
        try calls.withFrame { () throws(TraceeError) in
            try calls.call(
                .setsockopt, fd, 6, TCPRepair.options.name, try calls.value(options), options.count * 4,
                to: "\(what): its negotiated TCP options")
        }
        if let timestamp = connection.timestamp {
            try set(
                fd, level: 6, name: TCPRepair.timestamp.name, Int32(bitPattern: timestamp), calls,
                "\(what): its timestamp")
        }
        // Room for both queues whatever the buffers were: `TcpResumePhase` sets them back.
        let room = Int32(clamping: 2 * (connection.sendQueue.count + connection.receiveQueue.count) + (4 << 20))
        try set(fd, level: 1, name: SO_SNDBUFFORCE, room, calls, "\(what): room for its send queue")
        try set(fd, level: 1, name: SO_RCVBUFFORCE, room, calls, "\(what): room for its receive queue")
        try setQueue(fd, TCPRepair.receiveQueue, calls, what)
        try InetSocketPhase.send(connection.receiveQueue, from: fd, calls, "\(what): its receive queue")
        try setQueue(fd, TCPRepair.sendQueue, calls, what)
        let sent = connection.sendQueue.prefix(connection.sendQueue.count - connection.unsent)
        try InetSocketPhase.send(Data(sent), from: fd, calls, "\(what): its send queue")
        guard connection.window.count == 5 else { return }
        try calls.withFrame { () throws(TraceeError) in
            try calls.call(
                .setsockopt, fd, 6, TCPRepair.window.name, try calls.value(Self.windowBeforeFin(connection, state)),
                20, to: "\(what): its window")
        }
    }

    private func setQueue(_ fd: Int32, _ queue: Int32, _ calls: RemoteCalls, _ what: String) throws {
        try set(fd, level: 6, name: TCPRepair.queue.name, queue, calls, "\(what): select a queue to repair")
    }

    func set(_ fd: Int32, level: Int32, name: Int32, _ value: Int32, _ calls: RemoteCalls, _ what: String) throws {
        try calls.withFrame { () throws(TraceeError) in
            try calls.call(.setsockopt, fd, level, name, try calls.value(value), 4, to: what)
        }
    }

    /// Sets an option as it was read. A buffer size is read back doubled: set at half, beyond
    /// the system's maximum where the stub may (SO_SNDBUFFORCE, SO_RCVBUFFORCE).
    private func set(
        _ option: ProcessImage.InetSocket.Option, on fd: Int32, _ calls: RemoteCalls, _ what: String
    )
        throws
    {
        let what = "\(what): its option \(option.label)"
        if let bytes = option.bytes {
            try calls.withFrame { () throws(TraceeError) in
                let address = bytes.isEmpty ? try calls.reserve(1) : try calls.bytes(bytes)
                try calls.call(.setsockopt, fd, option.level, option.name, address, bytes.count, to: what)
            }
            return
        }
        guard let value = option.value else { return }
        if option.level == 1, option.name == SO_SNDBUF || option.name == SO_RCVBUF {
            let force = option.name == SO_SNDBUF ? SO_SNDBUFFORCE : SO_RCVBUFFORCE
            let forced = try calls.withFrame { () throws(TraceeError) in
                try calls.result(of: .setsockopt, fd, 1, force, try calls.value(value / 2), 4)
            }
            if forced >= 0 { return }
            try set(fd, level: 1, name: option.name, value / 2, calls, what)
            return
        }
        try set(fd, level: option.level, name: option.name, value, calls, what)
    }

    /// SO_ATTACH_FILTER with the recorded instructions (struct sock_fprog: a count, then a
    /// pointer to them).
    private func attach(_ filter: [UInt8], to fd: Int32, _ calls: RemoteCalls, _ what: String) throws {
        try calls.withFrame { () throws(TraceeError) in
            let instructions = try calls.bytes(filter)
            let program = try calls.words([UInt64(filter.count / 8), instructions])
            try calls.call(.setsockopt, fd, 1, SO_ATTACH_FILTER, program, 16, to: "\(what): its socket filter")
        }
    }

    /// struct sockaddr_in or sockaddr_in6 of `address`.
    static func sockaddr(
        _ address: ProcessImage.InetSocket.Address, family: ProcessImage.InetSocket.Family
    )
        throws(TraceeError) -> [UInt8]
    {
        let port = [UInt8(address.port >> 8), UInt8(address.port & 0xff)]
        func little(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8((value >> ($0 * 8)) & 0xff) } }
        if family == .ipv4 {
            var host = [UInt8](repeating: 0, count: 4)
            guard inet_pton(AF_INET, address.host, &host) == 1 else {
                throw .malformed(file: "image", reason: "the IPv4 address \(address.host)")
            }
            return [UInt8(AF_INET), 0] + port + host + [UInt8](repeating: 0, count: 8)
        }
        var host = [UInt8](repeating: 0, count: 16)
        guard inet_pton(AF_INET6, address.host, &host) == 1 else {
            throw .malformed(file: "image", reason: "the IPv6 address \(address.host)")
        }
        return [UInt8(AF_INET6), 0] + port + little(address.flowInfo ?? 0) + host + little(address.scope ?? 0)
    }

    /// Writes `bytes` to a TCP socket from the stub (in repair mode: into the queue selected),
    /// as many calls as it takes.
    static func send(_ message: Data, from fd: Int32, _ calls: RemoteCalls, _ what: String) throws {
        let bytes = [UInt8](message)
        guard !bytes.isEmpty else { return }
        let flags = Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL)
        let size = (bytes.count + Page.size - 1) / Page.size * Page.size
        let buffer = try calls.call(
            .mmap, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, to: "\(what): a buffer")
        defer { _ = try? calls.result(of: .munmap, buffer, size) }
        try calls.write(bytes, at: UInt64(buffer))
        var sent = 0
        while sent < bytes.count {
            let count = try calls.result(
                of: .sendto, fd, UInt64(buffer) + UInt64(sent), bytes.count - sent, flags, 0, 0)
            if count == -Int(EAGAIN) {
                throw TraceeError.unsupported(
                    pid: calls.pid, reason: "\(what): the queue does not fit in the new socket (SO_SNDBUF/SO_RCVBUF)")
            }
            try calls.check(count, what)
            guard count > 0 else { throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): sent nothing") }
            sent += count
        }
    }
}

/// The TCP connections leave repair mode, once every process of the tree has made its sockets
/// (so each peer exists again): a window probe tells the peer the window; the bytes the program
/// had written and the kernel not sent yet are written now, and SO_REUSEADDR, which leaving
/// repair mode clears, is set again.
///
/// A half-closed connection was made established, its sequence numbers short of its FINs, and
/// is brought into its state here as TCP would: this end's FIN by shutdown(2) (in repair mode
/// with the send queue selected when it had been sent: counted sent, not transmitted, resent
/// by the retransmit timer as it would have been; after the unsent bytes, out of repair mode,
/// when it was still queued), the peer's FIN, and the ack of this end's FIN (FIN_WAIT2), as
/// segments the socket receives from the peer's address (`TCPSegment`) while it is in repair
/// mode, in the order the states were reached (CLOSING: its FIN, then the peer's; LAST_ACK:
/// the peer's, then its own). The recorded window is set again after them; the socket's ack of
/// the peer's FIN goes to the peer (restored already), which has it.
public struct TcpResumePhase: RestartPhase {
    public struct Resumed: Sendable, Equatable {
        public var fd: Int32
        public var unsent: Data
        public var reuseAddress: Int32?
        /// SO_SNDBUF, SO_RCVBUF and SO_BUF_LOCK as they were.
        public var buffers: [Int32]?
        public var socket: ProcessImage.InetSocket
    }

    public var connections: [Resumed]

    public var name: String { "TCP connections resumed" }
    public var steps: [String] {
        connections.map {
            "fd \($0.fd): leaves repair mode"
                + ($0.unsent.isEmpty ? "" : ", sends \($0.unsent.count) bytes not sent yet")
                + ($0.socket.state == .established ? "" : ", goes to \($0.socket.state.rawValue.uppercased())")
        }
    }

    public init(image: ProcessImage) {
        connections = InetSocketPhase(image: image).sockets.compactMap { made in
            guard let connection = made.socket.connection, let fd = made.descriptors.first?.fd else { return nil }
            return Resumed(
                fd: fd, unsent: connection.sendQueue.suffix(connection.unsent),
                reuseAddress: made.socket.options?.first { $0.label == "SO_REUSEADDR" }?.value,
                buffers: connection.buffers, socket: made.socket)
        }
    }

    public func run(in session: RestartSession) throws {
        let calls = session.calls
        for connection in connections {
            let what = "resume the TCP connection of descriptor \(connection.fd)"
            let closing = HalfClose(connection.socket)
            if let closing {
                try closing.inRepair(connection.fd, session, what)
            }
            try calls.withFrame { () throws(TraceeError) in
                try calls.call(
                    .setsockopt, connection.fd, 6, TCPRepair.repair.name, try calls.value(Int32(0)), 4, to: what)
            }
            try InetSocketPhase.send(Data(connection.unsent), from: connection.fd, calls, "\(what): data not sent yet")
            if let buffers = connection.buffers, buffers.count == 3 {
                let names = [SO_SNDBUFFORCE, SO_RCVBUFFORCE, 72]  // SO_BUF_LOCK last: a size sets its lock
                for (name, value) in zip(names, [buffers[0] / 2, buffers[1] / 2, buffers[2]]) {
                    try calls.withFrame { () throws(TraceeError) in
                        try calls.call(
                            .setsockopt, connection.fd, 1, name, try calls.value(value), 4,
                            to: "\(what): set its buffers back")
                    }
                }
            }
            if let reuse = connection.reuseAddress {
                try calls.withFrame { () throws(TraceeError) in
                    try calls.call(.setsockopt, connection.fd, 1, SO_REUSEADDR, try calls.value(reuse), 4, to: what)
                }
            }
            if let closing {
                try closing.afterRepair(connection.fd, session, what)
            }
        }
    }
}

/// How a half-closed connection, or one shut down for reading, is brought from ESTABLISHED
/// into its state (`TcpResumePhase`).
struct HalfClose {
    typealias Socket = ProcessImage.InetSocket
    var socket: Socket
    var connection: Socket.Connection
    var state: Socket.State

    init?(_ socket: Socket) {
        guard let connection = socket.connection,
            socket.state != .established || socket.readShutdown == true
        else { return nil }
        (self.socket, self.connection, self.state) = (socket, connection, socket.state)
    }

    /// This end's FIN is counted sent in repair mode: it had left (its sequence number is below
    /// snd_nxt), not waiting behind unsent bytes.
    var finSentInRepair: Bool { state.sentFin && connection.finQueued != true }

    /// snd_una as made again: the first byte not acknowledged.
    var firstUnacknowledged: UInt32 {
        InetSocketPhase.sendSequence(connection, state) &- UInt32(connection.sendQueue.count)
    }

    func inRepair(_ fd: Int32, _ session: RestartSession, _ what: String) throws {
        let ownFirst = state == .finWait1 || state == .finWait2 || state == .closing
        if finSentInRepair, ownFirst {
            try shutInRepair(fd, session, what)
        }
        // CLOSING with its FIN still queued: the peer's FIN comes after it (`afterRepair`).
        let finInRepair = state.receivedFin && !(state == .closing && !finSentInRepair)
        if finInRepair {
            try receive(
                [.fin, .ack], sequence: InetSocketPhase.receiveSequence(connection, state),
                acknowledgment: firstUnacknowledged, expecting: state == .lastAck ? .closeWait : state, fd, session,
                what)
        }
        if finSentInRepair, state == .lastAck {
            try shutInRepair(fd, session, what)
        }
        if state == .finWait2 {
            try receive(
                [.ack], sequence: connection.receiveSequence, acknowledgment: connection.sendSequence,
                expecting: .finWait2, fd, session, what)
        }
        if finInRepair || state == .finWait2, connection.window.count == 5 {
            // The segments moved the window: as it was.
            let calls = session.calls
            try calls.withFrame { () throws(TraceeError) in
                try calls.call(
                    .setsockopt, fd, 6, TCPRepair.window.name, try calls.value(connection.window), 20,
                    to: "\(what): its window")
            }
        }
    }

    func afterRepair(_ fd: Int32, _ session: RestartSession, _ what: String) throws {
        let calls = session.calls
        if state.sentFin, !finSentInRepair {
            try calls.call(.shutdown, fd, Int32(SHUT_WR), to: "\(what): its FIN, after the bytes not sent yet")
        }
        if state == .closing, !finSentInRepair {
            try receive(
                [.fin, .ack], sequence: InetSocketPhase.receiveSequence(connection, state),
                acknowledgment: firstUnacknowledged, expecting: .closing, fd, session, what)
        }
        if socket.readShutdown == true, !state.receivedFin {
            try calls.call(.shutdown, fd, Int32(SHUT_RD), to: "\(what): shut it down for reading")
        }
        try wait(for: state, fd, session, what)
    }

    /// shutdown(SHUT_WR) with the send queue selected: the FIN is queued and counted sent.
    private func shutInRepair(_ fd: Int32, _ session: RestartSession, _ what: String) throws {
        let calls = session.calls
        for queue in [TCPRepair.sendQueue, 0] {  // TCP_NO_QUEUE after
            try calls.withFrame { () throws(TraceeError) in
                try calls.call(
                    .setsockopt, fd, 6, TCPRepair.queue.name, try calls.value(queue), 4,
                    to: "\(what): select a queue to repair")
            }
            if queue == TCPRepair.sendQueue {
                try calls.call(.shutdown, fd, Int32(SHUT_WR), to: "\(what): its FIN")
            }
        }
    }

    /// The socket receives a segment from its peer's address, and is seen to reach `expecting`.
    private func receive(
        _ flags: TCPSegment.Flags, sequence: UInt32, acknowledgment: UInt32, expecting: Socket.State, _ fd: Int32,
        _ session: RestartSession, _ what: String
    ) throws {
        guard let local = socket.local, let remote = socket.remote,
            let source = Self.hostBytes(remote.host), let destination = Self.hostBytes(local.host),
            source.count == destination.count
        else {
            throw TraceeError.unsupported(
                pid: session.pid, reason: "\(what): its addresses cannot be read to send it its peer's segment")
        }
        let window =
            connection.window.count == 5
            ? UInt16(clamping: connection.window[1] >> UInt32(connection.sendScale ?? 0)) : UInt16.max
        let segment = TCPSegment(
            source: source, destination: destination, sourcePort: remote.port, destinationPort: local.port,
            sequence: sequence, acknowledgment: acknowledgment, flags: flags, window: window)
        do {
            try segment.send()
        } catch {
            throw TraceeError.unsupported(
                pid: session.pid,
                reason: "\(what): its peer's \(flags.contains(.fin) ? "FIN" : "ack") cannot be sent to it on a raw "
                    + "socket (\(error); needs CAP_NET_RAW)")
        }
        try wait(for: expecting, fd, session, what)
    }

    /// Waits (2 seconds at most) for the socket to be in `expected` (TCP_INFO's tcpi_state).
    private func wait(for expected: Socket.State, _ fd: Int32, _ session: RestartSession, _ what: String) throws {
        var seen: UInt8 = 0
        do throws(Errno) {
            let process = try ProcessDescriptor.open(session.pid)
            defer { process.close() }
            let copy = try process.copyDescriptor(fd)
            defer { copy.close() }
            for attempt in 0..<2000 {
                if attempt > 0 { usleep(1000) }
                seen = (try copy.socketOptionBytes(InetSocketCapture.tcpInfo, capacity: 8)).first ?? 0
                if InetSocketCapture.connectionStates[seen] == expected { return }
            }
        } catch {
            throw TraceeError.unsupported(pid: session.pid, reason: "\(what): its state cannot be read (\(error))")
        }
        throw TraceeError.unsupported(
            pid: session.pid,
            reason: "\(what): it is in state \(InetSocketCapture.tcpStateName(seen)) where "
                + "\(expected.rawValue.uppercased()) was expected")
    }

    /// An address's bytes in network order: 4 for IPv4 and IPv4-mapped IPv6, 16 for IPv6.
    static func hostBytes(_ host: String) -> [UInt8]? {
        let mapped = host.hasPrefix("::ffff:") && host.contains(".") ? String(host.dropFirst(7)) : host
        if !mapped.contains(":") {
            var bytes = [UInt8](repeating: 0, count: 4)
            return inet_pton(AF_INET, mapped, &bytes) == 1 ? bytes : nil
        }
        var bytes = [UInt8](repeating: 0, count: 16)
        return inet_pton(AF_INET6, mapped, &bytes) == 1 ? bytes : nil
    }
}
