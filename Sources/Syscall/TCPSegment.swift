#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// A TCP segment, IP header included, sent on a raw socket (IPPROTO_RAW, CAP_NET_RAW) as if
/// the connection's peer had sent it. A restart needs it to bring a connection made again in
/// TCP repair mode into a half-closed state: the kernel moves a socket to CLOSE_WAIT, CLOSING or
/// FIN_WAIT2 only when it receives the peer's FIN, or the ack of its own FIN, and repair mode
/// has no call that sets either. No TCP options: a segment without timestamps is not checked
/// against the connection's timestamp clock (PAWS), and does not move it.
public struct TCPSegment: Sendable, Equatable {
    /// The flags of the TCP header's 13th byte.
    public struct Flags: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// The corresponding C constant is TH_FIN.
        public static let fin = Flags(rawValue: 0x01)
        /// The corresponding C constant is TH_ACK.
        public static let ack = Flags(rawValue: 0x10)
    }

    /// The sender's and the receiver's addresses, 4 bytes (IPv4) or 16 (IPv6) each, in network
    /// order; both of one family.
    public var source: [UInt8]
    public var destination: [UInt8]
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequence: UInt32
    public var acknowledgment: UInt32
    public var flags: Flags
    /// The window field as sent (the receiver scales it by the sender's window scale).
    public var window: UInt16

    public init(
        source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32,
        acknowledgment: UInt32, flags: Flags, window: UInt16
    ) {
        (self.source, self.destination, self.sourcePort, self.destinationPort) =
            (source, destination, sourcePort, destinationPort)
        (self.sequence, self.acknowledgment, self.flags, self.window) = (sequence, acknowledgment, flags, window)
    }

    /// The bytes of a TCP header without options.
    static let tcpHeaderSize = 20
    static let ipv4HeaderSize = 20
    static let ipv6HeaderSize = 40

    var isIPv6: Bool { source.count == 16 }

    /// The packet as it goes on the wire: the IPv4 header (RFC 791: version and header length,
    /// TOS, total length, id, flags and fragment offset, TTL 64, protocol 6, checksum, source,
    /// destination) or the IPv6 header (RFC 8200: version, traffic class and flow label,
    /// payload length, next header 6, hop limit 64, source, destination), then the TCP header
    /// (RFC 9293: ports, sequence, acknowledgment, data offset 5, flags, window, checksum over
    /// the pseudo-header, urgent pointer 0).
    public func packet() -> [UInt8] {
        func big16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }
        func big32(_ value: UInt32) -> [UInt8] { big16(UInt16(value >> 16)) + big16(UInt16(value & 0xffff)) }
        let length = Self.tcpHeaderSize
        var tcp =
            big16(sourcePort) + big16(destinationPort) + big32(sequence) + big32(acknowledgment)
            + [UInt8(length / 4) << 4, flags.rawValue] + big16(window) + [0, 0] + [0, 0]
        let pseudo: [UInt8] =
            isIPv6
            ? source + destination + big32(UInt32(length)) + [0, 0, 0, UInt8(IPPROTO_TCP)]
            : source + destination + [0, UInt8(IPPROTO_TCP)] + big16(UInt16(length))
        let checksum = Self.checksum(pseudo + tcp)
        tcp[16] = UInt8(checksum >> 8)
        tcp[17] = UInt8(checksum & 0xff)
        if isIPv6 {
            return [0x60, 0, 0, 0] + big16(UInt16(length)) + [UInt8(IPPROTO_TCP), 64] + source + destination + tcp
        }
        var ip: [UInt8] =
            [0x45, 0] + big16(UInt16(Self.ipv4HeaderSize + length)) + [0, 0, 0x40, 0] + [64, UInt8(IPPROTO_TCP)]
            + [0, 0] + source + destination
        let ipChecksum = Self.checksum(ip)
        ip[10] = UInt8(ipChecksum >> 8)
        ip[11] = UInt8(ipChecksum & 0xff)
        return ip + tcp
    }

    /// The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of
    /// the 16-bit words.
    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var at = 0
        while at + 1 < bytes.count {
            sum += UInt32(bytes[at]) << 8 | UInt32(bytes[at + 1])
            at += 2
        }
        if at < bytes.count { sum += UInt32(bytes[at]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    /// Sends it on a new raw socket of its family (IPPROTO_RAW: the header is the caller's),
    /// to its destination.
    public func send() throws(Errno) {
        let family = isIPv6 ? AF_INET6 : AF_INET
        let raw = try FileDescriptor.socket(
            domain: family, type: Int32(SOCK_RAW.rawValue), protocol: Int32(IPPROTO_RAW))
        defer { raw.close() }
        // Marked (SO_MARK) so that a hold on its connection lets it through (`PacketFilter.passMark`).
        let mark = FileDescriptor.OptionName(level: SOL_SOCKET, name: 36)
        try raw.setSocketOption(mark, to: Int32(bitPattern: PacketFilter.passMark))
        // struct sockaddr_in or sockaddr_in6, port 0: the address only routes the packet.
        let address: [UInt8] =
            isIPv6
            ? [UInt8(AF_INET6), 0, 0, 0, 0, 0, 0, 0] + destination + [0, 0, 0, 0]
            : [UInt8(AF_INET), 0, 0, 0] + destination + [UInt8](repeating: 0, count: 8)
        let sent = try raw.send(packet(), to: address)
        guard sent == packet().count else { throw Errno(rawValue: EMSGSIZE) }
    }
}

extension FileDescriptor {
    /// Sends `bytes` as one datagram to `address`, a struct sockaddr as the family lays it out
    /// (sendto(2)).
    public func send(_ bytes: [UInt8], to address: [UInt8]) throws(Errno) -> Int {
        let fd = rawValue
        return try bytes.withRawBytes { (data) throws(Errno) in
            try address.withRawBytes { (name) throws(Errno) in
                try retryingInterrupts {
                    sendto(
                        fd, data.baseAddress, data.count, 0, name.baseAddress?.assumingMemoryBound(to: sockaddr.self),
                        socklen_t(name.count))
                }.get()
            }
        }
    }
}
