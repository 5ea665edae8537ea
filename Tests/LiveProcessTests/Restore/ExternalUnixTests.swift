import Foundation
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// `cpx --external-unix` (issue 14): a Python client in the tree connected to a UNIX stream
    /// server outside it, bound to a path. Named `PATH=reconnect`, the restarted client's next
    /// request on the same descriptor reaches the server through a new connection; named
    /// `unix:INODE=close`, its next write fails with EPIPE; not named, cpx refuses it, naming the
    /// socket, its peer and the option, and leaves the client running.
    @Suite struct ExternalUnixTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// The server outside the tree: answers each line on connection K as "K:LINE" in capitals.
        static let server = """
            import socket, sys, threading
            s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(4)
            print("listening", flush=True)
            def serve(c, k):
                for line in c.makefile("rb"): c.sendall(b"%d:" % k + line.upper())
            n = 0
            while True:
                c, _ = s.accept(); n += 1
                threading.Thread(target=serve, args=(c, n), daemon=True).start()
            """

        /// The client: its first line is "FD INODE ANSWER" (its socket's descriptor and inode,
        /// the answer to "one"); then each word of stdin is asked on the same socket: "FD ANSWER",
        /// or "error ERRNO", or "FD EOF"; "send:WORD" sends WORD without reading the answer.
        static let client = """
            import os, socket, sys
            c = socket.socket(socket.AF_UNIX); c.connect(sys.argv[1])
            def ask(word):
                c.sendall(word.encode() + b"\\n")
                data = b""
                while not data.endswith(b"\\n"):
                    chunk = c.recv(100)
                    if not chunk: return "EOF"
                    data += chunk
                return data.decode().strip()
            print(c.fileno(), os.fstat(c.fileno()).st_ino, ask("one"), flush=True)
            for line in sys.stdin:
                if line.startswith("send:"):
                    c.sendall(line[5:].encode()); print("sent", flush=True); continue
                try:
                    print(c.fileno(), ask(line.strip()), flush=True)
                except OSError as e:
                    print("error", e.errno, flush=True)
            """

        /// The server on DIR/srv.sock and a client connected to it that had its first answer:
        /// the client's descriptor and socket inode.
        static func connected(
            _ directory: String
        ) throws -> (server: WorkloadProcess, client: WorkloadProcess, fd: String, inode: String) {
            let path = directory + "/srv.sock"
            let server = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.server, path])
            #expect(try server.line() == "listening")
            let client = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.client, path])
            let first = try client.line().split(separator: " ").map(String.init)
            try #require(first.count == 3 && first[2] == "1:ONE", "\(first)")
            return (server, client, first[0], first[1])
        }

        /// The restart's chpox.restart/1 document's notices.
        static func notices(_ restarted: WorkloadProcess) throws -> [String] {
            let line = try restarted.line()
            #expect(try JSONSchemaCheck().problems(line) == [])
            let document = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return document["notices"] as? [String] ?? []
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aClientReconnectsToItsServerAtTheSameDescriptor() throws {
            let directory = try RestartTests.scratch("external-unix-reconnect")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let path = directory + "/srv.sock"
            let (server, client, fd, inode) = try Self.connected(directory)
            defer { RestartTests.end(server) }
            let taken = try TestTools.run(
                "cpx", ["--store", store, "--name", "ext", "--external-unix", "\(path)=reconnect", "\(client.pid)"])
            #expect(taken.status == 0, "\(taken.errors)")
            #expect(
                taken.output.contains(
                    "external (--external-unix): process \(client.pid) fd \(fd): UNIX stream socket \(inode) to "
                        + "\(path): reconnect"), "\(taken.output)")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--name", "ext", "--generation", "0"])
            #expect(
                shown.output.contains("external     UNIX stream socket \(inode), fd \(fd) of pid \(client.pid)"),
                "\(shown.output)")
            #expect(shown.output.contains("connected to \(path) again at the restart"), "\(shown.output)")
            let json = try TestTools.run(
                "dumpinfo", ["--store", store, "--name", "ext", "--generation", "0", "--json"])
            #expect(try JSONSchemaCheck().problems(json.output) == [])
            let document = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
            let process = document?["process"] as? [String: Any]
            let externals = process?["externalUnixSockets"] as? [[String: Any]] ?? []
            #expect(externals.count == 1, "\(json.output)")
            #expect(externals.first?["action"] as? String == "reconnect")
            #expect(externals.first?["path"] as? String == path)
            #expect(externals.first?["peerPid"] as? Int == Int(server.pid))
            RestartTests.end(client)

            let restarted = try RestartTests.restart(store: store, name: "ext", generation: 0, extra: ["--json"])
            defer { RestartTests.end(restarted) }
            let notices = try Self.notices(restarted)
            #expect(
                notices.contains { $0.hasPrefix("reconnected (--external-unix)") && $0.contains(path) }, "\(notices)")
            // The same descriptor, a new connection: the server's second.
            #expect(try restarted.send("two") == "\(fd) 2:TWO")
            #expect(try restarted.send("three") == "\(fd) 2:THREE")
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aSocketNamedByItsInodeComesBackWithItsPeerClosed() throws {
            let directory = try RestartTests.scratch("external-unix-close")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let (server, client, _, inode) = try Self.connected(directory)
            defer { RestartTests.end(server) }
            let taken = try TestTools.run(
                "cpx",
                [
                    "--store", store, "--name", "ext", "--json", "--external-unix", "unix:\(inode)=close",
                    "\(client.pid)",
                ])
            #expect(taken.status == 0, "\(taken.errors)")
            let lines = taken.output.split(separator: "\n").map(String.init)
            for line in lines { #expect(try JSONSchemaCheck().problems(line) == [], "\(line)") }
            let generation = try #require(lines.first { $0.contains("\"externalUnixSockets\"") }, "\(lines)")
            let document = try JSONSerialization.jsonObject(with: Data(generation.utf8)) as? [String: Any]
            let externals = document?["externalUnixSockets"] as? [String] ?? []
            #expect(
                externals.count == 1 && externals.first?.hasSuffix("\(inode) to \(directory)/srv.sock: close") == true)
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--name", "ext", "--generation", "0"])
            #expect(shown.output.contains("its peer closed at the restart (cpx --external-unix)"), "\(shown.output)")
            RestartTests.end(client)

            let restarted = try RestartTests.restart(store: store, name: "ext", generation: 0, extra: ["--json"])
            defer { RestartTests.end(restarted) }
            let notices = try Self.notices(restarted)
            #expect(notices.contains { $0.hasPrefix("closed (--external-unix): process") }, "\(notices)")
            #expect(try restarted.send("two") == "error \(EPIPE)")
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func anUnnamedExternalSocketIsRefusedNamingItsPeerAndTheOption() throws {
            let directory = try RestartTests.scratch("external-unix-refused")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let path = directory + "/srv.sock"
            let (server, client, fd, inode) = try Self.connected(directory)
            defer {
                RestartTests.end(client)
                RestartTests.end(server)
            }
            let refused = try TestTools.run("cpx", ["--store", store, "--name", "ext", "\(client.pid)"])
            #expect(refused.status != 0)
            let said = refused.output + refused.errors
            #expect(said.contains("socket:[\(inode)]"), "\(said)")
            #expect(said.contains("bound to \(path), in process \(server.pid) outside the tree"), "\(said)")
            #expect(said.contains("--external-unix \(path)=reconnect"), "\(said)")
            // A malformed SPEC is refused before anything is read.
            let bad = try TestTools.run(
                "cpx", ["--store", store, "--name", "ext", "--external-unix", "\(path)=keep", "\(client.pid)"])
            #expect(bad.status != 0)
            #expect(bad.errors.contains("neither reconnect nor close"), "\(bad.errors)")
            // The client runs on, untouched.
            #expect(try client.send("after") == "\(fd) 1:AFTER")
            // An answer left unread in its queue would be lost by a new connection: refused.
            #expect(try client.send("send:unread") == "sent")
            var queued = ""
            for _ in 0..<100 {
                let refused = try TestTools.run(
                    "cpx", ["--store", store, "--name", "ext", "--external-unix", "\(path)=reconnect", "\(client.pid)"])
                queued = refused.errors
                if refused.status != 0, queued.contains("data queued in either direction is lost") { break }
                usleep(20_000)
            }
            #expect(queued.contains("9 bytes wait in it to be read and 0 in its peer"), "\(queued)")
        }
    }
}
