import Foundation
import Syscall
import TestTools
import Testing
import Tracee
import TrackerTestSupport

extension LiveProcess {
    /// A Python echo server whose client is outside the checkpointed tree (the test starts it
    /// separately): `cpx --kill --tcp-established` kills the server with the connection held
    /// (an nftables rule drops its packets both ways, `PacketFilter`), the client sends while
    /// the server is gone, and after `ld-chpox` the same connection answers: nothing was reset,
    /// and the rule is gone. Each test runs in a network namespace of its own (`TestNetwork`):
    /// its holds are in that namespace's table, apart from the host's and other runs'.
    @Suite struct HeldConnectionTests {
        static let server = """
            import socket
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
            print(s.getsockname()[1], flush=True)
            c, _ = s.accept()
            for line in c.makefile("rb"):
                c.sendall(line.upper())
            """

        static let client = """
            import socket, sys
            c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
            def ask(word):
                c.sendall(word.encode() + b"\\n")
                data = b""
                while not data.endswith(b"\\n"):
                    chunk = c.recv(100)
                    if not chunk: return "closed"
                    data += chunk
                return data.decode().strip()
            print(ask("one"), c.getsockname()[1], flush=True)
            for line in sys.stdin:
                try: print(ask(line.strip()), flush=True)
                except OSError as e: print("error", e.errno, flush=True)
            """

        static var canHold: Bool {
            FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
                && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") && TestNetwork.canMake
        }

        /// The server, its client (outside its tree) once it has had an answer, and their
        /// connection as the server's end sees it, all in `network`.
        static func connected(
            in network: TestNetwork
        ) throws -> (WorkloadProcess, WorkloadProcess, PacketFilter.Connection) {
            let server = try network.spawn("/usr/bin/python3", ["-c", Self.server])
            let port = try server.line()
            let client = try network.spawn("/usr/bin/python3", ["-c", Self.client, port])
            let first = try client.line().split(separator: " ")
            guard first.count == 2, first[0] == "ONE", let local = UInt16(port), let remote = UInt16(first[1]) else {
                RestartTests.end(client)
                RestartTests.end(server)
                throw POSIXError(.EPROTO)
            }
            let connection = PacketFilter.Connection(
                localHost: "127.0.0.1", localPort: local, remoteHost: "127.0.0.1", remotePort: remote)
            return (server, client, connection)
        }

        /// The rules of `network`'s hold table on `connection`.
        static func rules(
            for connection: PacketFilter.Connection, in network: TestNetwork
        ) throws -> [PacketFilter.Rule] {
            try network.holdRules().filter { $0.connection == connection }
        }

        @Test(
            .enabled(if: canHold, "needs python3, nft (package nftables), unshare, nsenter, ip and root"),
            .timeLimit(.minutes(2)))
        func aConnectionToAPeerOutsideSurvivesKillAndRestart() throws {
            let directory = try RestartTests.scratch("held")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let network = try TestNetwork()
            let (original, client, connection) = try Self.connected(in: network)
            defer { RestartTests.end(client) }

            // Without --tcp-established the connection is refused, naming it.
            let refused = try network.run("cpx", ["--store", store, "--name", "held", original.pid.description])
            #expect(refused.status != 0)
            #expect(refused.errors.contains("whose peer is outside the checkpointed tree"), "\(refused.errors)")
            let base = try network.run(
                "cpx", ["--store", store, "--name", "held", "--tcp-established", original.pid.description])
            #expect(base.status == 0, "\(base.errors)")
            #expect(try Self.rules(for: connection, in: network).isEmpty, "a generation without --kill holds nothing")
            #expect(try client.send("alive") == "ALIVE")

            let last = try network.run(
                "cpx", ["--store", store, "--name", "held", "--tcp-established", "--kill", original.pid.description])
            #expect(last.status == 0, "\(last.errors)")
            #expect(last.output.contains("held for the restart: the connection \(connection)"), "\(last.output)")
            #expect(try original.child.wait() == .signalled(SIGKILL))
            let held = try Self.rules(for: connection, in: network)
            #expect(Set(held.map(\.chain)) == ["input", "output"], "\(held)")
            let shown = try network.run("dumpinfo", ["--store", store, "--name", "held", "--generation", "1"])
            #expect(shown.output.contains("connection   \(connection), fd"), "\(shown.output)")
            #expect(shown.output.contains("peer outside the tree: held now"), "\(shown.output)")
            let json = try network.run(
                "dumpinfo", ["--store", store, "--name", "held", "--generation", "1", "--json"])
            #expect(json.output.contains("\"held\":true") || json.output.contains("\"held\" : true"), "\(json.output)")
            #expect(try JSONSchemaCheck().problems(json.output) == [])

            // Sent while the server is gone: held, retransmitted, answered after the restart.
            try client.write("held")
            Thread.sleep(forTimeInterval: 0.5)
            let restarted = try network.spawn(
                "ld-chpox", ["--store", store, "--name", "held", "--generation", "1", "--wait"])
            defer { RestartTests.end(restarted) }
            #expect(try client.line() == "HELD")
            #expect(try client.send("after") == "AFTER")
            #expect(try Self.rules(for: connection, in: network).isEmpty, "the restart releases the hold")
            let after = try network.run("dumpinfo", ["--store", store, "--name", "held", "--generation", "1"])
            #expect(after.output.contains("peer outside the tree: not held now"), "\(after.output)")
        }

