import Foundation
import SoftDirty
import Syscall
import Tracee
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// The tracker is killed with SIGKILL at random instants while it collects; the target must
    /// run on with its memory intact (its own self-check) and its descriptor table as before.
    @Suite struct KillTests {
        static func kill(tracker kind: TrackerKind, instants: Int, seed: UInt64) throws {
            let workload = try DirtyWorkloadProcess(executable: Tools.path("chpox-dirty-workload"), seed: seed)
            // Once it has answered, its start-up (the dynamic loader opening libraries) is over.
            try workload.round(0)
            let descriptors = try ProcFS.descriptors(workload.pid)
            var rng = SystemRandomNumberGenerator()
            for instant in 0..<instants {
                try workload.round(instant + 1)
                // The tracker logs each collect to a file; the kill lands once it is collecting.
                let log = NSTemporaryDirectory() + "chpox-kill-\(workload.pid)-\(instant).log"
                let output = try FileDescriptor.open(log, [.writeOnly, .create, .truncate])
                let tracker = try ChildProcess.spawn(
                    Tools.path("chpox-tracker-proof"), ["collect-loop", "\(workload.pid)", kind.rawValue],
                    stdout: output)
                output.close()
                defer { try? FileManager.default.removeItem(atPath: log) }
                var waited = 0
                while !((try? String(contentsOfFile: log, encoding: .utf8))?.contains("collected 1") ?? false)
                    && waited < 2000
                {
                    usleep(1000)
                    waited += 1
                }
                #expect(waited < 2000, "the tracker never collected")
                usleep(UInt32.random(in: 0...30_000, using: &rng))
                try tracker.send(SIGKILL)
                #expect(try tracker.wait() == .signalled(SIGKILL))
                // The target was left running: it answers, and nothing of ours stays in it.
                try workload.round(1000 + instant)
                #expect(try workload.selfCheck() == "selfcheck ok", "after kill \(instant)")
                let now = try ProcFS.descriptors(workload.pid)
                #expect(
                    now == descriptors,
                    """
                    descriptor table after kill \(instant): \
                    \(now.map { "\($0) -> \(ProcFS.descriptorTarget(workload.pid, $0) ?? "?")" }), was \(descriptors)
                    """
                )
                let state = try ProcFS.state(workload.pid)
                #expect(!["t", "T"].contains(state), "the target must not stay stopped (state \(state))")
            }
            #expect(try workload.quit() == .exited(0))
        }

        @Test(
            .enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"),
            .timeLimit(.minutes(5)))
        func killingTheUffdTrackerLeavesTheTargetWhole() throws {
            try Self.kill(tracker: .uffdWP, instants: 25, seed: 31)
        }

        @Test(.timeLimit(.minutes(5))) func killingTheHashTrackerLeavesTheTargetWhole() throws {
            try Self.kill(tracker: .hash, instants: 20, seed: 32)
        }
    }
}

extension LiveProcess {
    /// uffd-wp tracking ends cleanly: once the tracker stops or dies, no range of the target is
    /// registered with a userfaultfd any more, and its descriptor table never changed.
    @Suite struct TrackingEndsTests {
        static func registeredPages(_ pid: Int32) throws -> UInt64 {
            let pagemap = try Pagemap(pid: pid)
            var pages: UInt64 = 0
            for region in try MemoryRegion.of(pid) where !region.isSpecial {
                pages += try pagemap.scan(
                    start: region.start, end: region.end, required: .wpAllowed, returned: .wpAllowed
                )
                .reduce(0) { $0 + $1.pageCount }
            }
            return pages
        }

        @Test(.enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"))
        func stoppingOrDyingUnregistersEverything() throws {
            let workload = try DirtyWorkloadProcess(executable: Tools.path("chpox-dirty-workload"), seed: 41)
            try workload.round(0)
            let descriptors = try ProcFS.descriptors(workload.pid)
            #expect(try Self.registeredPages(workload.pid) == 0)

            // In this process: tracking survives thawing between collects, and stop() ends it.
            let tracker = try TrackerSelection.start(.uffdWP, pid: workload.pid)
            for round in 1...3 {
                let frozen = try FrozenProcess(pid: workload.pid)
                _ = try tracker.collect(frozen)
                frozen.thaw()
                #expect(try Self.registeredPages(workload.pid) > 4096, "registered after collect \(round)")
                try workload.round(round)
            }
            tracker.stop()
            #expect(try Self.registeredPages(workload.pid) == 0)
            #expect(try ProcFS.descriptors(workload.pid) == descriptors)

            // In a tracker process that is killed: the kernel unregisters everything.
            let log = NSTemporaryDirectory() + "chpox-ends-\(workload.pid).log"
            defer { try? FileManager.default.removeItem(atPath: log) }
            let output = try FileDescriptor.open(log, [.writeOnly, .create, .truncate])
            let child = try ChildProcess.spawn(
                Tools.path("chpox-tracker-proof"), ["collect-loop", "\(workload.pid)", "uffd-wp"], stdout: output)
            output.close()
            var waited = 0
            while !((try? String(contentsOfFile: log, encoding: .utf8))?.contains("collected 2") ?? false)
                && waited < 3000
            {
                usleep(1000)
                waited += 1
            }
            #expect(try Self.registeredPages(workload.pid) > 4096)
            try child.send(SIGKILL)
            _ = try child.wait()
            #expect(try Self.registeredPages(workload.pid) == 0)
            #expect(try ProcFS.descriptors(workload.pid) == descriptors)
            #expect(try workload.selfCheck() == "selfcheck ok")
        }
    }
}
