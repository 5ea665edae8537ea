import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// A Python asyncio program of standard-library code only, checkpointed mid-run (a full and
    /// an incremental generation), killed and restarted: its output is byte for byte that of a
    /// run never interrupted. asyncio holds an epoll and a socketpair (its self-pipe, which the
    /// executor's worker thread writes to wake the loop), and its timers are call_later's.
    @Suite struct AsyncioRestartTests {
        static let program = """
            import asyncio, hashlib, sys

            def crunch(x):
                # In the default executor's worker thread: its result wakes the loop through the
                # self-pipe.
                return sum(i * i for i in range(x % 97 + 50)) % 10007

            async def producer(queue, n):
                loop = asyncio.get_running_loop()
                for i in range(n):
                    fired = loop.create_future()
                    loop.call_later(0.002, fired.set_result, i * 7 % 13)
                    await queue.put((i, await fired))
                await queue.put(None)

            async def worker(queue, out):
                loop = asyncio.get_running_loop()
                digest = hashlib.sha256()
                while (item := await queue.get()) is not None:
                    i, tick = item
                    value = await loop.run_in_executor(None, crunch, i + tick)
                    digest.update(f"{i}:{tick}:{value};".encode())
                    out.append(value)
                return digest.hexdigest()

            async def main(n):
                queue = asyncio.Queue(maxsize=4)
                out = []
                print("started", flush=True)
                _, digest = await asyncio.gather(producer(queue, n), worker(queue, out))
                print("result", len(out), sum(out), digest, flush=True)

            asyncio.run(main(1500))
            """

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(3)))
        func anAsyncioProgramFinishesWithTheOutputOfAnUninterruptedRun() throws {
            let directory = try RestartTests.scratch("asyncio")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let reference = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.program])
            #expect(try reference.line() == "started")
            let expected = try reference.line()
            #expect(expected.hasPrefix("result 1500 "))
            #expect(try reference.child.wait() == .exited(0))

            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.program])
            #expect(try original.line() == "started")
            usleep(700_000)
            try RestartTests.checkpoint(original.pid, store: store, name: "asyncio")
            usleep(300_000)
            try RestartTests.checkpoint(original.pid, store: store, name: "asyncio")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "1"])
            #expect(shown.output.contains("UNIX stream socket paired with socket"), "\(shown.output)")
            #expect(shown.output.contains("(epoll watching fd"), "\(shown.output)")
            RestartTests.end(original)

            for generation in [1, 0] {
                let restarted = try RestartTests.restart(store: store, name: "asyncio", generation: generation)
                #expect(try restarted.line() == expected, "generation \(generation)")
                #expect(try restarted.child.wait() == .exited(0), "generation \(generation)")
            }
        }
    }
}
