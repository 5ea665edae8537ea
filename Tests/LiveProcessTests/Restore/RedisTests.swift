import Foundation
import Syscall
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// Debian's `redis-server` (package redis-server, installed by scripts/setup.sh), started by
    /// the test in a network namespace of its own (its loopback only: no other program's
    /// connections or holds, and Redis's own port free), holding 10,000 keys, with a client
    /// outside its tree in
    /// the middle of a pipeline: 10,000 GETs sent, their replies (10 MB) partly in the client's
    /// receive queue, partly in the server's send queue and partly still in Redis's own output
    /// buffer. The server is checkpointed (a full generation, 100 keys changed, an incremental
    /// one taken with `--kill --tcp-established`), the client sends one more command while it
    /// is gone, and after `ld-chpox` the same connection reads every reply of its pipeline, the
    /// reply of the command it sent meanwhile, and goes on: every key reads back.
    @Suite struct RedisTests {
        /// A client speaking RESP over a raw socket, driven line by line on its stdin; it keeps
        /// what it wrote (a model) and checks the values it reads back against it.
        /// `python3 -c CLIENT PORT`: prints its local port once connected, then takes
        /// - `set FROM TO GEN`: SETs keys FROM..<TO to their values of generation GEN, pipelined,
        ///   reads the replies; prints "set N" (N replies +OK),
        /// - `get FROM TO`: sends GETs of those keys without reading a reply; prints "sent N",
        /// - `read FROM TO`: reads the replies of such GETs; prints "right N wrong M" (and the
        ///   first wrong key),
        /// - `send WORDS…`: sends one command, reads nothing; `reply`: reads one reply and prints
        ///   it; `ask WORDS…`: both.
        ///
        /// `python3 -c CLIENT PORT once WORDS…`: a connection of its own that sends the command
        /// and QUIT, prints the command's reply (newlines as " | ") and reads until the server
        /// has closed the connection (so that no socket of it is left in the server).
        static let client = """
            import socket, sys, time
            port = int(sys.argv[1])
            def command(*words):
                words = [w.encode() for w in words]
                return b"*%d\\r\\n" % len(words) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(w), w) for w in words)
            def key(i): return "key:%05d" % i
            def value(i, generation): return ("%s/%d;" % (key(i), generation) * 100)[:1000]
            deadline = time.time() + 30
            while True:
                try:
                    c = socket.create_connection(("127.0.0.1", port), timeout=120)
                    break
                except ConnectionRefusedError:
                    if time.time() > deadline: raise
                    time.sleep(0.05)
            replies = c.makefile("rb")
            def reply():
                line = replies.readline()
                if not line: return "closed"
                if line[:1] == b"$":
                    n = int(line[1:])
                    return "nil" if n < 0 else replies.read(n + 2)[:-2].decode()
                return line[:-2].decode()
            if sys.argv[2:3] == ["once"]:
                c.sendall(command(*sys.argv[3:]) + command("QUIT"))
                print(reply().strip().replace("\\n", " | "), flush=True)
                quit = reply()
                while replies.read(4096): pass
                sys.exit(0 if quit == "+OK" else 1)
            print(c.getsockname()[1], flush=True)
            model = {}
            for line in sys.stdin:
                words = line.split()
                if words[0] == "set":
                    first, last, generation = map(int, words[1:])
                    c.sendall(b"".join(command("SET", key(i), value(i, generation)) for i in range(first, last)))
                    for i in range(first, last): model[i] = generation
                    print("set", sum(reply() == "+OK" for i in range(first, last)), flush=True)
                elif words[0] == "get":
                    first, last = map(int, words[1:])
                    c.sendall(b"".join(command("GET", key(i)) for i in range(first, last)))
                    print("sent", last - first, flush=True)
                elif words[0] == "read":
                    first, last = map(int, words[1:])
                    wrong = [i for i in range(first, last) if reply() != value(i, model.get(i, -1))]
                    print("right", last - first - len(wrong), "wrong", len(wrong), *map(key, wrong[:1]), flush=True)
                elif words[0] == "send":
                    c.sendall(command(*words[1:]))
                    print("sent", flush=True)
                elif words[0] == "reply":
                    print(reply(), flush=True)
                elif words[0] == "ask":
                    c.sendall(command(*words[1:]))
                    print(reply(), flush=True)
            """

        static let keys = 10_000
        static let redisServer = "/usr/bin/redis-server"

        static var canRun: Bool {
            [redisServer, "/usr/bin/python3", "/usr/sbin/nft"].allSatisfy {
                FileManager.default.isExecutableFile(atPath: $0)
            } && TestNetwork.canMake
        }

        /// The reply of `words` on a connection of its own, closed by the server (QUIT).
        static func once(_ network: TestNetwork, _ port: String, _ words: String...) throws -> String {
            let run = try network.run("/usr/bin/python3", ["-c", client, port, "once"] + words)
            return run.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        /// The bytes Redis holds in its own output buffer for the client at `address`, from
        /// CLIENT LIST (its `omem` field).
        static func outputMemory(_ network: TestNetwork, _ port: String, client address: String) throws -> Int? {
            let clients = try once(network, port, "CLIENT", "LIST").components(separatedBy: " | ")
            guard let line = clients.first(where: { $0.contains(" addr=\(address) ") }) else { return nil }
            let field = line.split(separator: " ").first { $0.hasPrefix("omem=") }
            return field.flatMap { Int($0.dropFirst("omem=".count)) }
        }

        @Test(
            .enabled(
                if: canRun,
                "needs redis-server (package redis-server), nsenter and unshare (util-linux), ip, python3, nft and root"
            ),
            .timeLimit(.minutes(3)))
        func redisServesItsMidPipelineClientEveryKeyAfterKillAndRestart() throws {
            let directory = try RestartTests.scratch("redis")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store", log = directory + "/redis.log"
            let network = try TestNetwork()  // Redis, its client, cpx, ld-chpox and nft run in it
            let port = "6379"  // Redis's own: free in a namespace of the test's
            let server = try network.spawn(
                Self.redisServer,
                [
                    "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--dir", directory, "--logfile", log,
                ])
            let pid = server.pid
            defer { RestartTests.end(server) }
            let client = try network.spawn("/usr/bin/python3", ["-c", Self.client, port])
            defer { RestartTests.end(client) }
            let clientPort = try client.line()
            let address = "127.0.0.1:\(clientPort)"
            let connection = try PacketFilter.Connection(
                localHost: "127.0.0.1", localPort: #require(UInt16(port)), remoteHost: "127.0.0.1",
                remotePort: #require(UInt16(clientPort)))
            let shown = { "redis log:\n\(RealProgramTests.text(log).suffix(1500))" }

            try #require(try client.send("set 0 \(Self.keys) 0") == "set \(Self.keys)", "\(shown())")
            #expect(try client.send("ask SET counter 41") == "+OK")
            let id = try client.send("ask CLIENT ID")
            let cpx = TestTools.path("cpx")
            let options = ["--store", store, "--name", "redis", "--tcp-established"]
            let full = try network.run(cpx, options + ["\(pid)"])
            try #require(full.status == 0, "\(full.errors)")
            #expect(full.output.contains("generation 0 (full"), "\(full.output)")

            // What the incremental generation carries: 100 keys changed.
            #expect(try client.send("set 0 100 1") == "set 100")
            // Mid-pipeline: 10 MB of replies asked for, none read; wait until Redis has some of
            // them in its own output buffer (the socket's queues full).
            #expect(try client.send("get 0 \(Self.keys)") == "sent \(Self.keys)")
            let deadline = Date().addingTimeInterval(20)
            var buffered = try Self.outputMemory(network, port, client: address) ?? 0
            while buffered == 0 && Date() < deadline {
                usleep(20_000)
                buffered = try Self.outputMemory(network, port, client: address) ?? 0
            }
            try #require(buffered > 0, "Redis holds none of the pipeline's replies: \(shown())")

            let last = try network.run(cpx, options + ["--kill", "\(pid)"])
            try #require(last.status == 0, "\(last.errors)")
            #expect(last.output.contains("generation 1 (delta"), "\(last.output)")
            #expect(last.output.contains("held for the restart: the connection \(connection)"), "\(last.output)")
            // cpx returns once the killed server has closed it: a run beside it then sees the
            // connection closed, held for the restart, and leaves its hold.
            #expect(try network.heldSockets(local: connection.localPort, remote: connection.remotePort) == 0)
            #expect(try server.child.wait() == .signalled(SIGKILL))
            let held = try network.holdTable() ?? ""
            #expect(held.contains("chpox hold 127.0.0.1:\(port) \(address)"), "the connection is held: \(held)")
            try client.write("send INCR counter")  // sent while the server is gone
            #expect(try client.line() == "sent")
            Thread.sleep(forTimeInterval: 0.3)

            let restarted = try network.spawn(
                TestTools.path("ld-chpox"),
                TestTools.restartArguments(["--store", store, "--name", "redis", "--generation", "1", "--wait"]))
            defer {
                kill(pid, SIGKILL)  // the restarted server (its pid is the original's)
                RestartTests.end(restarted)
            }
            // The same connection: the pipeline's replies, then the command sent meanwhile.
            #expect(try client.send("read 0 \(Self.keys)") == "right \(Self.keys) wrong 0", "\(shown())")
            #expect(try client.send("reply") == ":42")
            #expect(try client.send("ask CLIENT ID") == id, "Redis sees the same client")
            // Every key read back again from the restarted server.
            #expect(try client.send("get 0 \(Self.keys)") == "sent \(Self.keys)")
            #expect(try client.send("read 0 \(Self.keys)") == "right \(Self.keys) wrong 0", "\(shown())")
            #expect(try Self.once(network, port, "DBSIZE") == ":\(Self.keys + 1)", "the listener takes a new client")
            #expect(try network.holdTable() == nil, "the restart leaves no rule (nor the table)")
        }
    }
}
