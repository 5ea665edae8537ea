import Foundation
import SoftDirty
import Syscall
import Tracee
import TrackerTestSupport
import TestTools
import Testing

typealias Tools = TestTools

let probe = TrackerProbe()

extension LiveProcess {
    /// Trackers proven on the host kernel. Tests that ptrace are serialized.
    @Suite struct TrackerProofTests {
        @Test func probeTellsTheTruthAboutThisKernel() throws {
            let config = (try? String(contentsOfFile: "/proc/config.gz")) ?? ""
            _ = config
            // The hash tracker needs nothing; its probe always passes.
            #expect(probe.result(.hash).supported)
            // On a kernel without soft-dirty, the probe must say so rather than trust clear_refs.
            let softDirty = probe.result(.softDirty)
            if !softDirty.supported {
                #expect(softDirty.detail.contains("unsupported by this kernel (CONFIG_MEM_SOFT_DIRTY is off"))
            }
            #expect(probe.best == probe.results.first { $0.supported }!.kind)
        }

        @Test(.enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"),
              .timeLimit(.minutes(5)))
        func uffdWriteProtectMissesNothing() throws {
            let outcome = try TrackerProof.run(.uffdWP, workloadPath: Tools.path("chpox-dirty-workload"), rounds: 60, seed: 11)
            print("PROOF \(outcome)")
            #expect(outcome.rounds == 60)
            #expect(outcome.missedPages == 0, "\(outcome)")
            #expect(outcome.changedPages > 1000)
        }

        @Test(.timeLimit(.minutes(5))) func hashMissesNothing() throws {
            let outcome = try TrackerProof.run(.hash, workloadPath: Tools.path("chpox-dirty-workload"), rounds: 50, seed: 12)
            print("PROOF \(outcome)")
            #expect(outcome.missedPages == 0, "\(outcome)")
            #expect(outcome.changedPages > 1000)
        }

        @Test(.enabled(if: probe.result(.softDirty).supported, "this kernel has no soft-dirty bits (proven in the QEMU guests instead)"),
              .timeLimit(.minutes(5)))
        func softDirtyMissesNothing() throws {
            let outcome = try TrackerProof.run(.softDirty, workloadPath: Tools.path("chpox-dirty-workload"), rounds: 50, seed: 13)
            #expect(outcome.missedPages == 0, "\(outcome)")
        }

        @Test func forcingAnUnsupportedTrackerSaysWhy() throws {
            let unsupported = probe.results.filter { !$0.supported }
            let workload = try DirtyWorkloadProcess(executable: Tools.path("chpox-dirty-workload"), seed: 1)
            for result in unsupported {
                #expect(throws: TraceeError.self) { _ = try TrackerSelection.start(result.kind, pid: workload.pid) }
            }
        }
    }
}
