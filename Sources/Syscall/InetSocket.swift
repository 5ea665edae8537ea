#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// Socket calls an IPv4 or IPv6 socket needs beyond `Socket.swift`'s: options of any level,
/// integer or bytes, its addresses, and its queue lengths.
extension FileDescriptor {
    /// An option of any level (getsockopt(2)): SOL_SOCKET, SOL_IP, SOL_IPV6, SOL_TCP...
    public struct OptionName: Sendable, Hashable {
        public var level: Int32
        public var name: Int32
        public init(level: Int32, name: Int32) { (self.level, self.name) = (level, name) }
    }

    /// The integer value of `option`.
    public func socketOption(_ option: OptionName) throws(Errno) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = try retryingInterrupts { getsockopt(rawValue, option.level, option.name, &value, &length) }.get()
        return value
    }

    /// The value of `option` as the kernel writes it, at most `capacity` bytes.
    public func socketOptionBytes(_ option: OptionName, capacity: Int) throws(Errno) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max(capacity, 1))
        var length = socklen_t(capacity)
        let fd = rawValue
        _ = try bytes.withMutableRawBytes { (raw) throws(Errno) in
            try retryingInterrupts { getsockopt(fd, option.level, option.name, raw.baseAddress, &length) }.get()
        }
        return Array(bytes.prefix(Int(length)))
    }

    /// How long `option`'s value is, as getsockopt(2) answers a zero-length buffer (SO_GET_FILTER
    /// answers its count of instructions).
    public func socketOptionLength(_ option: OptionName) throws(Errno) -> Int {
        var length = socklen_t(0)
        _ = try retryingInterrupts { getsockopt(rawValue, option.level, option.name, nil, &length) }.get()
        return Int(length)
    }

    /// The classic BPF filter attached (SO_GET_FILTER, whose length counts instructions, not
    /// bytes): `count` struct sock_filter of 8 bytes each.
    public func socketFilter(count: Int) throws(Errno) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count * 8)
        var length = socklen_t(count)
        let fd = rawValue
        _ = try bytes.withMutableRawBytes { (raw) throws(Errno) in
            try retryingInterrupts { getsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, raw.baseAddress, &length) }.get()
        }
        return Array(bytes.prefix(Int(length) * 8))
    }

    /// Sets `option` to an integer.
    public func setSocketOption(_ option: OptionName, to value: Int32) throws(Errno) {
        var value = value
        let length = socklen_t(MemoryLayout<Int32>.size)
        _ = try retryingInterrupts { setsockopt(rawValue, option.level, option.name, &value, length) }.get()
    }

    /// Sets `option` to `bytes` (a struct the option takes).
    public func setSocketOption(_ option: OptionName, bytes: [UInt8]) throws(Errno) {
        let fd = rawValue
        _ = try bytes.withRawBytes { (raw) throws(Errno) in
            try retryingInterrupts { setsockopt(fd, option.level, option.name, raw.baseAddress, socklen_t(raw.count)) }
                .get()
        }
    }

    /// The address it is bound to (getsockname(2)), as the kernel writes a struct sockaddr.
    public func localAddress() throws(Errno) -> [UInt8] {
        try address { fd, pointer, length in getsockname(fd, pointer, length) }
    }

    /// The address it is connected to (getpeername(2)); nil when it is not connected.
    public func peerAddress() throws(Errno) -> [UInt8]? {
        do {
            return try address { fd, pointer, length in getpeername(fd, pointer, length) }
        } catch let error where error.rawValue == ENOTCONN {
            return nil
        }
    }

    private func address(
        _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
    ) throws(Errno) -> [UInt8] {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = rawValue
        _ = try withUnsafeMutablePointer(to: &storage) { (pointer) throws(Errno) in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (address) throws(Errno) in
                try retryingInterrupts { call(fd, address, &length) }.get()
            }
        }
        return withUnsafeBytes(of: &storage) { Array($0.prefix(Int(length))) }
    }

    /// A queue length a TCP socket reports by ioctl(2).
    public struct QueueLength: RawRepresentable, Sendable {
        public let rawValue: UInt
        public init(rawValue: UInt) { self.rawValue = rawValue }
        /// The corresponding C constant is SIOCINQ: bytes waiting to be read.
        public static let received = QueueLength(rawValue: UInt(CHPOX_SIOCINQ))
        /// The corresponding C constant is SIOCOUTQ: bytes written and not acknowledged yet.
        public static let unacknowledged = QueueLength(rawValue: UInt(CHPOX_SIOCOUTQ))
        /// The corresponding C constant is SIOCOUTQNSD: bytes written and not sent yet.
        public static let unsent = QueueLength(rawValue: UInt(CHPOX_SIOCOUTQNSD))
    }

    public func queueLength(_ which: QueueLength) throws(Errno) -> Int32 {
        var value: Int32 = 0
        _ = try control(which.rawValue, &value)
        return value
    }
}

