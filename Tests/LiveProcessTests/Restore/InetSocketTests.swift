import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// A Python server checkpointed with a listening TCP socket on 127.0.0.1 and on ::1, a bound
    /// UDP socket, and an established loopback TCP connection (both ends its own) with data
    /// unread both ways; killed and restarted. The restarted process finds its queued data, goes
    /// on exchanging data over the connection, and accepts connections and answers datagrams on
    /// the ports it had (a client the test starts connects to them).
    @Suite struct InetSocketTests {
        static let server = """
            import socket, sys
            def exactly(s, n):
                data = b""
                while len(data) < n:
                    chunk = s.recv(n - len(data))
                    if not chunk: break
                    data += chunk
                return data
            srv4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv4.bind(("127.0.0.1", 0)); srv4.listen(8)
            srv6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            srv6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            srv6.bind(("::1", 0)); srv6.listen(4)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 0))
            a = socket.create_connection(("127.0.0.1", srv4.getsockname()[1]))
            a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            b, _ = srv4.accept()
            a.sendall(b"to-b" * 1000); b.sendall(b"to-a" * 500)
            print(srv4.getsockname()[1], srv6.getsockname()[1], udp.getsockname()[1], flush=True)
            for line in sys.stdin:
                queued = exactly(b, 4000) == b"to-b" * 1000 and exactly(a, 2000) == b"to-a" * 500
                a.sendall(b"more"); more = exactly(b, 4)
                b.sendall(b"back"); back = exactly(a, 4)
                options = (srv4.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0,
                           srv6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
                           a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0)
                print(queued, more.decode(), back.decode(), *options, flush=True)
                c4, _ = srv4.accept(); c4.sendall(b"hi4"); c4.close()
                c6, _ = srv6.accept(); c6.sendall(b"hi6"); c6.close()
                data, sender = udp.recvfrom(100); udp.sendto(data.upper(), sender)
            """

        static let client = """
            import socket, sys
            p4, p6, pu = map(int, sys.argv[1:])
            c4 = socket.create_connection(("127.0.0.1", p4), timeout=10)
            c6 = socket.create_connection(("::1", p6), timeout=10)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
            u.sendto(b"ping", ("127.0.0.1", pu))
            print(c4.recv(3).decode(), c6.recv(3).decode(), u.recvfrom(10)[0].decode())
            """

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func aServerKeepsItsPortsAndItsConnection() throws {
            let directory = try RestartTests.scratch("inet")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.server])
            let ports = try original.line().split(separator: " ").map(String.init)
            try #require(ports.count == 3)
            try RestartTests.checkpoint(original.pid, store: store, name: "inet")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "0"])
            #expect(shown.output.contains("listening on 127.0.0.1:\(ports[0])"), "\(shown.output)")
            #expect(shown.output.contains("listening on [::1]:\(ports[1])"), "\(shown.output)")
            #expect(shown.output.contains("bytes to read"), "\(shown.output)")
            RestartTests.end(original)

            let restarted = try RestartTests.restart(store: store, name: "inet", generation: 0)
            defer { RestartTests.end(restarted) }
            try restarted.write("go")
            #expect(try restarted.line() == "True more back True 1 True")
            let client = Process()
            client.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            client.arguments = ["-c", Self.client] + ports
            let output = Pipe()
            client.standardOutput = output
            try client.run()
            let answer = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            client.waitUntilExit()
            #expect(answer == "hi4 hi6 PING\n")
            #expect(client.terminationStatus == 0)
        }
    }
}
