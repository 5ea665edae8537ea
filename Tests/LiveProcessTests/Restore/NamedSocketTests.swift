import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// UNIX sockets beyond a process's own pairs: listening on a path and on an abstract name,
    /// an unconnected datagram socket bound to a path with a message queued, a datagram socket
    /// connected to it, and a pair whose ends are in a parent and its child.
    @Suite struct NamedSocketTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// The parent listens on DIR/server and on an abstract name, holds DIR/dgram with one
        /// message queued and a client connected to it, and one end of a stream pair whose other
        /// end its child holds. Told "go", it reads the queued message, sends the client's
        /// message, has the child answer through the pair (with the pid SO_PEERCRED names),
        /// prints what it saw, then accepts one connection on each listener and echoes.
        static let program = """
            import os, socket, struct, sys
            U = socket.AF_UNIX
            d = sys.argv[1]
            listener = socket.socket(U); listener.bind(d + "/server"); listener.listen(5)
            os.chmod(d + "/server", 0o640)
            abstract = socket.socket(U); abstract.bind("\\0chpox-named-" + str(os.getpid())); abstract.listen(3)
            dgram = socket.socket(U, socket.SOCK_DGRAM); dgram.bind(d + "/dgram")
            socket.socket(U, socket.SOCK_DGRAM).sendto(b"queued", d + "/dgram")
            client = socket.socket(U, socket.SOCK_DGRAM); client.connect(d + "/dgram")
            a, b = socket.socketpair(U, socket.SOCK_STREAM)
            child = os.fork()
            if child == 0:
                a.close()
                line = b.recv(100)
                pid = struct.unpack("3i", b.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
                b.send(line.upper() + b" " + str(pid == os.getppid()).encode())
                os._exit(0)
            b.close()
            print("ready", child, flush=True)
            sys.stdin.readline()
            out = [dgram.recv(100).decode()]
            client.send(b"from-client")
            out.append(dgram.recv(100).decode())
            a.send(b"ping")
            out.append(a.recv(100).decode())
            out.append(oct(os.stat(d + "/server").st_mode & 0o777))
            out.append(str(listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)))
            print(" ".join(out), flush=True)
            for s in (listener, abstract):
                c, _ = s.accept()
                c.send(b"echo:" + c.recv(100))
                c.close()
            os.waitpid(child, 0)
            """

        static let client = """
            import socket, sys
            out = []
            for name in (sys.argv[1], "\\0chpox-named-" + sys.argv[2]):
                s = socket.socket(socket.AF_UNIX); s.connect(name); s.send(b"hello"); out.append(s.recv(100).decode())
            print(" ".join(out))
            """

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(3)))
        func namedListeningAndCrossProcessSocketsComeBack() throws {
            try ProcessTreeTests.asSubreaper {
                let directory = try RestartTests.scratch("named-sockets")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store = directory + "/store"
                let original = try WorkloadProcess(
                    executable: "/usr/bin/python3", arguments: ["-c", Self.program, directory])
                let child = ProcessTreeTests.ids(try original.line())[0]
                try RestartTests.checkpoint(original.pid, store: store, name: "named")
                let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "0"])
                #expect(shown.output.contains("listening (backlog 5), bound to \(directory)/server"), "\(shown.output)")
                #expect(shown.output.contains("bound to @chpox-named-\(original.pid)"), "\(shown.output)")
                // The stale socket files stay behind, as a killed server leaves them.
                ProcessTreeTests.killTree([original.pid, child])
                #expect(FileManager.default.fileExists(atPath: directory + "/server"))
                let restarted = try RestartTests.restart(store: store, name: "named", generation: 0)
                #expect(try restarted.send("go") == "queued from-client PING True 0o640 1")
                let client = try TestTools.run(
                    "/usr/bin/python3", ["-c", Self.client, directory + "/server", "\(original.pid)"])
                #expect(client.output.trimmingCharacters(in: .whitespacesAndNewlines) == "echo:hello echo:hello")
                #expect(try restarted.child.wait() == .exited(0))
            }
        }

        /// A server holding a connection it accepted from its listener (bytes queued both ways,
        /// the client end shut down for reading) and two clients still in the listener's accept
        /// queue; told "go", it checks the names each end shows, the queued bytes, the shutdown,
        /// then accepts the waiting ones in their order and checks which client each is.
        static let acceptedProgram = """
            import socket, sys
            U = socket.AF_UNIX
            d = sys.argv[1]
            listener = socket.socket(U); listener.bind(d + "/srv"); listener.listen(4)
            client = socket.socket(U); client.connect(d + "/srv")
            served, _ = listener.accept()
            client.send(b"to-server"); served.send(b"to-client")
            client.shutdown(socket.SHUT_RD)
            waiting = [socket.socket(U), socket.socket(U)]
            for k, w in enumerate(waiting):
                w.bind("\\0chpox-waiting-%d-%s" % (k, d.replace("/", "-"))); w.connect(d + "/srv")
            print("ready", flush=True)
            sys.stdin.readline()
            out = [served.getsockname(), served.getpeername() or "-", client.getsockname() or "-", client.getpeername()]
            out += [served.recv(100).decode(), client.recv(100).decode()]
            try:
                client.send(b"x"); served.send(b"y"); out.append("no-epipe")
            except BrokenPipeError:
                out.append("epipe")
            for k in range(2):
                c, _ = listener.accept()
                out.append(str(c.getpeername() == waiting[k].getsockname()))
            print(" ".join(x if isinstance(x, str) else repr(x) for x in out), flush=True)
            """

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(3)))
        func acceptedAndWaitingConnectionsComeBackThroughTheirListener() throws {
            let directory = try RestartTests.scratch("accepted-sockets")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", Self.acceptedProgram, directory])
            #expect(try original.line() == "ready")
            try RestartTests.checkpoint(original.pid, store: store, name: "accepted")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "0"])
            #expect(shown.output.contains("2 connections not accepted yet"), "\(shown.output)")
            #expect(shown.output.contains("accepted from socket"), "\(shown.output)")
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: store, name: "accepted", generation: 0)
            // What the original would print, reading its own sockets: the accepted end bears
            // the listener's name, the client none; each queue holds what was sent; the
            // client's read shutdown stands (the server's send fails); the waiting clients are
            // accepted in the order they connected.
            let expected = "\(directory)/srv - - \(directory)/srv to-server to-client epipe True True"
            #expect(try restarted.send("go") == expected)
            #expect(try restarted.child.wait() == .exited(0))
        }

        /// A datagram socket bound in a directory, a client connected to it, the name unlinked
        /// and the directory removed (zdtm sk-unix01): restarted, the socket keeps its name, the
        /// directory is gone again, and the client's datagram reaches it.
        static let goneDirectoryProgram = """
            import os, socket, sys
            sub = sys.argv[1] + "/gone/deeper"
            os.makedirs(sub)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); server.bind(sub + "/s")
            client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); client.connect(sub + "/s")
            os.unlink(sub + "/s"); os.rmdir(sub); os.rmdir(sys.argv[1] + "/gone")
            print("ready", flush=True)
            sys.stdin.readline()
            client.send(b"through")
            print(server.recv(100).decode(), server.getsockname() == sub + "/s",
                  os.path.exists(sys.argv[1] + "/gone"), flush=True)
            """

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aSocketWhoseDirectoryIsGoneKeepsItsName() throws {
            let directory = try RestartTests.scratch("gone-dir-socket")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", Self.goneDirectoryProgram, directory])
            #expect(try original.line() == "ready")
            try RestartTests.checkpoint(original.pid, store: store, name: "gone")
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: store, name: "gone", generation: 0)
            defer { RestartTests.end(restarted) }
            #expect(try restarted.send("go") == "through True False")
            #expect(!FileManager.default.fileExists(atPath: directory + "/gone"))
        }
    }
}