/// What sock_diag's INET_DIAG says of one IPv4 or IPv6 socket of this network namespace: its
/// state and shutdown bits (RCV_SHUTDOWN 1, SEND_SHUTDOWN 2), found by its inode: asked of the
/// socket its addresses name (one lookup), else in a dump of its protocol's sockets (TCP, UDP,
/// UDP-Lite). A dump per socket made a checkpoint of a server with 1,000 connections quadratic
/// (5-7 ms per connection, 74% of cpx's time in the kernel's tcp_diag_dump).
public struct InetSocketDiagnosis: Sendable, Equatable {
    public var state: UInt8
    public var shutdown: UInt8

    /// nil when no socket of `family` and `protocol` has `inode` (ping sockets are not listed).
    /// `local` and `remote` (struct sockaddr bytes, as getsockname and getpeername give them)
    /// let the kernel look the socket up by its addresses instead of listing every socket.
    public static func of(
        inode: UInt64, family: Int32, protocol: Int32, local: [UInt8]? = nil, remote: [UInt8]? = nil
    ) throws(Errno) -> InetSocketDiagnosis? {
        if let local, let remote, let found = try? ask(inode, family, `protocol`, lookup: (local, remote)) {
            return found
        }
        return try ask(inode, family, `protocol`, lookup: nil)
    }

    /// Fills `id` (struct inet_diag_sockid) from socket addresses: sport, dport, src, dst
    /// (network order, an IPv4 address in the first word), no interface, no cookie. False when
    /// the addresses are not of `family`.
    static func identify(
        _ id: inout inet_diag_sockid, family: Int32, local: [UInt8], remote: [UInt8]
    ) -> Bool {
        func words(_ address: [UInt8]) -> (port: UInt16, words: [UInt32])? {
            guard address.count >= 2, Int32(address.withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) }) == family
            else { return nil }
            let port = address.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self) }
            let (offset, count) = family == AF_INET ? (4, 1) : (8, 4)
            guard address.count >= offset + 4 * count else { return nil }
            return (
                port,
                (0..<count).map { k in
                    address.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 4 * k, as: UInt32.self) }
                }
            )
        }
        guard let source = words(local), let destination = words(remote) else { return false }
        id.idiag_sport = source.port
        id.idiag_dport = destination.port
        withUnsafeMutableBytes(of: &id.idiag_src) { raw in
            for (k, word) in source.words.enumerated() {
                raw.storeBytes(of: word, toByteOffset: 4 * k, as: UInt32.self)
            }
        }
        withUnsafeMutableBytes(of: &id.idiag_dst) { raw in
            for (k, word) in destination.words.enumerated() {
                raw.storeBytes(of: word, toByteOffset: 4 * k, as: UInt32.self)
            }
        }
        id.idiag_if = 0
        id.idiag_cookie = (UInt32.max, UInt32.max)  // INET_DIAG_NOCOOKIE
        return true
    }

    /// One request: the socket `lookup`'s addresses name (an answer of another inode is none),
    /// or with nil a dump of every socket of the protocol.
    static func ask(
        _ inode: UInt64, _ family: Int32, _ protocol: Int32, lookup: (local: [UInt8], remote: [UInt8])?
    ) throws(Errno) -> InetSocketDiagnosis? {
        let netlink = try FileDescriptor.socket(
            domain: AF_NETLINK, type: Int32(SOCK_DGRAM.rawValue), protocol: NETLINK_SOCK_DIAG)
        defer { netlink.close() }
        var message = chpox_inet_diag_request()
        message.header.nlmsg_len = UInt32(MemoryLayout<chpox_inet_diag_request>.size)
        message.header.nlmsg_type = UInt16(SOCK_DIAG_BY_FAMILY)
        message.header.nlmsg_flags = UInt16(NLM_F_REQUEST | (lookup == nil ? NLM_F_DUMP : 0))
        message.header.nlmsg_seq = 1
        message.request.sdiag_family = UInt8(family)
        message.request.sdiag_protocol = UInt8(`protocol`)
        message.request.idiag_states = UInt32.max
        if let lookup {
            guard identify(&message.request.id, family: family, local: lookup.local, remote: lookup.remote) else {
                throw Errno(rawValue: EAFNOSUPPORT)
            }
        }
        _ = try withUnsafeBytes(of: &message) { (raw) throws(Errno) in try netlink.send(raw) }
        var answer = [UInt8](repeating: 0, count: 32768)
        let header = MemoryLayout<nlmsghdr>.size
        var found: InetSocketDiagnosis?
        while true {
            let count = try answer.withMutableRawBytes { (raw) throws(Errno) in
                try netlink.receive(into: raw, flags: []).count
            }
            var at = 0
            while at + header <= count {
                let (length, type) = answer.withUnsafeBytes {
                    (
                        Int($0.loadUnaligned(fromByteOffset: at, as: UInt32.self)),
                        $0.loadUnaligned(fromByteOffset: at + 4, as: UInt16.self)
                    )
                }
                guard length >= header, at + length <= count else { throw Errno(rawValue: EBADMSG) }
                if type == UInt16(NLMSG_DONE) { return found }
                if type == UInt16(NLMSG_ERROR) {
                    let error = answer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at + header, as: Int32.self) }
                    throw Errno(rawValue: error < 0 ? -error : EBADMSG)
                }
                let body = at + header
                let bodySize = MemoryLayout<inet_diag_msg>.size
                if type == UInt16(SOCK_DIAG_BY_FAMILY), length >= header + bodySize {
                    // struct inet_diag_msg: family, state, timer, retrans, id (48), expires,
                    // rqueue, wqueue, uid, inode at 68.
                    let socketInode = answer.withUnsafeBytes {
                        $0.loadUnaligned(fromByteOffset: body + 68, as: UInt32.self)
                    }
                    if UInt64(socketInode) == inode {
                        var diagnosis = InetSocketDiagnosis(state: answer[body + 1], shutdown: 0)
                        var attribute = body + bodySize
                        while attribute + 4 <= at + length {
                            let (size, kind) = answer.withUnsafeBytes {
                                (
                                    Int($0.loadUnaligned(fromByteOffset: attribute, as: UInt16.self)),
                                    $0.loadUnaligned(fromByteOffset: attribute + 2, as: UInt16.self)
                                )
                            }
                            guard size >= 4, attribute + size <= at + length else { break }
                            if kind == UInt16(INET_DIAG_SHUTDOWN), size >= 5 {
                                diagnosis.shutdown = answer[attribute + 4]
                            }
                            attribute += (size + 3) & ~3
                        }
                        found = diagnosis
                    }
                    if lookup != nil { return found }  // one answer, no NLMSG_DONE after it
                }
                at += (length + 3) & ~3
            }
            if count == 0 { return found }
        }
    }
}

