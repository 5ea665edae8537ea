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
    }
}
