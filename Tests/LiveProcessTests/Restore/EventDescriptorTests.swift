import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// eventfd, timerfd, signalfd, epoll and pidfd descriptors come back at their numbers with their
    /// state: what an event loop (asyncio's selector, a server's timers) holds.
    @Suite struct EventDescriptorTests {
        static let program = """
            import ctypes, os, select, signal, struct, sys
            libc = ctypes.CDLL(None, use_errno=True)
            counter = os.eventfd(5, os.EFD_NONBLOCK)
            os.eventfd_write(counter, 2)
            poll = select.epoll()
            poll.register(counter, select.EPOLLIN)
            edge = os.eventfd(0)
            poll.register(edge, select.EPOLLIN | select.EPOLLET)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            mask = ctypes.c_uint64(1 << (signal.SIGUSR1 - 1))
            signals = libc.signalfd(-1, ctypes.byref(mask), os.O_CLOEXEC)
            timer = libc.timerfd_create(1, 0)
            libc.timerfd_settime(timer, 0, ctypes.create_string_buffer(struct.pack("qqqq", 3600, 0, 3600, 0)), None)
            print("ready", counter, poll.fileno(), signals, timer, flush=True)
            for line in sys.stdin:
                os.kill(os.getpid(), signal.SIGUSR1)
                signo = struct.unpack_from("I", os.read(signals, 128))[0]
                ready = dict(poll.poll(0))
                count = os.eventfd_read(counter)
                now = ctypes.create_string_buffer(32)
                libc.timerfd_gettime(timer, now)
                interval, _, left, _ = struct.unpack("qqqq", now.raw)
                os.eventfd_write(edge, 1)
                edged = dict(poll.poll(0)).get(edge)
                print("state", count, ready.get(counter), signo, interval, 3000 < left <= 3600,
                      os.get_blocking(counter), os.get_inheritable(signals), edged, flush=True)
            """

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func eventDescriptorsComeBackWithTheirState() throws {
            let directory = try RestartTests.scratch("events")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.program])
            let ready = try original.line()
            #expect(ready.hasPrefix("ready"))
            try RestartTests.checkpoint(original.pid, store: store, name: "events")
            try RestartTests.checkpoint(original.pid, store: store, name: "events")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "1"])
            #expect(shown.output.contains("(eventfd, counter 7)"), "\(shown.output)")
            RestartTests.end(original)

            let restarted = try RestartTests.restart(store: store, name: "events", generation: 1)
            // Counter 7, readable (EPOLLIN 1), SIGUSR1 (10) through the signalfd, the hourly timer
            // still armed within its hour, the eventfd non-blocking, the signalfd close-on-exec,
            // and a second eventfd watched edge-triggered, reported once written.
            #expect(try restarted.send("go") == "state 7 1 10 3600 True False False 1")
            RestartTests.end(restarted)
        }

        /// zdtm pidfd_self, pidfd_child: a pidfd of the process itself (non-blocking, inherited
        /// across exec) and one of its child come back on the same processes with their flags;
        /// the child, signalled through its pidfd, ends with that signal.
        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func pidfdsOfTheProcessAndItsChildComeBack() throws {
            let directory = try RestartTests.scratch("pidfds")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import os, signal, sys, time
                    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # the test runner's mask is inherited
                    child = os.fork()
                    if child == 0:
                        time.sleep(3600)
                        os._exit(0)
                    me = os.pidfd_open(os.getpid(), os.O_NONBLOCK)
                    os.set_inheritable(me, True)
                    kid = os.pidfd_open(child)
                    def report(fd):
                        info = dict(line.split(":", 1) for line in open(f"/proc/self/fdinfo/{fd}").read().splitlines())
                        return info["Pid"].strip(), os.get_blocking(fd), os.get_inheritable(fd)
                    print(*report(me), *report(kid), child, flush=True)
                    for line in sys.stdin:
                        state = (*report(me), *report(kid))
                        signal.pidfd_send_signal(me, 0)
                        signal.pidfd_send_signal(kid, signal.SIGTERM)
                        status = os.waitpid(child, 0)[1]
                        print(*state, os.WTERMSIG(status), flush=True)
                    """,
                ])
            let before = try original.line().split(separator: " ")
            try #require(before.count == 7)
            #expect(before[0] == "\(original.pid)")
            try RestartTests.checkpoint(original.pid, store: store, name: "pidfds")
            RestartTests.end(original)
            // Its child too, and its pid free again (reaped here when this process is its
            // subreaper, by init otherwise).
            let child = try #require(Int32(before[6]))
            _ = kill(child, SIGKILL)
            for _ in 0..<500 where kill(child, 0) == 0 {
                _ = waitpid(child, nil, WNOHANG)
                usleep(10_000)
            }

            let restarted = try RestartTests.restart(store: store, name: "pidfds", generation: 0)
            // Each pidfd on the same pid, with its flags; the child ended by SIGTERM (15).
            let after = try restarted.send("go")
            #expect(after == before[0..<6].joined(separator: " ") + " \(SIGTERM)", "before: \(before)")
            RestartTests.end(restarted)
        }

        /// zdtm pidfd_dead, pidfd_diffdead: pidfds of processes that have exited and been reaped
        /// come back as pidfds of dead processes: the two of one process share an inode, the
        /// other's differs, each still has its flags, signals sent through them fail with
        /// ESRCH, fdinfo says Pid -1, and the restart leaves no SIGCHLD behind.
        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func pidfdsOfReapedProcessesComeBackDead() throws {
            let directory = try RestartTests.scratch("deadpidfd")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import errno, fcntl, os, signal, sys
                    def dead():
                        child = os.fork()
                        if child == 0:
                            os._exit(0)
                        return child
                    a = dead()
                    fds = [os.pidfd_open(a), os.pidfd_open(a, os.O_NONBLOCK)]
                    b = dead()
                    fds.append(os.pidfd_open(b))
                    os.waitpid(a, 0); os.waitpid(b, 0)
                    def report():
                        ino = [os.fstat(fd).st_ino for fd in fds]
                        out = [str(ino[0] == ino[1]), str(ino[0] != ino[2])]
                        for fd in fds:
                            try:
                                signal.pidfd_send_signal(fd, 0); out.append("alive")
                            except ProcessLookupError:
                                out.append("ESRCH")
                            pid = [l for l in open("/proc/self/fdinfo/%d" % fd) if l.startswith("Pid:")][0].split()[1]
                            out.append(pid + ("n" if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK else "b"))
                        status = dict(l.split(":", 1) for l in open("/proc/self/status"))
                        pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
                        out.append("sigchld" if pending & (1 << (signal.SIGCHLD - 1)) else "quiet")
                        return " ".join(out)
                    print("ready", flush=True)
                    for line in sys.stdin:
                        print(report(), flush=True)
                    """,
                ])
            #expect(try original.line() == "ready")
            let before = try original.send("go")
            #expect(before == "True True ESRCH -1b ESRCH -1n ESRCH -1b quiet")
            try RestartTests.checkpoint(original.pid, store: store, name: "dead")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "0"])
            #expect(shown.output.contains("pidfd of a process that has exited"), "\(shown.output)")
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: store, name: "dead", generation: 0)
            #expect(try restarted.send("go") == before)
        }
    }
}
