import Foundation
import Syscall
import TestTools
import Testing
import Tracee
import TrackerTestSupport

extension LiveProcess {
    /// `--tcp-close`: a Python client that reconnects when its connection fails, with a
    /// connection to an echo server outside its tree and a listening socket of its own. Its
    /// restart brings the connection back closed: its next write fails with EPIPE, it
    /// reconnects and goes on, and its listening socket still accepts. Everything runs in a
    /// network namespace the test makes (`TestNetwork`), on its loopback.
    @Suite struct TcpCloseTests {
        /// The echo server outside the tree: every line back in capitals, on any number of
        /// connections.
        static let server = """
            import socket, threading
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
            print(s.getsockname()[1], flush=True)
            def serve(c):
                for line in c.makefile("rb"): c.sendall(line.upper())
            while True:
                c, _ = s.accept()
                threading.Thread(target=serve, args=(c,), daemon=True).start()
            """

        /// The client: asks the server each word of its stdin on its connection, and on an
        /// error reconnects and asks again ("reconnected ERRNO ANSWER"); its listening socket
        /// answers "tree" to whoever connects. argv[2] more connections are opened and left
        /// idle. The first line: the listening port, the first answer, then the local port of
        /// each connection.
        static let client = """
            import errno, select, socket, sys
            port = int(sys.argv[1])
            listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(4)
            conn = socket.create_connection(("127.0.0.1", port))
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(int(sys.argv[2]))]
            def ask(word):
                conn.sendall(word.encode() + b"\\n")
                data = b""
                while not data.endswith(b"\\n"):
                    chunk = conn.recv(100)
                    if not chunk: raise ConnectionError(0, "end of file")
                    data += chunk
                return data.decode().strip()
            print(listener.getsockname()[1], ask("one"), *[c.getsockname()[1] for c in [conn] + idle], flush=True)
            while True:
                ready, _, _ = select.select([sys.stdin, listener], [], [])
                if listener in ready:
                    c, _ = listener.accept(); c.sendall(b"tree\\n"); c.close()
                if sys.stdin in ready:
                    word = sys.stdin.readline().strip()
                    if not word: break
                    try:
                        print(ask(word), flush=True)
                    except OSError as e:
                        conn.close()
                        conn = socket.create_connection(("127.0.0.1", port))
                        print("reconnected", errno.errorcode.get(e.errno, "EOF"), ask(word), flush=True)
            """

        /// What the listening socket on `port` in `network` says to a new connection.
        static func greeting(_ port: String, in network: TestNetwork) throws -> String {
            let script =
                "import socket; print(socket.create_connection(('127.0.0.1', \(port))).recv(100).decode().strip())"
            return try network.run("/usr/bin/python3", ["-c", script]).output.trimmingCharacters(
                in: .whitespacesAndNewlines)
        }

        /// The client and its server in `network`, once it has had its first answer: the client,
        /// its listening port, and its connections as "LOCAL to REMOTE".
        static func connected(
            in network: TestNetwork, idle: Int = 0
        ) throws -> (server: WorkloadProcess, client: WorkloadProcess, listening: String, connections: [String]) {
            let server = try network.spawn("/usr/bin/python3", ["-c", Self.server])
            let port = try server.line()
            let client = try network.spawn("/usr/bin/python3", ["-c", Self.client, port, "\(idle)"])
            let first = try client.line().split(separator: " ").map(String.init)
            guard first.count == 3 + idle, first[1] == "ONE" else {
                RestartTests.end(client)
                RestartTests.end(server)
                throw POSIXError(.EPROTO)
            }
            let connections = first.dropFirst(2).map { "127.0.0.1:\($0) to 127.0.0.1:\(port)" }
            return (server, client, first[0], connections)
        }

        static var canRun: Bool {
            FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") && TestNetwork.canMake
        }

