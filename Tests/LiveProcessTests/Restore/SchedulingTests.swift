import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// Every thread's scheduling policy, real-time priority, SCHED_RESET_ON_FORK and nice value
    /// (CRIU's zdtm sched_policy00, sched_prio00) come back as they were after a restart, or
    /// the restart is refused with the reason.
    @Suite struct SchedulingTests {
        static var hasPython: Bool { ProcessControlsTests.hasPython }

        /// Python with a second thread; `setup` runs in the main thread, `worker` in the other
        /// before it waits; then on every line read it prints, for the main thread and the
        /// worker, the policy (with SCHED_RESET_ON_FORK, 0x40000000), rt priority and nice value.
        static func script(setup: String, worker: String) -> String {
            """
            import os, sys, threading
            def worker():
                \(worker)
                ready.set()
                threading.Event().wait()
            def scheduling(tid):
                return (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority,
                        os.getpriority(os.PRIO_PROCESS, tid))
            def report():
                return ("main", *scheduling(threading.main_thread().native_id),
                        "worker", *scheduling(thread.native_id))
            \(setup)
            ready = threading.Event()
            thread = threading.Thread(target=worker, daemon=True)
            thread.start()
            ready.wait()
            print(*report(), flush=True)
            for line in sys.stdin:
                print(*report(), flush=True)
            """
        }

        /// Root: the worker SCHED_RR priority 3 with SCHED_RESET_ON_FORK, the main thread nice -5;
        /// another user: SCHED_BATCH nice 7 and SCHED_IDLE (nothing a user may not set).
        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func policyPriorityAndNiceComeBackOnEveryThread() throws {
            let root = getuid() == 0
            let setup =
                root
                ? "os.setpriority(os.PRIO_PROCESS, 0, -5)"
                : "os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0)); os.setpriority(os.PRIO_PROCESS, 0, 7)"
            let worker =
                root
                ? "os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(3))"
                : "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", Self.script(setup: setup, worker: worker)])
            let directory = try RestartTests.scratch("scheduling")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let before = try original.line()
            #expect(before == (root ? "main 0 0 -5 worker 1073741826 3 -5" : "main 3 0 7 worker 5 0 7"))
            let store = directory + "/store"
            try RestartTests.checkpoint(original.pid, store: store, name: "sched")
            RestartTests.end(original)
            let detail = try TestTools.run("dumpinfo", ["--store", store, "--name", "sched", "--generation", "0"])
            #expect(
                detail.output.contains(root ? "SCHED_RR priority 3 reset-on-fork" : "SCHED_IDLE"), "\(detail.output)")
            let restarted = try RestartTests.restart(store: store, name: "sched", generation: 0)
            defer { RestartTests.end(restarted) }
            #expect(try restarted.send("go") == before)
        }

        /// A nice value below what its user may set (given by root, then the ids changed) is
        /// not given back by a restart as that user: refused, with what would allow it.
        @Test(
            .enabled(if: ProcessControlsTests.canChangeUser, "needs root and setpriv"), .timeLimit(.minutes(2)))
        func aNiceValueItsUserCouldNotSetIsRefused() throws {
            let original = try WorkloadProcess(
                executable: "/usr/bin/nice",
                arguments: [
                    "-n", "-4", "/usr/bin/setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                    "/usr/bin/python3", "-c",
                    """
                    import os, sys
                    print(os.getpriority(os.PRIO_PROCESS, 0), flush=True)
                    for line in sys.stdin:
                        print(os.getpriority(os.PRIO_PROCESS, 0), flush=True)
                    """,
                ])
            let directory = try RestartTests.scratch("nice-refused")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            #expect(try original.line() == "-4")
            let store = directory + "/store"
            try RestartTests.checkpoint(original.pid, store: store, name: "nice")
            RestartTests.end(original)
            let refused = try TestTools.run("ld-chpox", ["--store", store, "--name", "nice"])
            #expect(refused.status == 1, "\(refused.errors)")
            #expect(refused.errors.contains("cannot give thread"), "\(refused.errors)")
            #expect(refused.errors.contains("CAP_SYS_NICE"), "\(refused.errors)")
        }
    }
}
