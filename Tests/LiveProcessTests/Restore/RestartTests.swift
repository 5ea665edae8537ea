import Foundation
import StoreTestSupport
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// `ld-chpox`: real programs restarted from several generations of a chain, each proving
    /// its own state afterwards. The restarted process's stdio are ld-chpox's (the pipes of
    /// the original are gone): the tests talk to it through `ld-chpox --wait`'s.
    @Suite struct RestartTests {
        static func scratch(_ name: String) throws -> String {
            let directory = NSTemporaryDirectory() + "chpox-restart-\(name)-\(getpid())"
            try? FileManager.default.removeItem(atPath: directory)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            return directory
        }

        static func checkpoint(_ pid: Int32, store: String, name: String) throws {
            let run = try TestTools.run("cpx", ["--store", store, "--name", name, "\(pid)"])
            #expect(run.status == 0, "\(run.errors)")
        }

        /// Kills the original and waits until its pid is free again.
        static func end(_ process: WorkloadProcess) {
            try? process.child.send(SIGKILL)
            _ = try? process.child.wait()
        }

        static func restart(
            store: String, name: String, generation: Int, extra: [String] = []
        ) throws -> WorkloadProcess {
            try WorkloadProcess(
                executable: TestTools.path("ld-chpox"),
                arguments: TestTools.restartArguments(
                    ["--store", store, "--name", name, "--generation", "\(generation)", "--wait"] + extra))
        }

        /// Runs `script` (`python3 -c`) until it prints "pending", checkpoints it, kills it and
        /// restarts it; told to go on, it must print "handled [SIGUSR1]" and exit 0.
        static func expectSignalHandledAfterRestart(scratch name: String, script: String) throws {
            let directory = try scratch(name)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script])
            #expect(try original.line() == "pending")
            try checkpoint(original.pid, store: directory + "/store", name: "sig")
            end(original)
            let restarted = try restart(store: directory + "/store", name: "sig", generation: 0)
            #expect(try restarted.send("go") == "handled [\(SIGUSR1)]")
            #expect(try restarted.child.wait() == .exited(0))
        }

        @Test(.timeLimit(.minutes(2))) func aCounterContinuesFromEachGenerationWithItsPid() throws {
            let directory = try Self.scratch("counter")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: TestTools.path("chpox-stack-workload"), arguments: [])
            #expect(try original.line() == "waiting 21 0")
            for k in 0..<3 {
                #expect(try original.send("line") == "waiting 21 \(k + 1)")
                try Self.checkpoint(original.pid, store: store, name: "counter")
            }
            let pid = original.pid
            Self.end(original)
            // Generation k was taken when the counter was k + 1: it goes on from there, no gap.
            for k in [0, 2, 1] {
                let restarted = try Self.restart(store: store, name: "counter", generation: k)
                #expect(try restarted.send("line") == "waiting 21 \(k + 2)", "generation \(k)")
                #expect(try restarted.send("line") == "waiting 21 \(k + 3)", "generation \(k)")
                // Its own pid (it was free), which the kernel reports from inside too.
                #expect(FileManager.default.fileExists(atPath: "/proc/\(pid)"))
                #expect((try ProcFS.link(pid, "exe"))?.hasSuffix("chpox-stack-workload") == true)
                #expect(try restarted.quit("q") == .exited(0))
            }
        }

        @Test(.timeLimit(.minutes(3))) func aThreadedWorkloadRestartsWholeFromTwoGenerations() throws {
            let target = try ChurnTarget("restart-churn", megabytes: 8, threads: 4, seed: 71)
            for _ in 0..<3 {
                usleep(150_000)
                try Self.checkpoint(target.pid, store: target.store, name: "churn")
            }
            #expect(try target.check().hasPrefix("ok"))
            let pid = target.pid
            try target.workload.child.send(SIGKILL)
            _ = try target.workload.child.wait()
            // Newest first: a restart cuts its file back to the generation's size, and an
            // earlier generation can go further back, never forward.
            for generation in [2, 0] {
                let restarted = try Self.restart(store: target.store, name: "churn", generation: generation)
                #expect(try restarted.send("restarted") == "noted")
                // Memory of every thread, registers held across the restart (AVX, x87, MXCSR),
                // signal handlers and mask, the SIGALRM timer, its file and its offset.
                let first = try restarted.send("check")
                #expect(first.hasPrefix("ok"), "generation \(generation): \(first)")
                usleep(300_000)
                #expect(try restarted.send("check").hasPrefix("ok"), "generation \(generation)")
                #expect(try ProcFS.threads(pid).count == 5, "generation \(generation): every thread")
                #expect(try restarted.quit("quit") == .exited(0), "generation \(generation)")
            }
        }

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(3)))
        func anInterpreterFinishesItsComputationWithTheSameResult() throws {
            let directory = try Self.scratch("python")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let program = """
                import sys
                total, n = 0, 3_000_000
                print("started", flush=True)
                sys.stdin.readline()
                for i in range(n):
                    total = (total * 31 + i * i) % 1_000_000_007
                print("result", total, flush=True)
                """
            let reference = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", program])
            #expect(try reference.line() == "started")
            let expected = try reference.send("go")
            #expect(expected.hasPrefix("result "))

            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", program])
            #expect(try original.line() == "started")
            try Self.checkpoint(original.pid, store: directory + "/store", name: "py")  // waiting in readline
            try original.write("go")
            usleep(200_000)
            try Self.checkpoint(original.pid, store: directory + "/store", name: "py")  // in the middle of the loop
            Self.end(original)
            let fromMiddle = try Self.restart(store: directory + "/store", name: "py", generation: 1)
            #expect(try fromMiddle.line() == expected)
            #expect(try fromMiddle.child.wait() == .exited(0))
            let fromStart = try Self.restart(store: directory + "/store", name: "py", generation: 0)
            #expect(try fromStart.send("go") == expected)
            #expect(try fromStart.child.wait() == .exited(0))
        }

        @Test(.timeLimit(.minutes(2))) func aRestartedProcessIsCheckpointedAndRestartedAgain() throws {
            let directory = try Self.scratch("again")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: TestTools.path("chpox-stack-workload"), arguments: [])
            #expect(try original.line() == "waiting 21 0")
            #expect(try original.send("line") == "waiting 21 1")
            try Self.checkpoint(original.pid, store: store, name: "first")
            Self.end(original)
            let second = try Self.restart(store: store, name: "first", generation: 0)
            #expect(try second.send("line") == "waiting 21 2")
            // ld-chpox --wait is the parent; the restarted process is its child.
            let restartedPid = try #require(ProcFS.threads(second.pid).isEmpty ? nil : Self.child(of: second.pid))
            try Self.checkpoint(restartedPid, store: store, name: "second")
            #expect(try second.send("line") == "waiting 21 3")
            try? TestTools.run("/bin/kill", ["-9", "\(restartedPid)"])
            _ = try? second.child.wait()
            let third = try Self.restart(store: store, name: "second", generation: 0)
            #expect(try third.send("line") == "waiting 21 3")
            #expect(try third.quit("q") == .exited(0))
        }

        /// Every process id now.
        static func processes() -> Set<Int32> {
            Set(((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) })
        }

        /// Processes started since `before` whose executable names one of `programs`.
        static func started(since before: Set<Int32>, running programs: [String]) -> Set<Int32> {
            processes().subtracting(before).filter { pid in
                let exe = ProcFS.link(pid, "exe") ?? ""
                return programs.contains { exe.contains($0) }
            }
        }

        /// The first child of `parent` but a lazy restart's guardian (`chpox-restore-stub --guard`).
        static func child(of parent: Int32) -> Int32? {
            for _ in 0..<200 {
                for pid in children(of: parent) where !isNotTheRestarted(pid) { return pid }
                usleep(5000)
            }
            return nil
        }

        /// The children of every thread of `parent` (a child is listed under the thread that
        /// made it, or the one it passed to when that thread ended), the main thread's first.
        static func children(of parent: Int32) -> [Int32] {
            let threads = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(parent)/task")) ?? [])
                .compactMap { Int32($0) }.sorted { ($0 == parent ? 0 : $0) < ($1 == parent ? 0 : $1) }
            return threads.flatMap { thread in
                ((try? String(contentsOfFile: "/proc/\(parent)/task/\(thread)/children", encoding: .utf8)) ?? "")
                    .split(separator: " ").compactMap { Int32($0) }
            }
        }

        static func isGuardian(_ pid: Int32) -> Bool {
            let arguments = (try? ProcFS.bytes(pid, "cmdline")) ?? []
            return arguments.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.last == "--guard"
        }

        /// Whether child `pid` of ld-chpox is not the restarted process: a lazy restart's
        /// guardian, one being spawned (still ld-chpox's program: the guardian is spawned on a
        /// thread of its own while the restart runs, and may come first among the children), or
        /// one that ended (a zombie has no command line).
        static func isNotTheRestarted(_ pid: Int32) -> Bool {
            let program = (try? ProcFS.link(pid, "exe")) ?? ""
            return isGuardian(pid) || ((try? ProcFS.bytes(pid, "cmdline")) ?? []).isEmpty
                || (try? ProcFS.state(pid)) == "Z" || program.hasSuffix("/ld-chpox")
                || program.hasSuffix("/chpox-restore-stub")
        }

        @Test(.timeLimit(.minutes(2))) func aWrittenFileCutShorterThanTheGenerationIsRefused() throws {
            let target = try ChurnTarget("restart-file", megabytes: 4, threads: 1, seed: 72)
            usleep(300_000)
            // Without its files kept (`--no-files`): a restart uses the file as it is then.
            let cpx = try TestTools.run("cpx", ["--store", target.store, "--name", "f", "--no-files", "\(target.pid)"])
            #expect(cpx.status == 0, "\(cpx.errors)")
            try target.workload.child.send(SIGKILL)
            _ = try target.workload.child.wait()
            let records = target.directory + "/records"
            #expect(truncate(records, 64) == 0)
            let run = try TestTools.run("ld-chpox", ["--store", target.store, "--name", "f"])
            #expect(run.status != 0, "\(run.errors)")
            #expect(run.errors.contains(records), "\(run.errors)")
            #expect(run.errors.contains("shorter"), "\(run.errors)")
        }

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func aBlockedPendingSignalIsHandledAfterTheRestart() throws {
            try Self.expectSignalHandledAfterRestart(
                scratch: "signal",
                script: """
                    import os, signal, sys
                    got = []
                    signal.signal(signal.SIGUSR1, lambda number, frame: got.append(number))
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
                    os.kill(os.getpid(), signal.SIGUSR1)
                    print("pending", flush=True)
                    sys.stdin.readline()
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
                    print("handled", got, flush=True)
                    """)
        }

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func aSignalPendingForAnotherThreadIsHandledByItAfterTheRestart() throws {
            // SIGUSR1 sent to the second thread alone (pthread_kill) while every thread blocks it.
            try Self.expectSignalHandledAfterRestart(
                scratch: "thread-signal",
                script: """
                    import os, signal, sys, threading
                    got = []
                    signal.signal(signal.SIGUSR1, lambda number, frame: got.append(number))
                    ready = threading.Event()
                    go = threading.Event()
                    def worker():
                        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
                        ready.set()
                        go.wait()
                        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
                    t = threading.Thread(target=worker)
                    t.start()
                    ready.wait()
                    signal.pthread_kill(t.ident, signal.SIGUSR1)
                    print("pending", flush=True)
                    sys.stdin.readline()
                    go.set()
                    t.join()
                    import time
                    for _ in range(100):
                        if got: break
                        time.sleep(0.01)
                    print("handled", got, flush=True)
                    """)
        }

        @Test(.timeLimit(.minutes(2))) func aDamagedChunkStopsTheRestartAndLeavesNoProcess() throws {
            let directory = try Self.scratch("damaged")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: TestTools.path("chpox-stack-workload"), arguments: [])
            #expect(try original.line() == "waiting 21 0")
            try Self.checkpoint(original.pid, store: store, name: "damaged")
            Self.end(original)
            // Flip a byte in the middle of every chunk of every pack.
            try PackDamage.flipEveryFrame(inStore: store)
            let before = Self.processes()
            let run = try TestTools.run("ld-chpox", ["--store", store, "--name", "damaged"])
            #expect(run.status != 0, "\(run.output) \(run.errors)")
            #expect(!run.errors.isEmpty, "\(run.output) \(run.errors)")
            #expect(
                Self.started(since: before, running: ["chpox-restore-stub", "chpox-stack-workload"]).isEmpty,
                "no process left behind")
        }

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func aProcessSleepingInNanosleepWakesAfterTheRestart() throws {
            let directory = try Self.scratch("sleep")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import time
                    print("sleeping", flush=True)
                    start = time.monotonic()
                    time.sleep(1.5)
                    print("awake", flush=True)
                    """,
                ])
            #expect(try original.line() == "sleeping")
            usleep(300_000)
            try Self.checkpoint(original.pid, store: directory + "/store", name: "sleep")  // inside clock_nanosleep
            Self.end(original)
            let restarted = try Self.restart(store: directory + "/store", name: "sleep", generation: 0)
            #expect(try restarted.line() == "awake")
            #expect(try restarted.child.wait() == .exited(0))
        }

        @Test(.timeLimit(.minutes(2))) func withoutWaitTheProcessRunsOnDetached() throws {
            let directory = try Self.scratch("detached")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            // /bin/sleep with its stdio on /dev/null (pipes would become ld-chpox's own).
            let null = try FileDescriptor.open("/dev/null", [.readWrite])
            let sleeper = try ChildProcess.spawn(
                "/bin/sh", ["-c", "exec /bin/sleep 60 2>/dev/null"], stdin: null, stdout: null)
            null.close()
            for _ in 0..<400 where (try? ProcFS.link(sleeper.pid, "exe")) != "/usr/bin/sleep" { usleep(5000) }
            usleep(100_000)
            try Self.checkpoint(sleeper.pid, store: store, name: "detached")
            try sleeper.send(SIGKILL)
            _ = try sleeper.wait()
            let run = try TestTools.run("ld-chpox", ["--store", store, "--name", "detached"])
            #expect(run.status == 0, "\(run.errors)")
            let pid = try #require(Int32(run.output.trimmingCharacters(in: .whitespacesAndNewlines)))
            defer { kill(pid, SIGKILL) }
            // ld-chpox has exited; the process lives on, another's child now.
            #expect(ProcFS.link(pid, "exe")?.hasSuffix("sleep") == true)
            let parent = try ProcFS.status(pid)["PPid"].flatMap { Int32($0) }
            #expect(parent != nil)
            #expect(parent != getpid())
            #expect(try ProcFS.state(pid) == "S")
        }

        @Test func badInputIsRefusedBeforeAnythingStarts() throws {
            let directory = try Self.scratch("bad")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            // A copy of the program, checkpointed, then removed: its file is gone.
            let copy = directory + "/program"
            try FileManager.default.copyItem(atPath: TestTools.path("chpox-stack-workload"), toPath: copy)
            let original = try WorkloadProcess(executable: copy, arguments: [])
            #expect(try original.line() == "waiting 21 0")
            try Self.checkpoint(original.pid, store: store, name: "gone")
            // While the original runs, its pid is taken.
            var run = try TestTools.run("ld-chpox", ["--store", store, "--name", "gone", "--require-same-pid"])
            #expect(run.status != 0, "\(run.errors)")
            #expect(run.errors.contains("pid \(original.pid) cannot be had"), "\(run.errors)")
            Self.end(original)
            try FileManager.default.removeItem(atPath: copy)
            let before = Self.processes()
            run = try TestTools.run("ld-chpox", ["--store", store, "--name", "gone"])
            #expect(run.status != 0, "\(run.errors)")
            #expect(run.errors.contains("no longer exists"), "\(run.errors)")
            #expect(run.errors.contains(copy), "\(run.errors)")
            run = try TestTools.run("ld-chpox", ["--store", store, "--name", "gone", "--check"])
            #expect(run.status != 0, "\(run.errors)")
            #expect(run.errors.contains("no longer exists"), "\(run.errors)")
            #expect(Self.started(since: before, running: ["chpox-restore-stub"]).isEmpty, "no stub left behind")
        }
    }
}
