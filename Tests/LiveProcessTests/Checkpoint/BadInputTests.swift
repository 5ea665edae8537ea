import Foundation
import Syscall
import TestTools
import Testing
import TrackerTestSupport
import Tracee

extension LiveProcess {
    /// Bad input gets one clear line and a non-zero exit, at once.
    @Suite struct BadInputTests {
        @Test func anIntervalThatIsNotAFiniteNumberOfSecondsUpToAYearIsRefused() throws {
            for value in ["inf", "1e300", "nan", "0", "31622401"] {
                for arguments in [["--interval", value, "1"], ["track", "--interval", value, "1"]] {
                    let run = try TestTools.run("cpx", arguments)
                    #expect(run.status == 64, "cpx \(arguments): \(run.errors)")
                    #expect(
                        run.errors.contains("--interval takes seconds, more than 0 and at most 31622400"),
                        "\(run.errors)")
                }
            }
        }

        @Test(.timeLimit(.minutes(1))) func aProcessCannotCheckpointItselfOrAnAncestor() throws {
            let store = try RestartTests.scratch("self") + "/store"
            defer { try? FileManager.default.removeItem(atPath: (store as NSString).deletingLastPathComponent) }
            let cpx = TestTools.path("cpx")
            // `exec`: cpx runs as the shell's pid, $$.
            let itself = try TestTools.run("/bin/sh", ["-c", "exec \"$0\" --store \"$1\" $$", cpx, store])
            #expect(itself.status == 1, "\(itself.output) \(itself.errors)")
            #expect(itself.errors.contains("it is this process itself"), "\(itself.errors)")
            // Without: the shell waits for cpx, which must not stop it.
            let parent = try TestTools.run("/bin/sh", ["-c", "\"$0\" --store \"$1\" $$; echo went on", cpx, store])
            #expect(parent.errors.contains("it is an ancestor of this process"), "\(parent.errors)")
            #expect(parent.output.contains("went on"))
            let track = try TestTools.run("/bin/sh", ["-c", "\"$0\" track --count 1 $$", cpx])
            #expect(track.status != 0)
            #expect(track.errors.contains("it is an ancestor of this process"), "\(track.errors)")
        }

        /// Messages say what is true: a kernel thread, a process another tracer holds, a negative
        /// number (not "may have exited", "ptrace needs the same user", "Missing value").
        @Test(.timeLimit(.minutes(1))) func whatCannotBeCheckpointedIsNamedForWhatItIs() throws {
            let store = try RestartTests.scratch("messages") + "/store"
            defer { try? FileManager.default.removeItem(atPath: (store as NSString).deletingLastPathComponent) }
            let kernel = try TestTools.run("cpx", ["--store", store, "2"])
            #expect(kernel.status == 1)
            #expect(kernel.errors.contains("pid 2: it is a kernel thread (kthreadd)"), "\(kernel.errors)")

            let sleeper = try ChildProcess.spawn("/bin/sleep", ["30"])
            defer { try? sleeper.send(SIGKILL); _ = try? sleeper.wait() }
            for _ in 0..<200 where (try? ProcFS.state(sleeper.pid)) != "S" { usleep(5000) }
            let held = try FrozenProcess(pid: sleeper.pid)
            let traced = try TestTools.run("cpx", ["--store", store, "\(sleeper.pid)"])
            held.thaw()
            #expect(traced.status == 1)
            #expect(traced.errors.contains("it is already traced by pid \(getpid())"), "\(traced.errors)")
            let missing = try TestTools.run("cpx", ["--store", store, "999999999"])
            #expect(missing.status == 1)
            // Runs that stored nothing leave no store behind (nor the directory made for it).
            #expect(!FileManager.default.fileExists(atPath: store), "a failed cpx left \(store)")

            for (tool, arguments, message) in [
                ("cpx", ["--store", store, "--interval", "-5", "1"], "--interval takes seconds"),
                ("cpx", ["--store", store, "--count", "-2", "1"], "--count must be at least 1"),
                ("ld-chpox", ["--store", store, "--generation", "-1"], "The value '-1' is invalid for '--generation"),
                ("dumpinfo", ["--store", store, "--generation", "-1"], "--generation takes a generation number"),
            ] {
                let run = try TestTools.run(tool, arguments)
                #expect(run.status == 64, "\(tool) \(arguments)")
                #expect(run.errors.contains(message), "\(tool) \(arguments): \(run.errors)")
                #expect(!run.errors.contains("Missing value"), "\(tool) \(arguments)")
            }
        }

        /// A descriptor of a kind chpox does not restore is refused saying what it is: an
        /// io_uring instance (made by io_uring_setup, syscall 425, from Python's ctypes).
        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3"),
            .timeLimit(.minutes(1)))
        func anIoUringIsRefusedNamedForWhatItIs() throws {
            let store = try RestartTests.scratch("io-uring") + "/store"
            defer { try? FileManager.default.removeItem(atPath: (store as NSString).deletingLastPathComponent) }
            let program = """
                import ctypes, sys
                params = ctypes.create_string_buffer(120)
                fd = ctypes.CDLL(None, use_errno=True).syscall(425, 8, params)
                print('ready', fd, flush=True)
                sys.stdin.readline()
                """
            let target = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", program])
            defer { RestartTests.end(target) }
            let fd = try target.line().split(separator: " ").last.map(String.init) ?? "?"
            try #require(Int(fd) ?? -1 >= 0, "io_uring_setup failed here")
            let run = try TestTools.run("cpx", ["--store", store, "\(target.pid)"])
            #expect(run.status == 1)
            #expect(run.errors.contains("fd \(fd): anon_inode:[io_uring]: an io_uring instance"), "\(run.errors)")
            #expect(run.errors.contains("--skip-unsupported"), "\(run.errors)")
        }

        /// A SysV shared memory segment attached with shmat is refused (a restart would map
        /// plain shared memory, which shmdt and the segment's other users tell apart: zdtm shm
        /// restarted and then failed in shmdt before), and the segment is left as it was.
        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3"),
            .timeLimit(.minutes(1)))
        func aSysVSharedMemorySegmentIsRefused() throws {
            let store = try RestartTests.scratch("sysv-shm") + "/store"
            defer { try? FileManager.default.removeItem(atPath: (store as NSString).deletingLastPathComponent) }
            let program = """
                import ctypes, sys
                libc = ctypes.CDLL(None, use_errno=True)
                libc.shmat.restype = ctypes.c_void_p
                shmid = libc.shmget(0, 8192, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
                address = libc.shmat(shmid, None, 0)
                libc.shmctl(shmid, 0, None)  # IPC_RMID: gone once detached
                ctypes.memset(address, 7, 8192)
                print('ready', shmid, hex(address), flush=True)
                sys.stdin.readline()
                print('attached', ctypes.string_at(address, 1)[0], libc.shmdt(ctypes.c_void_p(address)), flush=True)
                """
            let target = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", program])
            defer { RestartTests.end(target) }
            let ready = try target.line().split(separator: " ").map(String.init)
            try #require(ready.count == 3 && Int(ready[1]) ?? -1 >= 0, "shmget/shmat failed here: \(ready)")
            let run = try TestTools.run("cpx", ["--store", store, "\(target.pid)"])
            #expect(run.status == 1)
            #expect(run.errors.contains("a SysV shared memory segment"), "\(run.errors)")
            #expect(run.errors.contains("mapping \(ready[2])-"), "\(run.errors)")
            // Still attached, its bytes there, detached without error.
            #expect(try target.send("go") == "attached 7 0")
        }
    }
}
