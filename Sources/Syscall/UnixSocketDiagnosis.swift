#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// What the kernel's socket diagnostics (sock_diag(7), NETLINK_SOCK_DIAG with UNIX_DIAG) say
/// about one UNIX socket of this network namespace, found by its inode: its type and state,
/// the name it is bound to, the inode of its peer, how many bytes wait in its receive queue,
/// and its shutdown state. /proc shows none of these for a socket.
public struct UnixSocketDiagnosis: Sendable, Equatable {
    public var inode: UInt32
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    public var type: Int32
    /// The kernel's TCP_* state: TCP_ESTABLISHED (1) for a connected socket, TCP_CLOSE (7),
    /// TCP_LISTEN (10).
    public var state: UInt8
    /// The address it is bound to: a path, or an abstract name (a leading NUL byte); nil for
    /// an unnamed socket. The corresponding C constant is UNIX_DIAG_NAME.
    public var name: [UInt8]?
    /// The inode of the socket it is connected to: nil when it is not connected, 0 when its
    /// peer was closed. The corresponding C constant is UNIX_DIAG_PEER.
    public var peer: UInt32?
    /// Bytes queued to be read (stream and seqpacket: all of them; datagram: the first
    /// message's). The corresponding C constant is UNIX_DIAG_RQLEN.
    public var queuedBytes: UInt32?
    /// The memory (sk_wmem_alloc, in bytes) of what it sent that is still queued at its peer:
    /// each message counts its whole buffer (768 bytes for a short datagram here), an empty one
    /// too. The corresponding C constant is UNIX_DIAG_RQLEN (its udiag_wqueue).
    public var sentMemory: UInt32?
    /// The kernel's sk_shutdown bits: `receiveShutdown` (1), `sendShutdown` (2).
    public var shutdown: UInt8
    /// The file a path name made (its inode, and its filesystem's device as the kernel numbers
    /// it: major << 20 | minor), also when the path was unlinked since; nil for an abstract or
    /// no name. A socket made by accept(2) shows its listener's. The corresponding C constant
    /// is UNIX_DIAG_VFS.
    public var fileInode: UInt32?
    public var fileDevice: UInt32?
    /// A listening socket's connections not accepted yet, in the order accept(2) takes them:
    /// the inode of each one's connecting socket (0: that socket was closed). The
    /// corresponding C constant is UNIX_DIAG_ICONS.
    public var pending: [UInt32]?

    /// The corresponding C constant is RCV_SHUTDOWN (include/net/sock.h).
    public static let receiveShutdown = UInt8(CHPOX_RCV_SHUTDOWN)
    /// The corresponding C constant is SEND_SHUTDOWN.
    public static let sendShutdown = UInt8(CHPOX_SEND_SHUTDOWN)
    /// The corresponding C constant is TCP_LISTEN.
    public static let listening: UInt8 = 10
    /// The corresponding C constant is TCP_ESTABLISHED.
    public static let established: UInt8 = 1

    public var isListening: Bool { state == Self.listening }

    public init(
        inode: UInt32, type: Int32, state: UInt8, name: [UInt8]? = nil, peer: UInt32? = nil,
        queuedBytes: UInt32? = nil, shutdown: UInt8 = 0
    ) {
        (self.inode, self.type, self.state, self.name) = (inode, type, state, name)
        (self.peer, self.queuedBytes, self.shutdown) = (peer, queuedBytes, shutdown)
    }