/// TCP repair mode (CAP_NET_ADMIN): a socket in it sends no packet; its queues and sequence
/// numbers can be read and set, and connect(2) makes a connection without a handshake.
public enum TCPRepair {
    /// The corresponding C constant is TCP_REPAIR (1 on, 0 off with a window probe).
    public static let repair = FileDescriptor.OptionName(level: 6, name: CHPOX_TCP_REPAIR)
    /// The corresponding C constant is TCP_REPAIR_QUEUE: which queue the next calls see.
    public static let queue = FileDescriptor.OptionName(level: 6, name: CHPOX_TCP_REPAIR_QUEUE)
    /// The corresponding C constant is TCP_QUEUE_SEQ: the selected queue's sequence number.
    public static let queueSequence = FileDescriptor.OptionName(level: 6, name: CHPOX_TCP_QUEUE_SEQ)
    /// The corresponding C constant is TCP_REPAIR_OPTIONS: struct tcp_repair_opt pairs.
    public static let options = FileDescriptor.OptionName(level: 6, name: CHPOX_TCP_REPAIR_OPTIONS)
    /// The corresponding C constant is TCP_TIMESTAMP: the connection's timestamp clock.
    public static let timestamp = FileDescriptor.OptionName(level: 6, name: CHPOX_TCP_TIMESTAMP)
    /// The corresponding C constant is TCP_REPAIR_WINDOW: struct tcp_repair_window.
    public static let window = FileDescriptor.OptionName(level: 6, name: CHPOX_TCP_REPAIR_WINDOW)
    /// The corresponding C constant is TCP_RECV_QUEUE.
    public static let receiveQueue = CHPOX_TCP_RECV_QUEUE
    /// The corresponding C constant is TCP_SEND_QUEUE.
    public static let sendQueue = CHPOX_TCP_SEND_QUEUE
    /// The corresponding C constant is TCP_REPAIR_OFF_NO_WP: off, without a window probe.
    public static let offWithoutProbe: Int32 = CHPOX_TCP_REPAIR_OFF_NO_WP
}