        /// The owner a hold names when the run that made it has gone: a process that has exited
        /// (its pid with a start time no process has).
        static func goneOwner() throws -> PacketFilter.Owner {
            let gone = try ChildProcess.spawn("/bin/true", [])
            _ = try gone.wait()
            return PacketFilter.Owner(pid: gone.pid, startTime: 0)
        }

        /// A hold made by a run that still works on it (a cpx between its hold and its kill, a
        /// restart between making the socket and releasing it) is that run's: a cpx or an
        /// ld-chpox run beside it leaves it, though its connection is open; once its owner has
        /// gone the next run removes it. (Two cpx runs at once, each checkpointing a server of
        /// its own, took each other's holds away: the peer of the one killed was reset.)
        @Test(
            .enabled(if: canHold, "needs python3, nft (package nftables), unshare, nsenter, ip and root"),
            .timeLimit(.minutes(2)))
        func aHoldWhoseOwnerRunsIsLeftByTheRunsBesideIt() throws {
            let directory = try RestartTests.scratch("heldowner")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let network = try TestNetwork()
            let (server, client, connection) = try Self.connected(in: network)
            defer { RestartTests.end(server) }
            defer { RestartTests.end(client) }
            let owner = try WorkloadProcess(executable: "/bin/cat", arguments: [])  // runs until killed
            let identity = try Self.identity(of: owner.pid)
            try network.hold([connection], owner: identity)
            let made = try Self.rules(for: connection, in: network)
            #expect(Set(made.map(\.owner)) == [identity], "the rules name their owner: \(made)")

            // Beside it: a cpx of the server, and a checkpoint and restart of another process.
            let store = directory + "/store"
            let beside = try network.run(
                "cpx", ["--store", store, "--name", "server", "--tcp-established", "\(server.pid)"])
            #expect(beside.status == 0, "\(beside.errors)")
            let other = try network.spawn("/bin/cat", [])
            let taken = try network.run("cpx", ["--store", store, "--name", "other", "\(other.pid)"])
            #expect(taken.status == 0, "\(taken.errors)")
            RestartTests.end(other)
            let restarted = try network.spawn(
                "ld-chpox", ["--store", store, "--name", "other", "--generation", "0", "--wait"])
            #expect(try restarted.send("again") == "again")
            RestartTests.end(restarted)
            #expect(try Self.rules(for: connection, in: network) == made, "runs beside the owner leave its hold")

            RestartTests.end(owner)
            let next = try network.run(
                "cpx", ["--store", store, "--name", "server", "--tcp-established", "\(server.pid)"])
            #expect(next.status == 0, "\(next.errors)")
            #expect(
                try Self.rules(for: connection, in: network).isEmpty, "the owner gone, the next run removes the hold")
            #expect(try client.send("free") == "FREE")
        }

