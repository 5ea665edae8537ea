import CheckpointTestSupport
import Foundation
import Incremental
import TestTools
import Testing
import SoftDirty

extension LiveProcess {
    /// The checkpointer proven on a real process, for each tracker this kernel has (see
    /// `CheckpointProof`; the QEMU guests run it with soft-dirty): every generation's rebuilt
    /// page map equals a full read in that generation's own stop.
    @Suite struct CheckpointProofTests {
        static func prove(_ kind: TrackerKind, preCopy: Bool, generations: Int, newRunAt: Int?, seed: UInt64) throws {
            let outcome = try CheckpointProof.run(
                kind, churnPath: TestTools.path("chpox-churn-workload"),
                directory: NSTemporaryDirectory() + "chpox-proof-\(getpid())-\(seed)",
                generations: generations, newRunAt: newRunAt, preCopy: preCopy, seed: seed)
            #expect(outcome.generations == generations)
            #expect(outcome.failures.isEmpty, "\(outcome.failures.joined(separator: "\n"))")
        }

        @Test(
            .enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"),
            .timeLimit(.minutes(5)))
        func uffdWriteProtectWithPreCopy() throws {
            try Self.prove(.uffdWP, preCopy: true, generations: 32, newRunAt: 16, seed: 41)
        }

        @Test(
            .enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"),
            .timeLimit(.minutes(5)))
        func uffdWriteProtectStopAndCopy() throws {
            try Self.prove(.uffdWP, preCopy: false, generations: 30, newRunAt: nil, seed: 42)
        }

        @Test(.timeLimit(.minutes(5))) func hashTracker() throws {
            try Self.prove(.hash, preCopy: true, generations: 30, newRunAt: 20, seed: 43)
        }
    }
}