        static var canHold: Bool { canRun && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") }

        /// The restart's chpox.restart/1 document (`ld-chpox --json --wait` prints it first).
        static func restartDocument(_ restarted: WorkloadProcess) throws -> [String: Any] {
            let line = try restarted.line()
            #expect(try JSONSchemaCheck().problems(line) == [])
            return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }

        @Test(.enabled(if: canRun, "needs python3, unshare, nsenter, ip and root"), .timeLimit(.minutes(2)))
        func aClientReconnectsAfterItsConnectionIsRestoredClosed() throws {
            let directory = try RestartTests.scratch("tcp-close")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let network = try TestNetwork()
            let (server, original, listening, connections) = try Self.connected(in: network)
            defer { RestartTests.end(server) }
            let connection = try #require(connections.first)

            let taken = try network.run(
                "cpx", ["--store", store, "--name", "tc", "--tcp-close", "--kill", "\(original.pid)"])
            #expect(taken.status == 0, "\(taken.errors)")
            #expect(
                taken.output.contains("closed at the restart (--tcp-close): the connection \(connection)"),
                "\(taken.output)")
            #expect(try original.child.wait() == .signalled(SIGKILL))
            let shown = try network.run("dumpinfo", ["--store", store, "--name", "tc", "--generation", "0"])
            #expect(shown.output.contains("connection   \(connection), fd"), "\(shown.output)")
            #expect(shown.output.contains("closed at the restart (cpx --tcp-close)"), "\(shown.output)")
            let json = try network.run("dumpinfo", ["--store", store, "--name", "tc", "--generation", "0", "--json"])
            #expect(try JSONSchemaCheck().problems(json.output) == [])
            #expect(json.output.contains("closedConnections"), "\(json.output)")

            // No option needed: the image says the connection comes back closed.
            let restarted = try network.spawn(
                TestTools.path("ld-chpox"), ["--store", store, "--name", "tc", "--wait", "--json"])
            defer { RestartTests.end(restarted) }
            let document = try Self.restartDocument(restarted)
            let closed = document["closedConnections"] as? [String] ?? []
            #expect(closed.count == 1 && closed.allSatisfy { $0.hasSuffix(": \(connection)") }, "\(document)")
            #expect(try restarted.send("two") == "reconnected EPIPE TWO")
            #expect(try restarted.send("three") == "THREE")
            #expect(try Self.greeting(listening, in: network) == "tree", "the listening socket in the tree accepts")
        }

        @Test(.enabled(if: canHold, "needs python3, unshare, nsenter, ip, nft and root"), .timeLimit(.minutes(2)))
        func aHeldConnectionRestartedClosedIsReleased() throws {
            let directory = try RestartTests.scratch("tcp-close-held")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let network = try TestNetwork()
            let (server, original, listening, connections) = try Self.connected(in: network)
            defer { RestartTests.end(server) }
            let connection = try #require(connections.first)
            let rule = "chpox hold " + connection.replacingOccurrences(of: " to ", with: " ")
            func ruleListed() throws -> Bool {
                try network.run("/usr/sbin/nft", ["list", "table", "inet", "chpox_hold"]).output.contains(rule)
            }

            let taken = try network.run(
                "cpx", ["--store", store, "--name", "th", "--tcp-established", "--kill", "\(original.pid)"])
            #expect(taken.status == 0, "\(taken.errors)")
            #expect(taken.output.contains("held for the restart: the connection \(connection)"), "\(taken.output)")
            #expect(try original.child.wait() == .signalled(SIGKILL))
            #expect(try ruleListed())
            let plan = try network.run("ld-chpox", ["--store", store, "--name", "th", "--plan", "--tcp-close"])
            #expect(plan.output.contains("closed (its connection \(connection) is not restored"), "\(plan.output)")

            let restarted = try network.spawn(
                TestTools.path("ld-chpox"), ["--store", store, "--name", "th", "--wait", "--json", "--tcp-close"])
            defer { RestartTests.end(restarted) }
            let document = try Self.restartDocument(restarted)
            let notices = document["notices"] as? [String] ?? []
            #expect(notices.contains { $0.hasPrefix("released the hold") && $0.contains(connection) }, "\(notices)")
            #expect((document["closedConnections"] as? [String] ?? []).count == 1, "\(document)")
            #expect(try !ruleListed(), "the restart releases the hold of the connection it closed")
            #expect(try restarted.send("two") == "reconnected EPIPE TWO")
            #expect(try restarted.send("three") == "THREE")
            #expect(try Self.greeting(listening, in: network) == "tree", "the listening socket in the tree accepts")
        }

        @Test(.enabled(if: canRun, "needs python3, unshare, nsenter, ip and root"), .timeLimit(.minutes(2)))
        func aConnectionToAPeerOutsideIsRefusedWithEachListedAndBothOptionsNamed() throws {
            let directory = try RestartTests.scratch("tcp-close-refused")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let network = try TestNetwork()
            let (server, client, _, connections) = try Self.connected(in: network, idle: 1)
            defer { RestartTests.end(server) }
            defer { RestartTests.end(client) }

            let refused = try network.run("cpx", ["--store", store, "--name", "tr", "\(client.pid)"])
            #expect(refused.status == 1, "\(refused.errors)")
            for connection in connections {
                let lines = refused.errors.split(separator: "\n").filter { $0.contains(connection) }
                #expect(lines.count == 1, "\(connection): \(refused.errors)")
                #expect(lines.allSatisfy { $0.contains("--tcp-established") && $0.contains("--tcp-close") })
            }
            #expect(try client.send("alive") == "ALIVE", "the refused process runs on")
            let both = try network.run(
                "cpx", ["--store", store, "--name", "tr", "--tcp-established", "--tcp-close", "\(client.pid)"])
            #expect(both.status == 64, "\(both.errors)")
        }
    }
}
