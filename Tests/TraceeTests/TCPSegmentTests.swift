import Syscall
import Testing

/// The segments a restart hands a half-closed connection: their checksums verify as a receiver
/// checks them (the ones' complement sum over the header, and over the TCP pseudo-header and
/// segment, is all ones), and their fields sit where RFC 791, 8200 and 9293 put them.
struct TCPSegmentTests {
    /// RFC 1071's sum, folded, as a receiver computes it.
    static func folded(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        for at in stride(from: 0, to: bytes.count, by: 2) {
            sum += UInt32(bytes[at]) << 8 | (at + 1 < bytes.count ? UInt32(bytes[at + 1]) : 0)
        }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return UInt16(sum)
    }

    static func segment(_ source: [UInt8], _ destination: [UInt8]) -> TCPSegment {
        TCPSegment(
            source: source, destination: destination, sourcePort: 8880, destinationPort: 40123,
            sequence: 0xfedc_ba98, acknowledgment: 0x0123_4567, flags: [.fin, .ack], window: 0x8000)
    }

    @Test func anIPv4SegmentsChecksumsVerify() {
        let packet = Self.segment([127, 0, 0, 1], [127, 0, 0, 2]).packet()
        #expect(packet.count == 40)
        #expect(Self.folded(Array(packet[0..<20])) == 0xffff)
        let tcp = Array(packet[20...])
        let pseudo: [UInt8] = [127, 0, 0, 1, 127, 0, 0, 2, 0, 6, 0, 20]
        #expect(Self.folded(pseudo + tcp) == 0xffff)
        #expect(Array(tcp[0..<4]) == [0x22, 0xb0, 0x9c, 0xbb])
        #expect(Array(tcp[4..<12]) == [0xfe, 0xdc, 0xba, 0x98, 0x01, 0x23, 0x45, 0x67])
        #expect(tcp[12] == 0x50)
        #expect(tcp[13] == 0x11)
    }

    @Test func anIPv6SegmentsChecksumVerifies() {
        let source = [UInt8](repeating: 0, count: 15) + [1]
        let destination = [UInt8](repeating: 0, count: 15) + [2]
        let packet = Self.segment(source, destination).packet()
        #expect(packet.count == 60)
        #expect(packet[0] >> 4 == 6)
        #expect(packet[6] == 6)
        let pseudo = source + destination + [0, 0, 0, 20, 0, 0, 0, 6]
        #expect(Self.folded(pseudo + Array(packet[40...])) == 0xffff)
    }
}
