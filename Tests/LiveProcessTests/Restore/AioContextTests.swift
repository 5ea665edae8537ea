import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// An AIO context (io_setup) with completed events the program has not taken comes back at
    /// the same id: io_getevents returns those events, and a new io_submit completes, as in a
    /// process that was never checkpointed (the same program run alongside, untouched).
    @Suite struct AioContextTests {
        static let program = """
            import ctypes, os, struct, sys
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            IO_SETUP, IO_GETEVENTS, IO_SUBMIT = 206, 208, 209
            ctx = ctypes.c_ulong(0)
            assert libc.syscall(IO_SETUP, 4, ctypes.byref(ctx)) == 0
            null = os.open("/dev/null", os.O_WRONLY)
            buffer = ctypes.create_string_buffer(8)
            def submit(data):
                iocb = ctypes.create_string_buffer(struct.pack(
                    "<QIIHhIQQqQII", data, 0, 0, 1, 0, null, ctypes.addressof(buffer), data % 5 + 1, 0, 0, 0, 0))
                pointer = ctypes.c_void_p(ctypes.addressof(iocb))
                assert libc.syscall(IO_SUBMIT, ctx, 1, ctypes.byref(pointer)) == 1
            def reap(most):
                events = ctypes.create_string_buffer(32 * most)
                zero = ctypes.create_string_buffer(16)
                n = libc.syscall(IO_GETEVENTS, ctx, 0, most, events, zero)
                return [struct.unpack_from("<QQqq", events.raw, 32 * k)[0::2] for k in range(n)]
            def ring():
                return struct.unpack_from("<IIII", ctypes.string_at(ctx.value, 16))[1:]
            # Around the ring once and one more, the last three events completed and not taken:
            # they straddle its end (the tail before the head).
            total = ring()[0] + 1
            for data in range(1, total + 1):
                submit(data)
                if data <= total - 3:
                    reap(1)
            print("ready", hex(ctx.value), *ring(), flush=True)
            for line in sys.stdin:
                before = ring()
                pending = reap(16)
                submit(100)
                later = reap(16)
                print(hex(ctx.value), *before, pending, later, *ring(), flush=True)
            """

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func completedEventsComeBackAtTheSameContext() throws {
            let directory = try RestartTests.scratch("aio")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.program])
            let ready = try original.line().split(separator: " ")
            try #require(ready.count == 5 && ready[0] == "ready", "\(ready)")
            try RestartTests.checkpoint(original.pid, store: store, name: "aio")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "0", "--json"])
            #expect(shown.output.contains("aio-ring"), "\(shown.output.prefix(2000))")
            RestartTests.end(original)

            // The same program, never checkpointed: what it answers is what the restart must.
            let control = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.program])
            let controlReady = try control.line().split(separator: " ")
            let expected = try control.send("go").split(separator: " ", maxSplits: 1)
            RestartTests.end(control)
            try #require(expected.count == 2)
            #expect(controlReady[2...] == ready[2...], "control \(controlReady), checkpointed \(ready)")

            let restarted = try RestartTests.restart(store: store, name: "aio", generation: 0)
            let answer = try restarted.send("go").split(separator: " ", maxSplits: 1)
            RestartTests.end(restarted)
            try #require(answer.count == 2)
            // The same context id, then the same ring, events not taken, new event and ring after.
            #expect(answer[0] == ready[1])
            #expect(answer[1] == expected[1], "control: \(expected[1])")
            #expect(answer[1].contains("), ("), "three events not taken: \(answer[1])")
        }
    }
}
