import Foundation
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// Every thread's robust futex list (glibc registers one per thread: robust mutexes are
    /// released through it when a thread dies) is registered again at the same head.
    @Suite struct RobustListTests {
        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func everyThreadKeepsItsRobustFutexList() throws {
            let directory = try RestartTests.scratch("robust")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let program = """
                import sys, threading
                go = threading.Event()
                workers = [threading.Thread(target=go.wait) for _ in range(3)]
                for w in workers: w.start()
                print("ready", flush=True)
                for line in sys.stdin:
                    print("alive", threading.active_count(), flush=True)
                """
            func heads(_ pid: Int32) throws -> [UInt64] {
                try ProcFS.threads(pid).map { try RobustList.of(thread: $0).head }.sorted()
            }
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", program])
            #expect(try original.line() == "ready")
            let saved = try heads(original.pid)
            #expect(saved.count == 4 && !saved.contains(0), "\(saved)")
            try RestartTests.checkpoint(original.pid, store: store, name: "robust")
            let pid = original.pid
            RestartTests.end(original)

            let restarted = try RestartTests.restart(store: store, name: "robust", generation: 0)
            #expect(try restarted.send("go") == "alive 4")
            #expect(try heads(pid) == saved)
            RestartTests.end(restarted)
        }
    }
}
