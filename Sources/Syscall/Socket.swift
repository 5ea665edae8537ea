#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// Socket calls on a descriptor: its integer options, and its receive queue read without
/// consuming it (how a UNIX socket's queued messages are captured).
extension FileDescriptor {
    /// An integer option of level SOL_SOCKET (getsockopt(2), setsockopt(2)).
    public struct SocketOption: RawRepresentable, Sendable, Hashable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// The corresponding C constant is SO_TYPE (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET...).
        public static let type = SocketOption(rawValue: SO_TYPE)
        /// The corresponding C constant is SO_DOMAIN (AF_UNIX, AF_INET...).
        public static let domain = SocketOption(rawValue: CHPOX_SO_DOMAIN)
        /// The corresponding C constant is SO_PEEK_OFF: where the next MSG_PEEK reads from
        /// (-1: peeking always starts at the head of the queue).
        public static let peekOffset = SocketOption(rawValue: CHPOX_SO_PEEK_OFF)
        /// The corresponding C constant is SO_PASSCRED: the sender's credentials come with
        /// every message.
        public static let passCredentials = SocketOption(rawValue: SO_PASSCRED)
        /// The corresponding C constant is SO_PASSSEC: the sender's security context comes
        /// with every message.
        public static let passSecurity = SocketOption(rawValue: SO_PASSSEC)
        /// The corresponding C constant is SO_REUSEADDR.
        public static let reuseAddress = SocketOption(rawValue: SO_REUSEADDR)
        /// The corresponding C constant is SO_SNDBUF: the bytes of memory its sent messages may
        /// take (set: half the value read back; the kernel doubles it, capped by wmem_max).
        public static let sendBuffer = SocketOption(rawValue: SO_SNDBUF)
        /// The corresponding C constant is SO_RCVBUF.
        public static let receiveBuffer = SocketOption(rawValue: SO_RCVBUF)
        /// The corresponding C constant is SO_SNDBUFFORCE: SO_SNDBUF beyond wmem_max
        /// (CAP_NET_ADMIN).
        public static let sendBufferForce = SocketOption(rawValue: SO_SNDBUFFORCE)
        /// The corresponding C constant is SO_RCVBUFFORCE.
        public static let receiveBufferForce = SocketOption(rawValue: SO_RCVBUFFORCE)
    }

    /// Flags of send(2) and recvmsg(2), and of what recvmsg reports.
    public struct MessageFlags: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// The corresponding C constant is MSG_PEEK: read without removing from the queue.
        public static let peek = MessageFlags(rawValue: Int32(MSG_PEEK))
        /// The corresponding C constant is MSG_DONTWAIT.
        public static let dontWait = MessageFlags(rawValue: Int32(MSG_DONTWAIT))
        /// The corresponding C constant is MSG_NOSIGNAL: EPIPE without SIGPIPE.
        public static let noSignal = MessageFlags(rawValue: Int32(MSG_NOSIGNAL))
        /// The corresponding C constant is MSG_TRUNC: the message was longer than the buffer.
        public static let truncated = MessageFlags(rawValue: Int32(MSG_TRUNC))
        /// The corresponding C constant is MSG_CTRUNC: control data (descriptors, credentials)
        /// came with the message and did not fit.
        public static let controlTruncated = MessageFlags(rawValue: Int32(MSG_CTRUNC))
    }

    /// A new socket (socket(2)); always close-on-exec.
    public static func socket(domain: Int32, type: Int32, protocol: Int32 = 0) throws(Errno) -> FileDescriptor {
        let fd = try retryingInterrupts { Glibc.socket(domain, type | Int32(SOCK_CLOEXEC.rawValue), `protocol`) }
            .get()
        return FileDescriptor(rawValue: fd)
    }

    /// Two connected UNIX sockets of `type` (socketpair(2)); always close-on-exec.
    public static func socketPair(type: Int32) throws(Errno) -> (FileDescriptor, FileDescriptor) {
        var ends: [Int32] = [-1, -1]
        _ = try retryingInterrupts { socketpair(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) }.get()
        return (FileDescriptor(rawValue: ends[0]), FileDescriptor(rawValue: ends[1]))
    }

    /// The value of integer option `option` (getsockopt(2), level SOL_SOCKET).
    public func socketOption(_ option: SocketOption) throws(Errno) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = try retryingInterrupts { getsockopt(rawValue, SOL_SOCKET, option.rawValue, &value, &length) }.get()
        return value
    }

    /// The credentials of the process that connected the peer, or made the pair, as they were
    /// then (SO_PEERCRED): its pid, effective uid and effective gid.
    public func peerCredentials() throws(Errno) -> (pid: Int32, user: UInt32, group: UInt32) {
        var credentials = chpox_ucred()
        var length = socklen_t(MemoryLayout<chpox_ucred>.size)
        _ = try retryingInterrupts { getsockopt(rawValue, SOL_SOCKET, CHPOX_SO_PEERCRED, &credentials, &length) }.get()
        return (credentials.pid, credentials.uid, credentials.gid)
    }

    /// Sets integer option `option` (setsockopt(2), level SOL_SOCKET).
    public func setSocketOption(_ option: SocketOption, to value: Int32) throws(Errno) {
        var value = value
        let length = socklen_t(MemoryLayout<Int32>.size)
        _ = try retryingInterrupts { setsockopt(rawValue, SOL_SOCKET, option.rawValue, &value, length) }.get()
    }

    /// Sends `bytes` as one message (send(2)); returns how many were taken (a stream may take
    /// fewer).
    public func send(_ bytes: UnsafeRawBufferPointer, flags: MessageFlags = []) throws(Errno) -> Int {
        try retryingInterrupts { Glibc.send(rawValue, bytes.baseAddress, bytes.count, flags.rawValue) }.get()
    }

    /// Sends `bytes` as one message with `descriptors` attached as SCM_RIGHTS (sendmsg(2)):
    /// the receiver gets its own references to the same files.
    public func send(_ bytes: UnsafeRawBufferPointer, descriptors: [FileDescriptor]) throws(Errno) {
        var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        // cmsghdr (16 bytes), then the descriptors, padded to 8.
        let length = 16 + descriptors.count * 4
        var space = [UInt8](repeating: 0, count: (length + 7) / 8 * 8)
        space.withUnsafeMutableBytes { control in
            control.storeBytes(of: UInt64(length), toByteOffset: 0, as: UInt64.self)
            control.storeBytes(of: SOL_SOCKET, toByteOffset: 8, as: Int32.self)
            control.storeBytes(of: Int32(SCM_RIGHTS), toByteOffset: 12, as: Int32.self)
            for (k, descriptor) in descriptors.enumerated() {
                control.storeBytes(of: descriptor.rawValue, toByteOffset: 16 + 4 * k, as: Int32.self)
            }
        }
        _ = try withUnsafeMutablePointer(to: &vector) { (vectorPointer) throws(Errno) in
            try space.withMutableRawBytes { (control) throws(Errno) in
                var header = msghdr()
                header.msg_iov = vectorPointer
                header.msg_iovlen = 1
                if !descriptors.isEmpty {
                    header.msg_control = control.baseAddress
                    header.msg_controllen = length
                }
                return try retryingInterrupts { sendmsg(rawValue, &header, Int32(MSG_NOSIGNAL)) }.get()
            }
        }
    }

    /// Receives one message into `buffer` (recvmsg(2)) with no room for control data: control
    /// data that came with it is reported as `.controlTruncated`, never installed here (a
    /// descriptor in flight would otherwise become one of this process's). `sender` is the
    /// address it came from, as recvmsg's msg_name has it past the family (a UNIX socket's name;
    /// empty for an unnamed sender or a connected stream).
    public func receive(
        into buffer: UnsafeMutableRawBufferPointer, flags: MessageFlags
    ) throws(Errno) -> (count: Int, flags: MessageFlags, sender: [UInt8]) {
        var vector = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        var address = sockaddr_storage()
        return try withUnsafeMutablePointer(to: &vector) { (vectorPointer) throws(Errno) in
            try withUnsafeMutableBytes(of: &address) { (addressBytes) throws(Errno) in
                var header = msghdr()
                header.msg_iov = vectorPointer
                header.msg_iovlen = 1
                header.msg_name = addressBytes.baseAddress
                header.msg_namelen = socklen_t(addressBytes.count)
                let count = try retryingInterrupts { recvmsg(rawValue, &header, flags.rawValue) }.get()
                let family = MemoryLayout<sa_family_t>.size
                let length = min(Int(header.msg_namelen), addressBytes.count)
                let sender = length > family ? Array(addressBytes[family..<length]) : []
                return (count, MessageFlags(rawValue: header.msg_flags), sender)
            }
        }
    }

    /// SCM_CREDENTIALS (glibc declares it only under _GNU_SOURCE).
    static let credentialsMessage: Int32 = 2

    /// What came with a message beside its bytes (`receiveWithControl`).
    public struct Control: Sendable {
        /// The descriptors SCM_RIGHTS installed in this process (close-on-exec), in order.
        public var descriptors: [FileDescriptor] = []
        /// SCM_CREDENTIALS came with it.
        public var credentials = false
        /// Another control message (level and type).
        public var others: [(level: Int32, type: Int32)] = []
    }

    /// Receives one message into `buffer` (recvmsg(2)) with room for `descriptorLimit`
    /// descriptors of SCM_RIGHTS and credentials: the descriptors are installed in this process
    /// (MSG_CMSG_CLOEXEC), the caller closes them. A peek (MSG_PEEK) installs copies of the
    /// files in flight and leaves them in the queue.
    public func receiveWithControl(
        into buffer: UnsafeMutableRawBufferPointer, flags: MessageFlags, descriptorLimit: Int = 253
    ) throws(Errno) -> (count: Int, flags: MessageFlags, sender: [UInt8], control: Control) {
        var vector = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        var address = sockaddr_storage()
        // cmsghdr is 16 bytes; the descriptors and the credentials (12 bytes), each padded to 8.
        var space = [UInt8](repeating: 0, count: 16 + (descriptorLimit * 4 + 7) / 8 * 8 + 16 + 16)
        return try withUnsafeMutablePointer(to: &vector) { (vectorPointer) throws(Errno) in
            try withUnsafeMutableBytes(of: &address) { (addressBytes) throws(Errno) in
                try space.withMutableRawBytes { (controlBytes) throws(Errno) in
                    var header = msghdr()
                    header.msg_iov = vectorPointer
                    header.msg_iovlen = 1
                    header.msg_name = addressBytes.baseAddress
                    header.msg_namelen = socklen_t(addressBytes.count)
                    header.msg_control = controlBytes.baseAddress
                    header.msg_controllen = controlBytes.count
                    let count = try retryingInterrupts {
                        recvmsg(rawValue, &header, flags.rawValue | Int32(MSG_CMSG_CLOEXEC))
                    }.get()
                    let family = MemoryLayout<sa_family_t>.size
                    let length = min(Int(header.msg_namelen), addressBytes.count)
                    let sender = length > family ? Array(addressBytes[family..<length]) : []
                    var control = Control()
                    var offset = 0
                    let end = min(Int(header.msg_controllen), controlBytes.count)
                    while offset + 16 <= end {
                        let total = Int(controlBytes.load(fromByteOffset: offset, as: UInt64.self))
                        let level = controlBytes.load(fromByteOffset: offset + 8, as: Int32.self)
                        let type = controlBytes.load(fromByteOffset: offset + 12, as: Int32.self)
                        guard total >= 16, offset + total <= end else { break }
                        if level == SOL_SOCKET, type == Int32(SCM_RIGHTS) {
                            for k in 0..<(total - 16) / 4 {
                                let fd = controlBytes.load(fromByteOffset: offset + 16 + 4 * k, as: Int32.self)
                                control.descriptors.append(FileDescriptor(rawValue: fd))
                            }
                        } else if level == SOL_SOCKET, type == Self.credentialsMessage {
                            control.credentials = true
                        } else {
                            control.others.append((level, type))
                        }
                        offset += (total + 7) / 8 * 8
                    }
                    return (count, MessageFlags(rawValue: header.msg_flags), sender, control)
                }
            }
        }
    }

    /// Conditions poll(2) reports.
    public struct PollEvents: OptionSet, Sendable {
        public let rawValue: Int16
        public init(rawValue: Int16) { self.rawValue = rawValue }
        /// The corresponding C constant is POLLERR: a socket error is pending (SO_ERROR).
        public static let error = PollEvents(rawValue: Int16(POLLERR))
        /// The corresponding C constant is POLLPRI: out-of-band data (MSG_OOB) is queued.
        public static let priority = PollEvents(rawValue: Int16(POLLPRI))
        /// The corresponding C constant is POLLHUP: shut down both ways (or a stream's peer gone).
        public static let hangUp = PollEvents(rawValue: Int16(POLLHUP))
    }

    /// What poll(2) reports on the descriptor now, without waiting. Unlike SO_ERROR, this
    /// leaves a pending socket error in place.
    public func readyEvents() throws(Errno) -> PollEvents {
        var entry = pollfd(fd: rawValue, events: Int16(POLLPRI), revents: 0)
        _ = try retryingInterrupts { poll(&entry, 1, 0) }.get()
        return PollEvents(rawValue: entry.revents)
    }
}
