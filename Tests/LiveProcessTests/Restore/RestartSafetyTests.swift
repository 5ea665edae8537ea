import Foundation
import Incremental
import StoreTestSupport
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// A restart changes nothing until it is sure, and leaves nothing behind when it is stopped.
    @Suite struct RestartSafetyTests {
        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func aRestartThatFailsOnDamagedDataLeavesTheFilesItWouldCutBack() throws {
            let directory = try RestartTests.scratch("unsure")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let log = directory + "/log"
            // A writer whose log grows after the generation: a restart would cut it back.
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import sys
                    log = open(sys.argv[1], "a", buffering=1)
                    for line in sys.stdin:
                        log.write(line)
                        print("wrote", flush=True)
                    """,
                    log,
                ])
            #expect(try original.send("first") == "wrote")
            try RestartTests.checkpoint(original.pid, store: directory + "/store", name: "log")
            #expect(try original.send("after the generation") == "wrote")
            let written = try Data(contentsOf: URL(fileURLWithPath: log))
            RestartTests.end(original)
            // Every frame of every pack: a byte at one place may fall where the restart reads nothing.
            try PackDamage.flipEveryFrame(inStore: directory + "/store")
            let run = try TestTools.run("ld-chpox", ["--store", directory + "/store", "--name", "log"])
            #expect(run.status != 0, "\(run.output) \(run.errors)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: log)) == written, "the log is as the original left it")
        }

        /// A deleted file is recreated without ever having a name: symlinks planted where the old
        /// code created it (/tmp/chpox-restored-<pid>-<fd>, for the next few hundred pids) lead
        /// nowhere, and the process finds its file's contents, still deleted.
        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func aDeletedFileIsRecreatedWithoutAName() throws {
            let directory = try RestartTests.scratch("deleted")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import os, sys
                    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
                    os.write(fd, b"secret contents")
                    os.unlink(sys.argv[1])
                    os.lseek(fd, 7, 0)
                    print("ready", fd, flush=True)
                    sys.stdin.readline()
                    print(os.read(fd, 100), os.fstat(fd).st_nlink, flush=True)
                    """,
                    directory + "/scratch-file",
                ])
            #expect(try original.line() == "ready 3")
            try RestartTests.checkpoint(original.pid, store: directory + "/store", name: "d")
            RestartTests.end(original)

            let victim = directory + "/victim"
            #expect(FileManager.default.createFile(atPath: victim, contents: Data("untouched".utf8)))
            let last =
                Int(
                    (try String(contentsOfFile: "/proc/sys/kernel/ns_last_pid", encoding: .utf8))
                        .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            let planted = (last + 1...last + 400).map { "/tmp/chpox-restored-\($0)-3" }
            for path in planted {
                try? FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: victim)
            }
            defer { for path in planted { unlink(path) } }

            let restarted = try RestartTests.restart(store: directory + "/store", name: "d", generation: 0)
            #expect(try restarted.send("go") == "b'contents' 0")
            #expect(try restarted.child.wait() == .exited(0))
            #expect(try String(contentsOfFile: victim, encoding: .utf8) == "untouched")
        }

        /// Processes whose executable is chpox's restore stub.
        static func stubs() -> Set<Int32> {
            RestartTests.started(since: [], running: ["chpox-restore-stub"])
        }

        @Test(.timeLimit(.minutes(3))) func anLdChpoxKilledEarlyLeavesNoStub() throws {
            let directory = try RestartTests.scratch("killed")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: TestTools.path("chpox-stack-workload"), arguments: [])
            #expect(try original.line() == "waiting 21 0")
            try RestartTests.checkpoint(original.pid, store: store, name: "k")
            RestartTests.end(original)
            let before = Self.stubs()
            var generator = SystemRandomNumberGenerator()
            for attempt in 0..<20 {
                let null = try FileDescriptor.open("/dev/null", [.readWrite])
                let child = try ChildProcess.spawn(
                    TestTools.path("ld-chpox"), ["--store", store, "--name", "k"], stdin: null, stdout: null)
                null.close()
                usleep(UInt32.random(in: 0..<60_000, using: &generator))
                try? child.send(SIGKILL)
                _ = try? child.wait()
                // A stub dies with ld-chpox; a process ld-chpox had handed over runs on.
                var left = Self.stubs().subtracting(before)
                for _ in 0..<100 where !left.isEmpty {
                    usleep(10_000)
                    left = Self.stubs().subtracting(before)
                }
                #expect(left.isEmpty, "attempt \(attempt): stubs \(left) outlived ld-chpox")
                // (They hold the test's stderr: the run would never end.)
                for pid in left { kill(pid, SIGKILL) }
                for pid in RestartTests.started(since: [], running: ["chpox-stack-workload"]) { kill(pid, SIGKILL) }
                usleep(20_000)
            }
        }

        /// Threads that kept root's capabilities through setresuid (PR_SET_KEEPCAPS) keep them
        /// again when root restarts a store only root can write; from a store their user can
        /// write, the flag is set only after the ids change, the capabilities are refused, and
        /// the failed restart of a process with several threads ends and says why (a thread
        /// that died traced is reaped by ld-chpox, so that the stub can be: it used to hang).
        @Test(
            .enabled(
                if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
                "needs root and python3"),
            .timeLimit(.minutes(2)))
        func threadsThatKeptCapabilities() throws {
            let directory = try RestartTests.scratch("kept-caps")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            #expect(chmod(directory, 0o755) == 0)
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import ctypes, os, sys, threading
                    prctl = ctypes.CDLL(None, use_errno=True).prctl
                    prctl(8, 1, 0, 0, 0)  # PR_SET_KEEPCAPS
                    done = threading.Event()
                    threading.Thread(target=done.wait, daemon=True).start()
                    os.setgroups([])
                    os.setresgid(65534, 65534, 65534)
                    os.setresuid(65534, 65534, 65534)
                    print("ready", flush=True)
                    for line in sys.stdin:
                        caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapPrm")]
                        print("keepcaps", prctl(7, 0, 0, 0, 0), "permitted", caps[0], os.getresuid(), flush=True)
                    """,
                ])
            #expect(try original.line() == "ready")
            let before = try original.send("go")
            #expect(before.hasPrefix("keepcaps 1 permitted "), "\(before)")
            #expect(!before.contains("permitted 0000000000000000"), "\(before)")
            let store = directory + "/store", userStore = directory + "/user-store"
            try RestartTests.checkpoint(original.pid, store: store, name: "kept")
            RestartTests.end(original)

            let restarted = try RestartTests.restart(store: store, name: "kept", generation: 0)
            #expect(try restarted.send("go") == before)
            RestartTests.end(restarted)
            if let process = RestartTests.started(since: [], running: ["python3"]).first(where: {
                (try? ProcFS.status($0).userIDs.first) == 65534
            }) {
                kill(process, SIGKILL)
            }
            usleep(200_000)

            #expect(try TestTools.run("/bin/sh", ["-c", "cp -a \(store) \(userStore)"]).status == 0)
            #expect(try TestTools.run("/bin/sh", ["-c", "chown -R 65534:65534 \(userStore)"]).status == 0)
            let run = try TestTools.run(
                "/usr/bin/timeout",
                ["-s", "KILL", "60", TestTools.path("ld-chpox"), "--store", userStore, "--name", "kept"])
            #expect(run.status == 1, "\(run.output) \(run.errors)")
            #expect(run.errors.contains("a restart never grants a capability"), "\(run.errors)")
        }
    }
}