        /// The owner identity of the running process `pid`.
        static func identity(of pid: Int32) throws -> PacketFilter.Owner {
            let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
            let fields = try #require(stat.split(separator: ")").last).split(separator: " ")
            return PacketFilter.Owner(pid: pid, startTime: try #require(UInt64(fields[19])))
        }

        /// `cpx --kill` SIGKILLed at instants across its run: each time either the server still
        /// runs (let go, it answers, and no rule is left on its connection once the next cpx
        /// has started) or it was killed with its connection held and restarts; either way the
        /// client's connection goes on.
        @Test(
            .enabled(if: canHold, "needs python3, nft (package nftables), unshare, nsenter, ip and root"),
            .timeLimit(.minutes(4)))
        func aKilledCpxNeverLeavesAConnectionHeldOrBroken() throws {
            let directory = try RestartTests.scratch("heldkill")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let network = try TestNetwork()
            let (original, client, connection) = try Self.connected(in: network)
            let pid = original.pid
            var owner = original  // the server's parent: the test, then ld-chpox --wait
            defer { RestartTests.end(owner) }
            defer { RestartTests.end(client) }
            let options = ["--store", store, "--name", "k", "--tcp-established"]
            // A hold left on a connection that runs on (a cpx that died after making it): the
            // next cpx removes it before anything else.
            try network.hold([connection], owner: try Self.goneOwner())
            #expect(try Self.rules(for: connection, in: network).count == 2)
            let sweep = try network.run("cpx", options + ["\(pid)"])
            #expect(sweep.status == 0, "\(sweep.errors)")
            #expect(
                try Self.rules(for: connection, in: network).isEmpty,
                "the next cpx removes a hold on a running connection")
            #expect(try client.send("swept") == "SWEPT")
            var outcomes: [String] = []
            for (k, delay) in [0.02, 0.08, 0.15, 0.25, 0.4, 5.0].enumerated() {
                let cpx = try network.start("cpx", options + ["--kill", "\(pid)"])
                Thread.sleep(forTimeInterval: delay)
                try? cpx.send(SIGKILL)
                _ = try cpx.wait()
                try? Signal.send(SIGCONT, to: pid)  // a process cpx stopped for the kill is let go
                Thread.sleep(forTimeInterval: 0.1)
                let state = try? ProcFS.state(pid)
                if let state, state != "Z" {
                    // The next cpx (a generation, the server running on) removes a hold left on it.
                    let next = try network.run("cpx", options + ["\(pid)"])
                    #expect(next.status == 0, "round \(k): \(next.errors)")
                    #expect(
                        try Self.rules(for: connection, in: network).isEmpty,
                        "round \(k): a rule holds a running connection")
                    #expect(try client.send("r\(k)") == "R\(k)", "round \(k): the server runs on")
                    outcomes.append("ran on")
                } else {
                    _ = try? owner.child.wait()
                    owner = try network.spawn("ld-chpox", ["--store", store, "--name", "k", "--wait"])
                    #expect(try client.send("r\(k)") == "R\(k)", "round \(k): the restarted server answers")
                    #expect(
                        try Self.rules(for: connection, in: network).isEmpty,
                        "round \(k): the restart releases the hold")
                    outcomes.append("restarted")
                }
            }
            #expect(outcomes.contains("restarted"), "\(outcomes)")
            #expect(outcomes.contains("ran on"), "\(outcomes)")
        }

        /// Python's http.server (HTTP/1.1, keep-alive) serving a file, with a client outside its
        /// tree holding one connection: the server is checkpointed with --kill between two
        /// requests, the client sends its next request while the server is gone, and after the
        /// restart it gets the right answer on the same connection.
        static let httpServer = """
            import http.server, os, sys
            os.chdir(sys.argv[1])
            class Handler(http.server.SimpleHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                def log_message(self, *args): pass
            server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
            print(server.server_address[1], flush=True)
            server.serve_forever()
            """

        static let httpClient = """
            import http.client, sys
            c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
            def get(path):
                c.request("GET", path)
                r = c.getresponse()
                return "%d %s" % (r.status, r.read().decode().strip())
            print(get("/a.txt"), c.sock.getsockname()[1], flush=True)
            for line in sys.stdin:
                print(get(line.strip()), c.sock.getsockname()[1], flush=True)
            """

        @Test(
            .enabled(if: canHold, "needs python3, nft (package nftables), unshare, nsenter, ip and root"),
            .timeLimit(.minutes(2)))
        func anHTTPServerAnswersAKeepAliveClientAfterItsRestart() throws {
            let directory = try RestartTests.scratch("held-http")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            try FileManager.default.createDirectory(atPath: directory + "/www", withIntermediateDirectories: true)
            try "first".write(toFile: directory + "/www/a.txt", atomically: true, encoding: .utf8)
            try "second".write(toFile: directory + "/www/b.txt", atomically: true, encoding: .utf8)
            let network = try TestNetwork()
            let server = try network.spawn("/usr/bin/python3", ["-c", Self.httpServer, directory + "/www"])
            let port = try server.line()
            let client = try network.spawn("/usr/bin/python3", ["-c", Self.httpClient, port])
            defer { RestartTests.end(client) }
            let first = try client.line().split(separator: " ")
            try #require(first.count == 3 && first[0] == "200" && first[1] == "first", "\(first)")
            let options = ["--store", store, "--name", "http", "--tcp-established"]
            let base = try network.run("cpx", options + ["\(server.pid)"])
            #expect(base.status == 0, "\(base.errors)")
            #expect(try client.send("/b.txt") == "200 second \(first[2])")
            let last = try network.run("cpx", options + ["--kill", "\(server.pid)"])
            #expect(last.status == 0, "\(last.errors)")
            #expect(try server.child.wait() == .signalled(SIGKILL))
            try client.write("/a.txt")  // sent while the server is gone
            Thread.sleep(forTimeInterval: 0.3)
            let restarted = try network.spawn(
                "ld-chpox", ["--store", store, "--name", "http", "--generation", "1", "--wait"])
            defer { RestartTests.end(restarted) }
            #expect(try client.line() == "200 first \(first[2])", "the same connection (its port) answers")
            #expect(try client.send("/b.txt") == "200 second \(first[2])")
        }
    }
}
