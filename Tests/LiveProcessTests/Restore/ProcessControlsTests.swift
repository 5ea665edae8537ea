import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// Per-process settings outside memory and descriptors (CRIU's zdtm oom_score_adj,
    /// loginuid, thp_disable, child_subreaper, dumpable01, groups, membarrier, posix_timers):
    /// each comes back as it was after a restart, or the checkpoint is refused.
    @Suite struct ProcessControlsTests {
        static var hasPython: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") }
        static var canChangeUser: Bool {
            getuid() == 0 && hasPython && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
        }

        /// Python that prints its settings, one line, on every line it reads.
        static let report = """
            import ctypes, os, sys
            libc = ctypes.CDLL(None, use_errno=True)
            def settings():
                subreaper = ctypes.c_int(0)
                libc.prctl(37, ctypes.byref(subreaper), 0, 0, 0)
                read = lambda name: open("/proc/self/" + name).read().strip()
                return ("oom", read("oom_score_adj"), "login", read("loginuid"), "dumpable", libc.prctl(3, 0, 0, 0, 0),
                        "thp", libc.prctl(42, 0, 0, 0, 0), "subreaper", subreaper.value,
                        "membarrier", libc.syscall(324, 1 << 9, 0, 0), "groups", os.getgroups())

            """

        /// Checkpoints `original` (which has printed its settings), kills it, restarts it and
        /// expects the same settings from the restarted process.
        static func expectSameSettingsAfterRestart(
            _ original: WorkloadProcess, scratch name: String, shown: [String] = []
        ) throws {
            let directory = try RestartTests.scratch(name)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let before = try original.line()
            try RestartTests.checkpoint(original.pid, store: directory + "/store", name: "controls")
            RestartTests.end(original)
            let store = directory + "/store"
            let detail = try TestTools.run("dumpinfo", ["--store", store, "--name", "controls", "--generation", "0"])
            for text in shown {
                #expect(detail.output.contains(text), "\(detail.output)")
            }
            let restarted = try RestartTests.restart(store: directory + "/store", name: "controls", generation: 0)
            #expect(try restarted.send("go") == before)
            RestartTests.end(restarted)
        }

        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func prctlFlagsOOMScoreLoginUIDGroupsAndMembarrierComeBack() throws {
            let root = getuid() == 0
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    Self.report + """
                        open("/proc/self/oom_score_adj", "w").write("400")
                        libc.prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
                        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
                        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
                        libc.syscall(324, 1 << 4, 0, 0)  # MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED
                        if \(root ? "True" : "False"):
                            open("/proc/self/loginuid", "w").write("3")
                            os.setgroups([7, 8, 9])
                        print(*settings(), flush=True)
                        for line in sys.stdin:
                            print(*settings(), flush=True)
                        """,
                ])
            try Self.expectSameSettingsAfterRestart(
                original, scratch: "controls", shown: ["oom_score_adj 400", "child subreaper"])
        }

        /// The ids a restart sets clear the dumpable flag: it is set again after them.
        @Test(.enabled(if: canChangeUser, "needs root and setpriv"), .timeLimit(.minutes(2)))
        func anotherUsersProcessStaysDumpable() throws {
            let original = try WorkloadProcess(
                executable: "/usr/bin/setpriv",
                arguments: [
                    "--reuid", "65534", "--regid", "65534", "--clear-groups", "/usr/bin/python3", "-c",
                    Self.report + """
                        print(*settings(), flush=True)
                        for line in sys.stdin:
                            print(*settings(), flush=True)
                        """,
                ])
            try Self.expectSameSettingsAfterRestart(original, scratch: "dumpable")
        }

        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func posixTimersAreRefusedAtTheCheckpoint() throws {
            let directory = try RestartTests.scratch("timers")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import ctypes, sys
                    librt = ctypes.CDLL(None, use_errno=True)
                    timer = ctypes.c_void_p()
                    assert librt.timer_create(1, None, ctypes.byref(timer)) == 0  # CLOCK_MONOTONIC
                    print("ready", flush=True)
                    sys.stdin.readline()
                    """,
                ])
            defer { RestartTests.end(original) }
            #expect(try original.line() == "ready")
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "t", "\(original.pid)"])
            #expect(run.status != 0)
            #expect(run.errors.contains("POSIX timers (timer_create) with ids 0"), "\(run.errors)")
        }
    }
}
