import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// The five capability sets of every thread (CRIU's zdtm caps00, caps01) come back as they
    /// were, never wider; and a chrooted process (zdtm chroot) is chrooted again.
    @Suite struct CapabilityTests {
        static var asRoot: Bool { getuid() == 0 && ProcessControlsTests.hasPython }

        /// Python that starts a second thread once `setup` ran, then prints on every line it
        /// reads each thread's Uid line and five capability sets, from /proc (main thread first).
        static func script(setup: String) -> String {
            """
            import ctypes, os, sys, threading
            libc = ctypes.CDLL(None, use_errno=True)
            class Header(ctypes.Structure):
                _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
            Data = ctypes.c_uint32 * 6  # effective, permitted, inheritable; low then high 32
            def capabilities():
                data = Data()
                assert libc.capget(ctypes.byref(Header(0x20080522, 0)), data) == 0
                return data
            def capset(data):
                assert libc.capset(ctypes.byref(Header(0x20080522, 0)), data) == 0, ctypes.get_errno()
            def report():
                lines = []
                for tid in [os.getpid(), thread.native_id]:
                    status = open(f"/proc/self/task/{tid}/status").read().splitlines()
                    lines += [l.split(":")[1].split() for l in status if l.startswith(("Uid", "Cap"))]
                return lines
            \(setup)
            thread = threading.Thread(target=threading.Event().wait, daemon=True)
            thread.start()
            print(*report(), flush=True)
            for line in sys.stdin:
                print(*report(), flush=True)
            """
        }

        /// Checkpoints `original` (which has printed its report), kills it, restarts it and
        /// expects the same report from the restarted process.
        static func expectSameReportAfterRestart(_ original: WorkloadProcess, scratch name: String) throws {
            let directory = try RestartTests.scratch(name)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let before = try original.line()
            let store = directory + "/store"
            try RestartTests.checkpoint(original.pid, store: store, name: "caps")
            RestartTests.end(original)
            let detail = try TestTools.run("dumpinfo", ["--store", store, "--name", "caps", "--generation", "0"])
            #expect(detail.output.contains("capabilities inheritable 0x"), "\(detail.output)")
            let restarted = try RestartTests.restart(store: store, name: "caps", generation: 0)
            defer { RestartTests.end(restarted) }
            #expect(try restarted.send("go") == before)
        }

        /// Root with CAP_SETPCAP out of its bounding set, CAP_CHOWN out of its effective set,
        /// CAP_DAC_OVERRIDE out of both, its inheritable set its permitted one, and
        /// CAP_NET_BIND_SERVICE ambient: zdtm caps00 and caps01 together.
        @Test(.enabled(if: asRoot, "needs root and python3"), .timeLimit(.minutes(2)))
        func everySetComesBackOnEveryThread() throws {
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    Self.script(
                        setup: """
                            data = capabilities()
                            data[0] &= ~0b11  # effective: CAP_CHOWN, CAP_DAC_OVERRIDE
                            data[1] &= ~0b10  # permitted: CAP_DAC_OVERRIDE
                            data[2], data[5] = data[1], data[4]  # inheritable = permitted
                            capset(data)
                            assert libc.prctl(47, 2, 10, 0, 0) == 0  # PR_CAP_AMBIENT_RAISE NET_BIND_SERVICE
                            assert libc.prctl(24, 8, 0, 0, 0) == 0  # PR_CAPBSET_DROP CAP_SETPCAP
                            """),
                ])
            try Self.expectSameReportAfterRestart(original, scratch: "caps-root")
        }

        /// Another user's process whose bounding set lacks CAP_NET_RAW, restarted by root: every
        /// thread takes the user's ids (setresuid acts on one thread) and the narrow bounding
        /// set (narrowed before the ids change, while the stub may still).
        @Test(
            .enabled(if: ProcessControlsTests.canChangeUser, "needs root and setpriv"), .timeLimit(.minutes(2)))
        func anotherUsersThreadsKeepTheirIdsAndBoundingSet() throws {
            let original = try WorkloadProcess(
                executable: "/usr/bin/setpriv",
                arguments: [
                    "--reuid", "65534", "--regid", "65534", "--clear-groups", "--bounding-set", "-net_raw",
                    "/usr/bin/python3", "-c", Self.script(setup: ""),
                ])
            try Self.expectSameReportAfterRestart(original, scratch: "caps-user")
        }

        /// Each thread has its own ids and capability sets (raw setresuid and prctl change the
        /// calling thread alone), and a restart gives each thread its own again (zdtm
        /// different_creds); a thread with other supplementary groups is refused at the checkpoint.
        @Test(.enabled(if: asRoot, "needs root and python3"), .timeLimit(.minutes(2)))
        func threadsKeepTheirOwnIdsAndCapabilities() throws {
            let script = """
                import ctypes, os, sys, threading
                libc = ctypes.CDLL(None, use_errno=True)
                def other_ids():
                    assert libc.syscall(119, 65534, 65534, 65534) == 0  # SYS_setresgid, this thread only
                    assert libc.syscall(117, 65534, 65534, 65534) == 0  # SYS_setresuid, this thread only
                    threading.Event().wait()
                def fewer_capabilities():
                    assert libc.prctl(24, 8, 0, 0, 0) == 0  # PR_CAPBSET_DROP CAP_SETPCAP, this thread only
                    threading.Event().wait()
                def other_groups():
                    groups = (ctypes.c_uint32 * 1)(4)
                    assert libc.syscall(116, 1, groups) == 0  # SYS_setgroups, this thread only
                    threading.Event().wait()
                targets = (other_ids, fewer_capabilities) + ((other_groups,) if "groups" in sys.argv else ())
                for target in targets:
                    threading.Thread(target=target, daemon=True).start()
                import time; time.sleep(0.2)
                def report():
                    lines = []
                    for thread in [threading.main_thread()] + threading.enumerate()[1:]:
                        status = open(f"/proc/self/task/{thread.native_id}/status").read().splitlines()
                        lines += [l.split(":")[1].split() for l in status if l.startswith(("Uid", "Gid", "Cap"))]
                    return lines
                print(*report(), flush=True)
                for line in sys.stdin:
                    print(*report(), flush=True)
                """
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script])
            try Self.expectSameReportAfterRestart(original, scratch: "thread-creds")

            let directory = try RestartTests.scratch("thread-groups")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let grouped = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script, "groups"])
            defer { RestartTests.end(grouped) }
            _ = try grouped.line()
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "t", "\(grouped.pid)"])
            #expect(run.status != 0)
            #expect(run.errors.contains("hold other supplementary groups than the main thread's"), "\(run.errors)")
        }

        /// Python chrooted into `jail` (holding a file "inside"), then `after` run, answering on
        /// every line read what it sees: its root's entries, its cwd, the file read by its path.
        static func chrooted(_ jail: String, after: String = "") -> String {
            """
            import os, sys
            os.chroot("\(jail)")
            os.chdir("/")
            \(after)
            def report():
                return sorted(os.listdir("/")), os.getcwd(), open("/inside").read()
            print(*report(), flush=True)
            for line in sys.stdin:
                print(*report(), flush=True)
            """
        }

        static func jail(in directory: String) throws -> String {
            let jail = directory + "/jail"
            try FileManager.default.createDirectory(atPath: jail, withIntermediateDirectories: true)
            try Data("jail text".utf8).write(to: URL(fileURLWithPath: jail + "/inside"))
            return jail
        }

        /// zdtm chroot: a chrooted process is chrooted again, into the same directory.
        @Test(.enabled(if: asRoot, "needs root and python3"), .timeLimit(.minutes(2)))
        func aChrootedProcessIsChrootedAgain() throws {
            let directory = try RestartTests.scratch("chroot")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let jail = try Self.jail(in: directory)
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", Self.chrooted(jail)])
            let before = try original.line()
            #expect(before == "['inside'] / jail text")
            let store = directory + "/store"
            try RestartTests.checkpoint(original.pid, store: store, name: "chroot")
            RestartTests.end(original)
            let detail = try TestTools.run("dumpinfo", ["--store", store, "--name", "chroot", "--generation", "0"])
            #expect(detail.output.contains("root         \(jail)"), "\(detail.output)")
            let restarted = try RestartTests.restart(store: store, name: "chroot", generation: 0)
            defer { RestartTests.end(restarted) }
            #expect(try restarted.send("go") == before)
        }

        /// A chroot is restored only from a store only root can write: a user who could write
        /// the image could name any directory of theirs.
        @Test(
            .enabled(if: ProcessControlsTests.canChangeUser, "needs root and setpriv"), .timeLimit(.minutes(2)))
        func aChrootFromAUsersStoreIsRefused() throws {
            let directory = try RestartTests.scratch("chroot-user")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let jail = try Self.jail(in: directory)
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    Self.chrooted(
                        jail,
                        after: "os.setgroups([]); os.setresgid(65534, 65534, 65534); "
                            + "os.setresuid(65534, 65534, 65534)"),
                ])
            #expect(try original.line() == "['inside'] / jail text")
            let store = directory + "/store"
            try RestartTests.checkpoint(original.pid, store: store, name: "chroot")
            RestartTests.end(original)
            #expect(try TestTools.run("/bin/sh", ["-c", "chown -R 65534:65534 \(store)"]).status == 0)
            let refused = try TestTools.run("ld-chpox", ["--store", store, "--name", "chroot"])
            #expect(refused.status == 1, "\(refused.errors)")
            #expect(
                refused.errors.contains("it ran chrooted in \(jail), and its store is uid 65534's"), "\(refused.errors)"
            )
        }
    }
}
