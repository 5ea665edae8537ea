import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// UNIX socket pairs within one process come back with what each end had queued to read,
    /// message boundaries, shutdown and flags; the checkpoint leaves the original's queues
    /// unread; sockets a restart cannot make are refused with their reason (NamedSocketTests:
    /// named, listening and cross-process ones).
    @Suite struct SocketPairTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// A stream, a datagram and a seqpacket pair with messages queued both ways (the datagram
        /// end also at a second number, one of its messages 100 kB), a stream shut down for
        /// writing after its last bytes, a datagram and a stream whose peers were closed with data
        /// still queued, a stream whose closed peer had data unread (ECONNRESET pending), and a
        /// stream whose sender set a larger SO_SNDBUF and queued more than the default allows.
        /// Told "go", it reads every queue, then checks that each pair still carries data both
        /// ways.
        static let program = """
            import os, socket, sys
            U = socket.AF_UNIX
            def pair(kind, left, right):
                a, b = socket.socketpair(U, kind)
                for m in left: a.send(m)
                for m in right: b.send(m)
                return a, b
            stream = pair(socket.SOCK_STREAM, [b"to-", b"b"], [b"to-a"])
            stream[0].setblocking(False)
            dgram = pair(socket.SOCK_DGRAM, [b"d1", b"d22", b"L" * 100000], [b"d333"])
            dgram_dup = os.dup(dgram[1].fileno())
            seq = pair(socket.SOCK_SEQPACKET, [b"s1", b"s22", b"s333"], [b"s4444"])
            half = pair(socket.SOCK_STREAM, [b"last"], [])
            half[0].shutdown(socket.SHUT_WR)
            lone_dgram, gone = pair(socket.SOCK_DGRAM, [], [b"orphan"]); gone.close()
            lone_stream, gone = pair(socket.SOCK_STREAM, [], [b"tail"]); gone.close()
            reset, gone = pair(socket.SOCK_STREAM, [b"unread"], []); gone.close()
            big = pair(socket.SOCK_STREAM, [], [])
            big[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            big[0].sendall(b"B" * 600000)  # more than a socket of the default size may queue
            print("ready", flush=True)
            def drain(s):
                s.setblocking(False)
                got = []
                while True:
                    try:
                        m = s.recv(1 << 20)
                    except BlockingIOError:
                        break
                    except ConnectionResetError:
                        got.append("RESET"); continue
                    got.append((m.decode() if len(m) < 100 else "<%d>" % len(m)) or "EOF")
                    if not m: break
                return ",".join(got)
            for line in sys.stdin:
                out = [str(os.get_blocking(stream[0].fileno())), drain(stream[1]), drain(stream[0]),
                       drain(socket.socket(fileno=dgram_dup)),
                       drain(dgram[0]), drain(seq[1]), drain(seq[0]), drain(half[1]), drain(lone_dgram),
                       drain(lone_stream), drain(reset), drain(big[1]),
                       str(big[0].getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))]
                for a, b in (stream, dgram, seq):
                    a.send(b"ping"); b.setblocking(True); b.send(b"pong"); a.setblocking(True)
                    out.append(b.recv(10).decode() + "/" + a.recv(10).decode())
                print(" ".join(out), flush=True)
                break
            """
        static let expected =
            "False to-b to-a d1,d22,<100000> d333 s1,s22,s333 s4444 last,EOF orphan tail,EOF RESET,EOF "
            + "<600000> 2097152 ping/pong ping/pong ping/pong"

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func socketPairsComeBackWithTheirQueues() throws {
            let directory = try RestartTests.scratch("sockets")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.program])
            #expect(try original.line() == "ready")
            try RestartTests.checkpoint(original.pid, store: store, name: "sockets")
            try RestartTests.checkpoint(original.pid, store: store, name: "sockets")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "1"])
            #expect(shown.output.contains("UNIX seqpacket socket paired with socket"), "\(shown.output)")
            #expect(shown.output.contains("3 messages (9 bytes) queued"), "\(shown.output)")
            // Two checkpoints peeked at every queue: the original still reads all of it.
            #expect(try original.send("go") == Self.expected)
            RestartTests.end(original)

            for generation in [1, 0] {
                let restarted = try RestartTests.restart(store: store, name: "sockets", generation: generation)
                #expect(try restarted.send("go") == Self.expected, "generation \(generation)")
                #expect(try restarted.child.wait() == .exited(0), "generation \(generation)")
            }
        }

        /// Sockets a restart cannot make again are refused by cpx, each with its reason: one
        /// whose peer is in a process not checkpointed, a listener with a connection waiting in
        /// its accept queue and that connection's socket, a non-UNIX one, and a pair holding
        /// out-of-band data.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func otherSocketsAreRefusedWithTheirReason() throws {
            let directory = try RestartTests.scratch("socket-refusals")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let server = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import socket, sys
                    s = socket.socket(socket.AF_UNIX)
                    s.bind(sys.argv[1]); s.listen()
                    print("listening", flush=True)
                    connection, _ = s.accept()
                    sys.stdin.readline()
                    """,
                    directory + "/server",
                ])
            #expect(try server.line() == "listening")
            let program = """
                import socket, sys
                client = socket.socket(socket.AF_UNIX); client.connect(sys.argv[1] + "/server")
                named = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); named.bind(sys.argv[1] + "/named")
                listener = socket.socket(socket.AF_UNIX)
                listener.bind("\\0chpox-test-%d" % id(client)); listener.listen()
                waiting = socket.socket(socket.AF_UNIX); waiting.connect("\\0chpox-test-%d" % id(client))
                waiting.send(b"sent before it was accepted")  # waits where no descriptor reads it: refused
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 0))
                udp.sendto(b"queued", udp.getsockname())  # a datagram waiting: refused
                urgent, reader = socket.socketpair()
                try:
                    urgent.send(b"!", socket.MSG_OOB)
                except OSError:  # a kernel without CONFIG_AF_UNIX_OOB
                    reader = None
                print("ready", client.fileno(), waiting.fileno(), listener.fileno(), udp.fileno(),
                      reader.fileno() if reader else -1, flush=True)
                sys.stdin.readline()
                """
            let target = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", program, directory])
            let ready = try target.line().split(separator: " ")
            #expect(ready.count == 6)
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "refused", "\(target.pid)"])
            #expect(run.status != 0)
            var reasons = [
                "fd \(ready[1]): socket:[",
                "bound to \(directory)/server, in process \(server.pid) outside the tree",
                "--external-unix \(directory)/server=reconnect",
                "fd \(ready[2]): socket:[",
                "which has not accepted it yet, and sent data meanwhile",
                "fd \(ready[4]): socket:[",
                "datagrams wait in the receive queue of this IPv4 UDP socket",
            ]
            if ready.count == 6, ready[5] != "-1" {
                reasons += [
                    "fd \(ready[5]): socket:[", "out-of-band data (MSG_OOB) is queued in it, which is not restored",
                ]
            }
            for reason in reasons { #expect(run.errors.contains(reason), "\(reason) in \(run.errors)") }
            RestartTests.end(target)
            RestartTests.end(server)
        }

        /// Root restarting another user's process makes its pairs as that user: SO_PEERCRED
        /// names the process and its user, as at the checkpoint, not ld-chpox's root.
        @Test(
            .enabled(if: python && PrivilegeTests.canRun, "needs root, setpriv and python3"),
            .timeLimit(.minutes(2)))
        func anotherUsersPairNamesThatUserAsItsPeer() throws {
            let directory = try RestartTests.scratch("socket-user")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let program = """
                import os, socket, struct, sys
                a, b = socket.socketpair()
                a.send(b"queued")
                print("ready", flush=True)
                sys.stdin.readline()
                pid, uid, gid = struct.unpack("3i", b.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                print(pid == os.getpid(), uid, gid, os.geteuid(), b.recv(10).decode(), flush=True)
                """
            let user = PrivilegeTests.user
            let original = try WorkloadProcess(
                executable: "/usr/bin/setpriv",
                arguments: [
                    "--reuid", "\(user)", "--regid", "\(user)", "--clear-groups", "/bin/sh", "-c",
                    "cd / && exec /usr/bin/python3 -c \"$0\"", program,
                ])
            #expect(try original.line() == "ready")
            try RestartTests.checkpoint(original.pid, store: directory + "/store", name: "user")
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: directory + "/store", name: "user", generation: 0)
            #expect(try restarted.send("go") == "True \(user) \(user) \(user) queued")
            #expect(try restarted.child.wait() == .exited(0))
        }
    }
}
