#if canImport(Glibc)
import Glibc
#endif
@testable import Syscall
import Testing

/// What sock_diag says of a TCP connection of this process, asked by its addresses (one lookup)
/// and found by its inode in a dump alike: the facts a checkpoint's socket capture stands on.
@Suite struct InetSocketDiagnosisTests {
    /// A listener on 127.0.0.1 (any port), a client connected to it and the accepted end.
    static func connection() throws -> (listener: FileDescriptor, client: FileDescriptor, server: FileDescriptor) {
        let listener = try FileDescriptor.socket(domain: AF_INET, type: Int32(SOCK_STREAM.rawValue))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try #require(bind(listener.rawValue, $0, length) == 0)
            }
        }
        try #require(listen(listener.rawValue, 4) == 0)
        try withUnsafeMutablePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try #require(getsockname(listener.rawValue, $0, &length) == 0)
            }
        }
        let client = try FileDescriptor.socket(domain: AF_INET, type: Int32(SOCK_STREAM.rawValue))
        try withUnsafePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try #require(connect(client.rawValue, $0, length) == 0)
            }
        }
        let accepted = accept(listener.rawValue, nil, nil)
        try #require(accepted >= 0)
        return (listener, client, FileDescriptor(rawValue: accepted))
    }

    @Test func aConnectionIsFoundByItsAddressesAsInADump() throws {
        let (listener, client, server) = try Self.connection()
        defer { [listener, client, server].forEach { $0.close() } }
        for socket in [client, server] {
            let inode = try socket.status().inode
            let local = try socket.localAddress(), remote = try #require(try socket.peerAddress())
            let looked = try InetSocketDiagnosis.ask(inode, AF_INET, Int32(IPPROTO_TCP), lookup: (local, remote))
            let dumped = try InetSocketDiagnosis.ask(inode, AF_INET, Int32(IPPROTO_TCP), lookup: nil)
            #expect(looked != nil, "the lookup by addresses finds it")
            #expect(looked == dumped)
            #expect(
                try InetSocketDiagnosis.of(
                    inode: inode, family: AF_INET, protocol: Int32(IPPROTO_TCP),
                    local: local, remote: remote) == dumped)
        }
        // Established both ways above (states that hold still); shut down now, SEND_SHUTDOWN shows.
        #expect(shutdown(client.rawValue, Int32(SHUT_WR)) == 0)
        let sent = try InetSocketDiagnosis.of(
            inode: try client.status().inode, family: AF_INET, protocol: Int32(IPPROTO_TCP),
            local: try client.localAddress(), remote: try client.peerAddress())
        #expect(sent?.shutdown == 2, "SEND_SHUTDOWN after shutdown(SHUT_WR)")
        // Another socket's addresses find that one, not this inode: no answer.
        let wrong = try InetSocketDiagnosis.ask(
            try client.status().inode, AF_INET, Int32(IPPROTO_TCP),
            lookup: (try server.localAddress(), try #require(try server.peerAddress())))
        #expect(wrong == nil)
    }
}
