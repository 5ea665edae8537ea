import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// seccomp (CRIU's zdtm seccomp_filter, _threads, _tsync, _strict): a process under filters
    /// is checkpointed (its filters suspended while chpox works in it) and restarted under the
    /// same filters, shared among its threads as they were; what cannot come back is refused.
    @Suite struct SeccompTests {
        static var canFilter: Bool {
            getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
        }

        /// Python that installs filters by raw seccomp(2) calls: `deny(nr, errno)` makes system
        /// call `nr` fail with `errno`; `report()` says, for the main thread and a worker, what
        /// getppid, getpgid and getsid return and /proc's Seccomp / Seccomp_filters.
        static let script = """
            import ctypes, os, queue, sys, threading
            libc = ctypes.CDLL(None, use_errno=True)
            class Insn(ctypes.Structure):
                _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
            class Prog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]
            def install(insns, flags):
                program = (Insn * len(insns))(*insns)
                return libc.syscall(317, 1, flags, ctypes.byref(Prog(len(insns), program)))
            def deny(nr, errno, flags=0):
                return install([Insn(0x20, 0, 0, 0), Insn(0x15, 0, 1, nr), Insn(6, 0, 0, 0x50000 | errno),
                                Insn(6, 0, 0, 0x7fff0000)], flags)
            def call(nr, *args):
                result = libc.syscall(nr, *args)
                return "ok" if result >= 0 else -ctypes.get_errno()
            def status(tid):
                text = open(f"/proc/self/task/{tid}/status").read().splitlines()
                fields = dict(line.split(":\\t", 1) for line in text if ":\\t" in line)
                return fields["Seccomp"] + "/" + fields["Seccomp_filters"]
            def calls():
                return [call(110), call(121, 0), call(124, 0)]
            requests, answers = queue.Queue(), queue.Queue()
            def worker():
                while True:
                    request = requests.get()
                    answers.put(request())
            threading.Thread(target=worker, daemon=True).start()
            def in_worker(function):
                requests.put(function)
                return answers.get()
            def report():
                worker_tid = in_worker(threading.get_native_id)
                return " ".join(map(str, calls() + [status(threading.get_native_id())] + in_worker(calls)
                                          + [status(worker_tid)]))

            """

        /// Two filters every thread shares (the second with SECCOMP_FILTER_FLAG_LOG, given to the
        /// worker by TSYNC), and one the worker alone holds: after the restart each system call
        /// fails as before in each thread, and a TSYNC from the worker still reaches the main
        /// thread (the chain is shared again, not copied).
        @Test(.enabled(if: canFilter, "needs root and python3"), .timeLimit(.minutes(2)))
        func filtersComeBackPerThreadAndShared() throws {
            let directory = try RestartTests.scratch("seccomp")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    Self.script + """
                        assert deny(110, 1, 1) == 0  # getppid: EPERM, every thread (TSYNC)
                        assert deny(121, 13, 1 | 2) == 0  # getpgid: EACCES, every thread, logged
                        assert in_worker(lambda: deny(124, 6)) == 0  # getsid: ENXIO, the worker alone
                        print(report(), flush=True)
                        for line in sys.stdin:
                            if line.strip() == "tsync":
                                print(in_worker(lambda: install([Insn(6, 0, 0, 0x7fff0000)], 1)), report(), flush=True)
                            else:
                                print(report(), flush=True)
                        """,
                ])
            let before = try original.line()
            #expect(before == "-1 -13 ok 2/2 -1 -13 -6 2/3", "the filters as installed")
            let store = directory + "/store"
            try RestartTests.checkpoint(original.pid, store: store, name: "seccomp")
            #expect(try original.send("go") == before, "the checkpoint left it as it was")
            let tsyncBefore = try original.send("tsync")
            RestartTests.end(original)
            let detail = try TestTools.run("dumpinfo", ["--store", store, "--name", "seccomp", "--generation", "0"])
            #expect(detail.output.contains("3 filters (2 shared by every thread)"), "\(detail.output)")
            let restarted = try RestartTests.restart(store: store, name: "seccomp", generation: 0)
            defer { RestartTests.end(restarted) }
            #expect(try restarted.send("go") == before)
            #expect(try restarted.send("tsync") == tsyncBefore)
        }

        /// no_new_privs (zdtm seccomp_no_new_privs) comes back on the threads that had it: here
        /// the main thread, not the worker started before it was set.
        @Test(.enabled(if: canFilter, "needs root and python3"), .timeLimit(.minutes(2)))
        func noNewPrivsComesBackOnTheThreadsThatHadIt() throws {
            let directory = try RestartTests.scratch("seccomp-nnp")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    Self.script + """
                        worker_tid = in_worker(threading.get_native_id)
                        assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
                        def flags(tid):
                            text = open(f"/proc/self/task/{tid}/status").read()
                            return text.split("NoNewPrivs:\t")[1][0]
                        def report():
                            return f"{libc.prctl(39, 0, 0, 0, 0)} {flags(threading.get_native_id())} {flags(worker_tid)}"
                        print(report(), flush=True)
                        for line in sys.stdin:
                            print(report(), flush=True)
                        """,
                ])
            let before = try original.line()
            #expect(before == "1 1 0", "no_new_privs as set")
            let store = directory + "/store"
            try RestartTests.checkpoint(original.pid, store: store, name: "nnp")
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: store, name: "nnp", generation: 0)
            defer { RestartTests.end(restarted) }
            #expect(try restarted.send("go") == before)
        }

        /// A filter whose listener is a descriptor (SECCOMP_FILTER_FLAG_NEW_LISTENER, returning
        /// SECCOMP_RET_USER_NOTIF) cannot be given its listener again: refused at the checkpoint.
        @Test(.enabled(if: canFilter, "needs root and python3"), .timeLimit(.minutes(2)))
        func aUserNotificationFilterIsRefused() throws {
            let directory = try RestartTests.scratch("seccomp-notify")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    Self.script + """
                        listener = install([Insn(0x20, 0, 0, 0), Insn(0x15, 0, 1, 124), Insn(6, 0, 0, 0x7fc00000),
                                            Insn(6, 0, 0, 0x7fff0000)], 8)
                        assert listener >= 0
                        print("ready", flush=True)
                        for line in sys.stdin:
                            print("ready", flush=True)
                        """,
                ])
            defer { RestartTests.end(original) }
            #expect(try original.line() == "ready")
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "t", "\(original.pid)"])
            #expect(run.status != 0)
            #expect(run.errors.contains("SECCOMP_RET_USER_NOTIF"), "\(run.errors)")
            #expect(try original.send("go") == "ready", "the refused checkpoint left it running")
        }
    }
}
