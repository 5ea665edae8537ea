import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// Descriptors in flight in a socket pair's queue (SCM_RIGHTS) come back with the message
    /// they ride on: a pipe's read end whose write end the process holds, a regular file at its
    /// offset, both ends of a pipe no process holds, and an open file the process also holds
    /// (the same one, its status flags shared), an epoll no process holds watching a socket of
    /// the pair, in datagram, seqpacket and stream queues (a
    /// stream's read stops after the byte that carries them, as it did); what cannot be made
    /// again is refused.
    @Suite struct SocketPairRightsTests {
        /// A datagram pair and a seqpacket pair with messages carrying descriptors between plain
        /// ones. Told "go", it receives every message with its descriptors and uses them: writes
        /// the pipe it held and reads the end that was in flight, reads the file from its offset,
        /// passes bytes through the pipe whose both ends were in flight, and sets O_NONBLOCK on
        /// the received copy of its own write end to see it on its descriptor, does the same
        /// with a write end sent twice (one open file both times, made once), polls the epoll
        /// that was in flight (the socket it watches still has messages), and reads the
        /// stream in the pieces its reads return.
        static let program = """
            import array, os, select, socket, sys
            S = socket.SOL_SOCKET; R = socket.SCM_RIGHTS
            def send(s, data, fds):
                s.sendmsg([data], [(S, R, array.array("i", fds))] if fds else [])
            path = sys.argv[1] + "/file"
            with open(path, "w") as f: f.write("0123456789")
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            r, w = os.pipe()
            send(a, b"pipe", [r]); os.close(r)
            send(a, b"plain", [])
            f = os.open(path, os.O_RDONLY); os.lseek(f, 4, os.SEEK_SET)
            send(a, b"file", [f]); os.close(f)
            r2, w2 = os.pipe()
            send(c, b"pair", [r2, w2]); os.close(r2); os.close(w2)
            send(c, b"same", [w])
            ep = select.epoll(); ep.register(d.fileno(), select.EPOLLIN)
            send(c, b"ep", [ep.fileno()]); ep.close()
            r3, w3 = os.pipe()
            send(c, b"t1", [w3]); send(c, b"t2", [w3]); os.close(w3)
            e, g = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            send(e, b"x", [w]); send(e, b"y", [w]); e.send(b"ta"); e.send(b"il")
            print("ready", w, flush=True)
            def receive(s, size=100):
                data, control, flags, _ = s.recvmsg(size, socket.CMSG_SPACE(64), socket.MSG_DONTWAIT)
                fds = []
                for level, kind, payload in control:
                    fds += array.array("i", payload[:len(payload) - len(payload) % 4])
                return data.decode(), fds
            for line in sys.stdin:
                out = []
                name, fds = receive(b); os.write(w, b"through"); out.append(name + ":" + os.read(fds[0], 20).decode())
                name, fds = receive(b); out.append(name + ":" + str(len(fds)))
                name, fds = receive(b); out.append(name + ":" + os.read(fds[0], 20).decode())
                name, fds = receive(d); os.write(fds[1], b"x"); out.append(name + ":" + os.read(fds[0], 5).decode())
                name, fds = receive(d); os.set_blocking(fds[0], False)
                out.append(name + ":" + str(os.get_blocking(w)) + ":" + str(fds[0] != w))
                name, fds = receive(d); ready = select.epoll.fromfd(fds[0]).poll(0)
                out.append(name + ":" + str(ready == [(d.fileno(), select.EPOLLIN)]))
                one, fds = receive(d); two, more = receive(d); os.set_blocking(fds[0], False)
                os.write(more[0], b"twice")
                out.append(one + two + ":" + str(os.get_blocking(more[0])) + ":" + os.read(r3, 10).decode())
                for size in (100, 100, 2, 100):
                    name, fds = receive(g, size); out.append(name + ":" + str(len(fds)))
                print(" ".join(out), flush=True)
                break
            """
        static let expected =
            "pipe:through plain:0 file:456789 pair:x same:False:True ep:True t1t2:False:twice x:1 y:1 ta:0 il:0"

        @Test(.enabled(if: SocketPairTests.python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func descriptorsInFlightComeBackWithTheirMessages() throws {
            let directory = try RestartTests.scratch("socket-rights")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", Self.program, directory])
            #expect(try original.line().hasPrefix("ready"))
            try RestartTests.checkpoint(original.pid, store: store, name: "rights")
            try RestartTests.checkpoint(original.pid, store: store, name: "rights")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "1"])
            #expect(shown.output.contains("descriptors in flight: a read end of pipe"), "\(shown.output)")
            #expect(shown.output.contains("/file at offset 4"), "\(shown.output)")
            // Two checkpoints peeked at the queues: the original still receives every descriptor.
            #expect(try original.send("go") == Self.expected)
            RestartTests.end(original)

            for generation in [1, 0] {
                let restarted = try RestartTests.restart(store: store, name: "rights", generation: generation)
                #expect(try restarted.send("go") == Self.expected, "generation \(generation)")
                #expect(try restarted.child.wait() == .exited(0), "generation \(generation)")
            }
        }

        /// An open file in flight that a restart does not make for a message (an epoll watching a
        /// pipe), credentials in flight to a socket that reads them (SO_PASSCRED), and
        /// descriptors riding on a stream's bytes after others (where their piece starts is not
        /// known), are refused with their reason.
        @Test(.enabled(if: SocketPairTests.python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func otherControlDataIsRefused() throws {
            let directory = try RestartTests.scratch("socket-rights-refused")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let program = """
                import array, os, select, socket, struct, sys
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                e = select.epoll(); r, w = os.pipe(); e.register(r, select.EPOLLIN)
                a.sendmsg([b"e"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [e.fileno()]))])
                e.close()
                c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                d.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
                creds = struct.pack("3i", os.getpid(), os.getuid(), os.getgid())
                c.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])
                s, t = socket.socketpair()
                s.send(b"header")
                s.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0]))])
                print("ready", b.fileno(), d.fileno(), t.fileno(), flush=True)
                sys.stdin.readline()
                """
            let target = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", program])
            let ready = try target.line().split(separator: " ")
            #expect(ready.count == 4)
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "refused", "\(target.pid)"])
            #expect(run.status != 0)
            let reasons = [
                "fd \(ready[1]): socket:[", "is an epoll no process holds, watching a file that is no UNIX socket",
                "fd \(ready[2]): socket:[", "SO_PASSCRED is set and messages are queued",
                "fd \(ready[3]): socket:[", "descriptors are in flight in its stream queue (SCM_RIGHTS) with 7 bytes",
            ]
            for reason in reasons { #expect(run.errors.contains(reason), "\(reason) in \(run.errors)") }
            RestartTests.end(target)
        }
    }
}
