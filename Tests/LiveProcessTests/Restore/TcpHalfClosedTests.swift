import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// TCP connections half closed (one end shut down for writing) and listeners sharing a port,
    /// checkpointed, killed and restarted: the states, the queued bytes, the ends of file and the
    /// options are as they were.
    @Suite struct TcpHalfClosedTests {
        /// Four loopback connections, both ends held by the process: FIN_WAIT2 and CLOSE_WAIT
        /// with bytes unread both ways; FIN_WAIT1 (the FIN queued behind bytes the peer's full
        /// window holds back) and ESTABLISHED; LAST_ACK (the same) and FIN_WAIT2; CLOSING (the
        /// same, then the peer's FIN came) and FIN_WAIT2. Told to go on, it prints the states
        /// again, then reads every end to its end of file and writes where its FIN went.
        static let halfClosed = """
            import socket, sys, time
            S = {1: "ESTABLISHED", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
                 11: "CLOSING"}
            srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(8)
            def pair(small=False):
                c = socket.socket()
                if small:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                c.connect(srv.getsockname()); s, _ = srv.accept()
                if small:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
                return c, s
            def state(x): return S.get(x.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0], "?")
            STREAM = bytes((i * 7 + i // 251) & 0xff for i in range(1 << 21))
            def fill(x):
                x.setblocking(False); sent = 0
                while True:
                    try: sent += x.send(STREAM[sent: sent + 1024])
                    except BlockingIOError:
                        time.sleep(0.05)
                        try: sent += x.send(STREAM[sent: sent + 1024])
                        except BlockingIOError: break
                x.setblocking(True); return sent
            def exact(x, n):
                d = b""
                while len(d) < n:
                    c = x.recv(n - len(d))
                    if not c: break
                    d += c
                return d
            a, b = pair(); a.sendall(b"a2b" * 100); b.sendall(b"b2a" * 100); a.shutdown(socket.SHUT_WR)
            c1, c2 = pair(True); sent_c = fill(c1); c1.shutdown(socket.SHUT_WR)
            d1, d2 = pair(True); d2.shutdown(socket.SHUT_WR); time.sleep(0.05)
            sent_d = fill(d1); d1.shutdown(socket.SHUT_WR)
            e1, e2 = pair(True); sent_e = fill(e1); e1.shutdown(socket.SHUT_WR); time.sleep(0.05)
            e2.shutdown(socket.SHUT_WR)
            time.sleep(0.2)
            socks = [a, b, c1, c2, d1, d2, e1, e2]
            print(" ".join(state(x) for x in socks), flush=True)
            for line in sys.stdin:
                out = [" ".join(state(x) for x in socks)]
                def pipe(x):
                    try: x.send(b"x"); return "sent"
                    except BrokenPipeError: return "EPIPE"
                def eof_after(x, want):
                    data = exact(x, len(want)); rest = x.recv(10)
                    return data == want and rest == b""
                b_ok = eof_after(b, b"a2b" * 100)
                a.setblocking(False)
                a_data = exact(a, 300)
                try: a.recv(1); a_more = "more"
                except BlockingIOError: a_more = "wouldblock"
                a.setblocking(True)
                out.append(f"pair1 {b_ok} {a_data == b'b2a' * 100} {a_more} {pipe(a)}")
                b.sendall(b"late"); out[-1] += f" {exact(a, 4) == b'late'}"
                out.append(f"pair2 {eof_after(c2, STREAM[:sent_c])} {pipe(c1)}")
                out.append(f"pair3 {eof_after(d2, STREAM[:sent_d])} {d1.recv(1) == b''} {pipe(d1)} {pipe(d2)}")
                out.append(f"pair4 {eof_after(e2, STREAM[:sent_e])} {e1.recv(1) == b''} {pipe(e1)} {pipe(e2)}")
                print(" | ".join(out), flush=True)
            """

        static let expectedStates = "FIN_WAIT2 CLOSE_WAIT FIN_WAIT1 ESTABLISHED LAST_ACK FIN_WAIT2 CLOSING FIN_WAIT2"

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func halfClosedConnectionsKeepStateBytesAndEndsOfFile() throws {
            let directory = try RestartTests.scratch("tcp-half")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.halfClosed])
            let states = try original.line()
            try #require(states == Self.expectedStates, "the kernel did not reach the states the test needs")
            try RestartTests.checkpoint(original.pid, store: store, name: "half")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "0"])
            for state in ["FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT", "LAST-ACK", "CLOSING"] {
                #expect(shown.output.contains("(\(state))"), "\(shown.output)")
            }
            RestartTests.end(original)

            let restarted = try RestartTests.restart(store: store, name: "half", generation: 0)
            defer { RestartTests.end(restarted) }
            try restarted.write("go")
            let after = try restarted.line().components(separatedBy: " | ")
            try #require(after.count == 5)
            #expect(after[0] == states)
            // Each end read to its end of file where the peer's FIN came, its bytes whole; a
            // write fails with EPIPE where its own FIN went; the FIN_WAIT2 end still takes bytes.
            #expect(after[1] == "pair1 True True wouldblock EPIPE True")
            #expect(after[2] == "pair2 True EPIPE")
            #expect(after[3] == "pair3 True True EPIPE EPIPE")
            #expect(after[4] == "pair4 True True EPIPE EPIPE")
        }

        /// Two listeners on one port, both with SO_REUSEPORT as they bound, the first's turned
        /// off after listen (zdtm socket-tcp-reuseport), and a socket with TCP_MAXSEG set.
        static let sharedPort = """
            import socket, sys
            def listener(port):
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                s.bind(("127.0.0.1", port)); s.listen(4); return s
            first = listener(0); port = first.getsockname()[1]; second = listener(port)
            first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
            mss = socket.socket(); mss.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1200)
            def options():
                reuse = [x.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for x in (first, second)]
                return " ".join(map(str, reuse + [mss.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)]))
            print(options(), flush=True)
            for line in sys.stdin:
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                got = []
                for x in (first, second):
                    x.setblocking(False)
                    try: got.append(x.accept()[0] is not None)
                    except BlockingIOError: got.append(False)
                print(options(), any(got), flush=True)
            """

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func listenersSharingAPortKeepItAndTheirOptions() throws {
            let directory = try RestartTests.scratch("tcp-reuseport")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.sharedPort])
            let before = try original.line()
            #expect(before == "0 1 1200")
            try RestartTests.checkpoint(original.pid, store: store, name: "shared")
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: store, name: "shared", generation: 0)
            defer { RestartTests.end(restarted) }
            try restarted.write("go")
            // The options as they were, and the port still taken by one of the two listeners.
            #expect(try restarted.line() == before + " True")
        }

        /// A connection over (both ends shut down, both in CLOSE) reads TCP_MAXSEG as its
        /// connection's MSS, above what setsockopt takes: not recorded as the program's
        /// (zdtm socket-tcp-close2).
        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(1)))
        func aFinishedConnectionsSegmentSizeIsNotTheProgramsOption() throws {
            let script = """
                import socket, sys, time
                l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
                c = socket.create_connection(l.getsockname()); a, _ = l.accept(); l.close()
                c.shutdown(socket.SHUT_WR); a.shutdown(socket.SHUT_WR); time.sleep(0.2)
                print(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG), flush=True)
                sys.stdin.readline()
                """
            let directory = try RestartTests.scratch("tcp-closed-mss")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script])
            defer { RestartTests.end(original) }
            let mss = try #require(Int(try original.line()))
            try #require(mss > 32767, "loopback's MSS is the case this test needs")
            try RestartTests.checkpoint(original.pid, store: store, name: "closed")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "0"])
            let sockets = shown.output.split(separator: "\n").filter { $0.contains("inet-socket") }
            #expect(sockets.count == 2, "\(shown.output)")
            #expect(!sockets.contains { $0.contains("TCP_MAXSEG") }, "\(shown.output)")
        }
    }
}
