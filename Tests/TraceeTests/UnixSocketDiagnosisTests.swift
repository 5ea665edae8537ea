#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Testing

/// What sock_diag says about UNIX sockets of this process, and what peeking leaves: the facts
/// socket capture stands on, held against the running kernel.
@Suite struct UnixSocketDiagnosisTests {
    static func send(_ text: String, from socket: FileDescriptor) throws {
        _ = try Array(text.utf8).withRawBytes { (raw) throws(Errno) in try socket.send(raw, flags: .dontWait) }
    }

    @Test func aPairNamesItsPeerItsQueueAndItsShutdown() throws {
        let (a, b) = try FileDescriptor.socketPair(type: Int32(SOCK_STREAM.rawValue))
        defer {
            a.close()
            b.close()
        }
        try Self.send("hello", from: a)
        #expect(shutdown(a.rawValue, Int32(SHUT_WR)) == 0)
        let (inodeA, inodeB) = (try a.status().inode, try b.status().inode)
        let left = try UnixSocketDiagnosis.of(inode: inodeA)
        let right = try UnixSocketDiagnosis.of(inode: inodeB)
        #expect(left.type == Int32(SOCK_STREAM.rawValue))
        #expect(left.peer == UInt32(inodeB))
        #expect(right.peer == UInt32(inodeA))
        #expect(left.name == nil, "a socketpair is unnamed")
        #expect(right.queuedBytes == 5)
        #expect(left.sentMemory ?? 0 > 0, "its message is charged to the sender")
        #expect(left.shutdown == UnixSocketDiagnosis.sendShutdown)
        #expect(right.shutdown == UnixSocketDiagnosis.receiveShutdown, "a stream's shutdown shows on its peer")
        #expect(!left.isListening)
    }

    @Test func aClosedPeerIsInodeZeroAndAnUnknownInodeIsNoSuchFile() throws {
        let (a, b) = try FileDescriptor.socketPair(type: Int32(SOCK_DGRAM.rawValue))
        defer { a.close() }
        b.close()
        #expect(try UnixSocketDiagnosis.of(inode: a.status().inode).peer == 0)
        let lone = try FileDescriptor.socket(domain: AF_UNIX, type: Int32(SOCK_DGRAM.rawValue))
        defer { lone.close() }
        #expect(try UnixSocketDiagnosis.of(inode: lone.status().inode).peer == nil, "never connected")
        #expect(throws: Errno(rawValue: ENOENT)) { try UnixSocketDiagnosis.of(inode: UInt64(UInt32.max - 1)) }
    }

    /// Peeking from offset 0 sees every datagram with its bounds, and the queue is still there.
    @Test func peekingAtAnOffsetLeavesTheQueue() throws {
        let (a, b) = try FileDescriptor.socketPair(type: Int32(SOCK_DGRAM.rawValue))
        defer {
            a.close()
            b.close()
        }
        for message in ["one", "three"] { try Self.send(message, from: a) }
        try b.setSocketOption(.peekOffset, to: 0)
        var buffer = [UInt8](repeating: 0, count: 64)
        var seen: [String] = []
        for _ in 0..<2 {
            let count = try buffer.withMutableRawBytes { (raw) throws(Errno) in
                try b.receive(into: raw, flags: [.peek, .dontWait]).count
            }
            seen.append(String(decoding: buffer[..<count], as: UTF8.self))
        }
        #expect(throws: Errno.wouldBlock) {
            try buffer.withMutableRawBytes { (raw) throws(Errno) in
                _ = try b.receive(into: raw, flags: [.peek, .dontWait])
            }
        }
        try b.setSocketOption(.peekOffset, to: -1)
        #expect(seen == ["one", "three"])
        let count = try buffer.withMutableRawBytes { (raw) throws(Errno) in
            try b.receive(into: raw, flags: .dontWait).count
        }
        #expect(String(decoding: buffer[..<count], as: UTF8.self) == "one", "nothing was consumed")
        #expect(try a.readyEvents().isEmpty)
    }
}
