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

        /// Python that makes POSIX timers by raw system calls (`make`) and reports them: each
        /// one's /proc/self/timers entry, interval and minutes left, and whether SIGUSR2 ticks.
        static let timers = """
            import ctypes, os, signal, sys, threading, time
            libc = ctypes.CDLL(None, use_errno=True)
            class Event(ctypes.Structure):
                _fields_ = [("value", ctypes.c_uint64), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
                            ("tid", ctypes.c_int), ("pad", ctypes.c_int * 11)]
            class Spec(ctypes.Structure):
                _fields_ = [(name, ctypes.c_long) for name in ("isec", "insec", "vsec", "vnsec")]
            def make(clock, notify, signo, value, tid=0, arm=None):
                timer = ctypes.c_int(0)
                assert libc.syscall(222, clock, ctypes.byref(Event(value, signo, notify, tid)), ctypes.byref(timer)) == 0
                if arm:
                    spec = Spec(int(arm[1]), int(arm[1] % 1 * 1e9), int(arm[0]), int(arm[0] % 1 * 1e9))
                    assert libc.syscall(223, timer, 0, ctypes.byref(spec), None) == 0
                return timer.value
            ticks = [0]
            signal.signal(signal.SIGUSR2, lambda *_: ticks.__setitem__(0, ticks[0] + 1))
            signal.signal(signal.SIGUSR1, lambda *_: None)
            def report():
                start = ticks[0]
                time.sleep(0.3)
                lines = ["ticking" if ticks[0] > start else "still"]
                listed = ("\\n" + open("/proc/self/timers").read()).split("\\nID: ")[1:]
                for entry in sorted(listed, key=lambda e: int(e.split()[0])):
                    spec = Spec()
                    assert libc.syscall(224, int(entry.split()[0]), ctypes.byref(spec)) == 0
                    lines.append(" ".join(entry.split()) + f" every {spec.isec}.{spec.insec:09d} left {spec.vsec // 60}m")
                return " | ".join(lines)

            """

        /// zdtm posix_timers and pthread_timers: timers on several clocks, one with holes below
        /// its id, one signalling a thread, one without a signal, one ticking (its signal may
        /// be pending at the freeze) come back under their ids, with their signal, value and
        /// interval, the time left, and the ticking timer still ticking.
        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func posixTimersComeBackUnderTheirIDs() throws {
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    Self.timers + """
                        holes = [make(1, 0, 14, 0) for _ in range(5)]
                        for timer in holes[:4]: libc.syscall(226, timer)
                        worker = threading.Thread(target=threading.Event().wait, daemon=True)
                        worker.start()
                        make(1, 0, signal.SIGUSR1, 0x1234, arm=(3600, 0))
                        make(7, 1, 0, 0, arm=(3600, 7))
                        make(0, 4, signal.SIGUSR1, 0x99, tid=worker.native_id, arm=(3000, 0))
                        make(1, 0, signal.SIGUSR2, 0, arm=(0.05, 0.05))
                        print(report(), flush=True)
                        for line in sys.stdin:
                            print(report(), flush=True)
                        """,
                ])
            try Self.expectSameSettingsAfterRestart(original, scratch: "timers")
        }

        /// A timer on a CPU-time clock counts the process's CPU time, which starts again at a
        /// restart: refused, naming the timer.
        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func cpuTimeTimersAreRefusedAtTheCheckpoint() throws {
            let directory = try RestartTests.scratch("cputimers")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    Self.timers + """
                        make(2, 0, signal.SIGUSR1, 0, arm=(3600, 0))  # CLOCK_PROCESS_CPUTIME_ID
                        print("ready", flush=True)
                        sys.stdin.readline()
                        """,
                ])
            defer { RestartTests.end(original) }
            #expect(try original.line() == "ready")
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "t", "\(original.pid)"])
            #expect(run.status != 0)
            #expect(run.errors.contains("POSIX timer 0 (timer_create) counts CPU time"), "\(run.errors)")
        }
    }
}
