import Foundation
import SoftDirty
import Syscall
import Tracee
import TrackerTestSupport
import Testing

/// The tracker is killed with SIGKILL at random instants while it collects; the target must
/// run on with its memory intact (its own self-check) and its descriptor table as before.
@Suite(.serialized) struct KillTests {
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
            let tracker = try ChildProcess.spawn(Tools.path("chpox-tracker-proof"), ["collect-loop", "\(workload.pid)", kind.rawValue], stdout: output)
            output.close()
            defer { try? FileManager.default.removeItem(atPath: log) }
            var waited = 0
            while !((try? String(contentsOfFile: log, encoding: .utf8))?.contains("collected 1") ?? false) && waited < 2000 {
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
            #expect(now == descriptors, "descriptor table after kill \(instant): \(now.map { "\($0) -> \(ProcFS.descriptorTarget(workload.pid, $0) ?? "?")" }), was \(descriptors)")
            let state = try ProcFS.state(workload.pid)
            #expect(state != "t" && state != "T", "the target must not stay stopped (state \(state))")
        }
        #expect(try workload.quit() == .exited(0))
    }

    @Test(.enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"), .timeLimit(.minutes(5)))
    func killingTheUffdTrackerLeavesTheTargetWhole() throws {
        try Self.kill(tracker: .uffdWP, instants: 25, seed: 31)
    }

    @Test(.timeLimit(.minutes(5))) func killingTheHashTrackerLeavesTheTargetWhole() throws {
        try Self.kill(tracker: .hash, instants: 20, seed: 32)
    }
}
