import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// A process that ran in other control groups than ld-chpox's is not restarted in
    /// ld-chpox's silently: root restarting a root store's image moves it back into its groups;
    /// a group with controllers that is gone is refused (its limits are not saved); with
    /// --other-cgroups it restarts in ld-chpox's, with a notice.
    @Suite struct ControlGroupTests {
        /// A new control group of a hierarchy root may write, and its cgroup.procs.
        static func makeGroup() -> String? {
            guard getuid() == 0 else { return nil }
            for hierarchy in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"] {
                let group = "\(hierarchy)/chpox-test-\(getpid())"
                try? FileManager.default.removeItem(atPath: group)
                if mkdir(group, 0o755) == 0 {
                    if FileManager.default.fileExists(atPath: group + "/cgroup.procs") { return group }
                    rmdir(group)
                }
            }
            return nil
        }

        @Test(.enabled(if: getuid() == 0, "needs root to make a control group"), .timeLimit(.minutes(2)))
        func aProcessInAnotherControlGroupIsMovedBackOrRefusedWhenItIsGone() throws {
            let group = try #require(Self.makeGroup(), "no writable cgroup hierarchy")
            defer { rmdir(group) }
            let directory = try RestartTests.scratch("cgroup")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import sys
                    print("ready", flush=True)
                    for line in sys.stdin:
                        print("in", "chpox-test" in open("/proc/self/cgroup").read(), flush=True)
                    """,
                ])
            #expect(try original.line() == "ready")
            // cgroupfs takes a write of the pid (no temporary file renamed into place).
            let procs = open(group + "/cgroup.procs", O_WRONLY)
            #expect(procs >= 0)
            #expect(write(procs, "\(original.pid)", "\(original.pid)".utf8.count) > 0)
            close(procs)
            #expect(try original.send("where") == "in True")
            try RestartTests.checkpoint(original.pid, store: store, name: "cg")
            RestartTests.end(original)
            usleep(200_000)

            let moved = try RestartTests.restart(store: store, name: "cg", generation: 0)
            #expect(try moved.send("where") == "in True")
            // ld-chpox --wait's child is the restarted process: ended, then reaped by ld-chpox.
            if let restarted = RestartTests.child(of: moved.pid) { kill(restarted, SIGKILL) }
            _ = try? moved.child.wait()

            // Its group gone: a group of a hierarchy with controllers is not made again. (The
            // killed process leaves it once it is reaped: EBUSY until then.)
            let deadline = Date().addingTimeInterval(20)
            while rmdir(group) != 0 && Date() < deadline { usleep(50_000) }
            #expect(!FileManager.default.fileExists(atPath: group))
            let refused = try TestTools.run("ld-chpox", ["--store", store, "--name", "cg"])
            #expect(refused.status == 1, "\(refused.errors)")
            #expect(refused.errors.contains("it ran in control groups"), "\(refused.errors)")
            #expect(refused.errors.contains("chpox-test-\(getpid()) no longer exists"), "\(refused.errors)")
            let check = try TestTools.run("ld-chpox", ["--store", store, "--name", "cg", "--check"])
            #expect(check.status == 1 && check.errors.contains("--other-cgroups"), "\(check.errors)")

            let accepted = try RestartTests.restart(store: store, name: "cg", generation: 0, extra: ["--other-cgroups"])
            #expect(try accepted.send("where") == "in False")
            RestartTests.end(accepted)
        }

        /// A process that moves itself into `procs` (a control group's cgroup.procs, or its v1
        /// `tasks`: the main thread alone) and starts a thread that moves itself into `tasks`.
        /// Each line it reads, it answers with the path of its main thread's group and its
        /// thread's in the hierarchy whose controllers field is `controllers` ("" for v2).
        static let threadProgram = """
            import os, queue, sys, threading
            procs, tasks, controllers = sys.argv[1:4]
            def group():
                lines = open('/proc/thread-self/cgroup').read().splitlines()
                return [l.split(':', 2)[2] for l in lines if l.split(':')[1] == controllers][0]
            open(procs, 'w').write(str(os.getpid()))
            asks, answers = queue.Queue(), queue.Queue()
            def worker():
                open(tasks, 'w').write(str(threading.get_native_id()))
                answers.put(threading.get_native_id())
                while True:
                    asks.get()
                    answers.put(group())
            threading.Thread(target=worker, daemon=True).start()
            print('ready', answers.get(), flush=True)
            for _ in sys.stdin:
                asks.put(1)
                print(group(), answers.get(), flush=True)
            """

        /// Runs `threadProgram` with `procs` and `tasks`, checkpoints it and kills it, runs
        /// `between` (a cleanup), restarts it and returns what it answers before and after, and
        /// what /proc says of its thread's groups after.
        static func restartThreadProgram(
            _ name: String, procs: String, tasks: String, controllers: String, between: () -> Void
        ) throws -> (before: String, after: String, proc: String) {
            let directory = try RestartTests.scratch(name)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", threadProgram, procs, tasks, controllers])
            _ = try original.line()
            let before = try original.send("where")
            try RestartTests.checkpoint(original.pid, store: store, name: "threads")
            RestartTests.end(original)
            between()
            let restarted = try RestartTests.restart(store: store, name: "threads", generation: 0)
            let after = try restarted.send("where")
            let pid = try #require(RestartTests.child(of: restarted.pid))
            defer {
                kill(pid, SIGKILL)
                _ = try? restarted.child.wait()
            }
            let thread = try #require(
                try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").first { $0 != "\(pid)" })
            let proc = try String(contentsOfFile: "/proc/\(pid)/task/\(thread)/cgroup", encoding: .utf8)
            return (before, after, proc)
        }

        /// cgroup v1: a thread in a group below its process's (of a named hierarchy, whose groups
        /// a cleanup removed before the restart) is moved there again, alone (`tasks`).
        @Test(.enabled(if: getuid() == 0, "needs root to mount a cgroup hierarchy"), .timeLimit(.minutes(2)))
        func aThreadInAnotherV1ControlGroupThanItsProcessIsMovedBackAlone() throws {
            // Not "chpox-test...": the hierarchy shows in every process's /proc/self/cgroup.
            let name = "chpox-threads-\(getpid())"
            let mountPoint = try RestartTests.scratch("cgroup-v1-mount")
            try #require(
                mount("none", mountPoint, "cgroup", 0, "none,name=\(name)") == 0,
                "cannot mount a named cgroup v1 hierarchy: errno \(errno)")
            defer {
                // A hierarchy unmounted with groups in it (removed ones too, until the kernel has
                // released them) lives on unmounted, in every process's /proc/self/cgroup: emptied,
                // then unmounted until it is gone.
                let deadline = Date().addingTimeInterval(20)
                while rmdir(mountPoint + "/a/b") != 0 && errno != ENOENT && Date() < deadline { usleep(50_000) }
                while rmdir(mountPoint + "/a") != 0 && errno != ENOENT && Date() < deadline { usleep(50_000) }
                func gone() -> Bool {  // the kernel destroys it a moment after the unmount
                    for _ in 0..<40 {
                        let lines = (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? ""
                        if !lines.contains(":name=\(name):") { return true }
                        usleep(50_000)
                    }
                    return false
                }
                umount(mountPoint)
                for _ in 0..<5 where !gone() {
                    guard mount("none", mountPoint, "cgroup", 0, "none,name=\(name)") == 0 else { break }
                    umount(mountPoint)
                }
                try? FileManager.default.removeItem(atPath: mountPoint)
            }
            #expect(mkdir(mountPoint + "/a", 0o755) == 0)
            #expect(mkdir(mountPoint + "/a/b", 0o755) == 0)
            let seen = try Self.restartThreadProgram(
                "cgroup-v1-threads", procs: mountPoint + "/a/tasks", tasks: mountPoint + "/a/b/tasks",
                controllers: "name=\(name)"
            ) {
                // The killed process leaves its groups once reaped; then the cleanup removes them.
                let deadline = Date().addingTimeInterval(20)
                while rmdir(mountPoint + "/a/b") != 0 && Date() < deadline { usleep(50_000) }
                while rmdir(mountPoint + "/a") != 0 && Date() < deadline { usleep(50_000) }
            }
            #expect(seen.before == "/a /a/b")
            #expect(seen.after == "/a /a/b")
            #expect(seen.proc.contains(":name=\(name):/a/b\n"), "\(seen.proc)")
        }

        /// cgroup v2: a thread in another group of a threaded subtree than its process is moved
        /// there again (`cgroup.threads`).
        @Test(.enabled(if: getuid() == 0, "needs root to make a control group"), .timeLimit(.minutes(2)))
        func aThreadInAnotherV2ThreadedGroupThanItsProcessIsMovedBack() throws {
            let hierarchy = try #require(
                ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].first {
                    FileManager.default.fileExists(atPath: $0 + "/cgroup.threads")
                }, "no cgroup v2 hierarchy")
            let path = "/chpox-test-\(getpid())"
            #expect(mkdir(hierarchy + path, 0o755) == 0)
            defer {
                let deadline = Date().addingTimeInterval(20)
                for group in ["/a", "/b", ""] {
                    while rmdir(hierarchy + path + group) != 0 && errno != ENOENT && Date() < deadline {
                        usleep(50_000)
                    }
                }
            }
            for group in ["/a", "/b"] {
                #expect(mkdir(hierarchy + path + group, 0o755) == 0)
                let type = open(hierarchy + path + group + "/cgroup.type", O_WRONLY)
                #expect(write(type, "threaded", 8) == 8)
                close(type)
            }
            let seen = try Self.restartThreadProgram(
                "cgroup-v2-threads", procs: hierarchy + path + "/a/cgroup.procs",
                tasks: hierarchy + path + "/b/cgroup.threads", controllers: ""
            ) {}
            #expect(seen.before == "\(path)/a \(path)/b")
            #expect(seen.after == "\(path)/a \(path)/b")
            #expect(seen.proc.contains("0::\(path)/b\n"), "\(seen.proc)")
        }
    }
}
