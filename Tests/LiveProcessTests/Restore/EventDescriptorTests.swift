import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// eventfd, timerfd, signalfd and epoll descriptors come back at their numbers with their
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
    }
}