    /// Asks the kernel about the UNIX socket with inode `inode` (an exact request, not a dump).
    /// ENOENT: no UNIX socket of this network namespace has that inode.
    public static func of(inode: UInt64) throws(Errno) -> UnixSocketDiagnosis {
        guard let inode32 = UInt32(exactly: inode) else { throw Errno(rawValue: ERANGE) }
        let netlink = try FileDescriptor.socket(
            domain: AF_NETLINK, type: Int32(SOCK_DGRAM.rawValue), protocol: NETLINK_SOCK_DIAG)
        defer { netlink.close() }
        var message = chpox_unix_diag_request()
        message.header.nlmsg_len = UInt32(MemoryLayout<chpox_unix_diag_request>.size)
        message.header.nlmsg_type = UInt16(SOCK_DIAG_BY_FAMILY)
        message.header.nlmsg_flags = UInt16(NLM_F_REQUEST)
        message.header.nlmsg_seq = 1
        message.request.sdiag_family = UInt8(AF_UNIX)
        message.request.udiag_states = UInt32.max
        message.request.udiag_ino = inode32
        message.request.udiag_show = UInt32(
            UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_VFS | UDIAG_SHOW_ICONS)
        message.request.udiag_cookie = (UInt32.max, UInt32.max)  // INET_DIAG_NOCOOKIE: any socket
        _ = try withUnsafeBytes(of: &message) { (raw) throws(Errno) in try netlink.send(raw) }
        var answer = [UInt8](repeating: 0, count: 8192)
        let count = try answer.withMutableRawBytes { (raw) throws(Errno) in
            try netlink.receive(into: raw, flags: []).count
        }
        return try parse(Array(answer[..<count]))
    }

    /// Reads one answer: struct nlmsghdr, then an nlmsgerr (NLMSG_ERROR) or a struct
    /// unix_diag_msg followed by netlink attributes (each a 4-byte header, padded to 4).
    static func parse(_ bytes: [UInt8]) throws(Errno) -> UnixSocketDiagnosis {
        func u32(_ at: Int) -> UInt32? {
            at + 4 <= bytes.count
                ? bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) } : nil
        }
        func u16(_ at: Int) -> UInt16? {
            at + 2 <= bytes.count
                ? bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt16.self) } : nil
        }
        let header = MemoryLayout<nlmsghdr>.size
        guard let length = u32(0).map(Int.init), length <= bytes.count, let type = u16(4) else {
            throw Errno(rawValue: EBADMSG)
        }
        if type == UInt16(NLMSG_ERROR) {
            let error = Int32(bitPattern: u32(header) ?? UInt32(bitPattern: -EBADMSG))
            throw Errno(rawValue: error < 0 ? -error : EBADMSG)
        }
        let body = header + MemoryLayout<unix_diag_msg>.size
        guard type == UInt16(SOCK_DIAG_BY_FAMILY), length >= body, let inode = u32(header + 4) else {
            throw Errno(rawValue: EBADMSG)
        }
        var diagnosis = UnixSocketDiagnosis(
            inode: inode, type: Int32(bytes[header + 1]), state: bytes[header + 2])
        var at = body
        while at + 4 <= length, let size = u16(at).map(Int.init), let kind = u16(at + 2), size >= 4,
            at + size <= length
        {
            let payload = Array(bytes[(at + 4)..<(at + size)])
            switch Int(kind) {
            case Int(UNIX_DIAG_NAME): diagnosis.name = payload
            case Int(UNIX_DIAG_PEER) where payload.count >= 4:
                diagnosis.peer = payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            case Int(UNIX_DIAG_RQLEN) where payload.count >= 4:
                diagnosis.queuedBytes = payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
                if payload.count >= 8 {
                    diagnosis.sentMemory = payload.withUnsafeBytes {
                        $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                    }
                }
            case Int(UNIX_DIAG_SHUTDOWN) where payload.count >= 1: diagnosis.shutdown = payload[0]
            case Int(UNIX_DIAG_VFS) where payload.count >= 8:
                diagnosis.fileInode = payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
                diagnosis.fileDevice = payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) }
            case Int(UNIX_DIAG_ICONS):
                diagnosis.pending = stride(from: 0, to: payload.count - 3, by: 4).map { at in
                    payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) }
                }
            default: break
            }
            at += (size + 3) & ~3
        }
        return diagnosis
    }
}
