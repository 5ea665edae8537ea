import CheckpointTestSupport
import Foundation
import Incremental
import SoftDirty
import Store
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// Whether a delta is copied while the process runs is decided on the pages written since
    /// the previous generation, read before it stops (not on how much the previous stop copied):
    /// a delta that wrote much is pre-copied, one that wrote little is taken in one stop. Each
    /// generation's page map must equal a full read in its own stop either way.
    @Suite struct DeltaPreCopyTests {
        /// Pages of the workload's main region written by one `w` command (each also writes its
        /// shadow copy: twice as many pages).
        static let largeWrite = 600
        static let smallWrite = 8
        /// Below the large delta's written pages, above the small one's.
        static let threshold: UInt64 = 256

        static func run(_ kind: TrackerKind) throws {
            let directory = NSTemporaryDirectory() + "chpox-delta-precopy-\(getpid())-\(kind.rawValue)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let workload = try WorkloadProcess(executable: TestTools.path("chpox-dirty-workload"), seed: 31)
            try workload.round(0)
            let store = try Store(at: directory + "/store", create: true)
            var options = Checkpointer.Options(chain: "precopy", tracker: kind)
            options.stopCopyPages = threshold
            let checkpointer = try Checkpointer(pid: workload.pid, store: store, options: options)
            defer { checkpointer.stop() }
            final class Taken: @unchecked Sendable { var references: [UInt64: CheckpointReference] = [:] }
            let taken = Taken()
            checkpointer.observeFrozen = { frozen, generation in
                taken.references[generation] = try? CheckpointReference(frozen)
            }
            _ = try checkpointer.checkpoint()  // the base: its final stop copies next to nothing

            func write(_ pages: Int, from first: Int) throws {
                #expect(
                    try workload.send("w " + (first..<(first + pages)).map(String.init).joined(separator: " ")) == "ok")
            }
            try write(largeWrite, from: 1)
            let large = try checkpointer.checkpoint()
            try write(smallWrite, from: 2000)
            let small = try checkpointer.checkpoint()
            #expect(try workload.selfCheck() == "selfcheck ok")

            // The large delta: pre-copied, and its stop copied only what was written meanwhile
            // (the workload is idle between commands).
            #expect(large.dirtyPages >= UInt64(2 * largeWrite))
            #expect(large.preCopyRounds >= 1)
            let largeImage = try image(store, large.generation)
            #expect(largeImage.capture.pagesCopiedWhileRunning >= UInt64(2 * largeWrite))
            #expect(largeImage.capture.pagesCopiedFrozen < threshold)
            // The small delta: one stop, as before.
            #expect(small.preCopyRounds == 0)
            #expect(try image(store, small.generation).capture.pagesCopiedWhileRunning == 0)

            for generation in [large.generation, small.generation] {
                let reference = try #require(taken.references[generation])
                let map = try store.pageMap(chain: "precopy", generation: generation)
                #expect(reference.differences(from: map).isEmpty, "generation \(generation)")
            }
        }

        static func image(_ store: Store, _ generation: UInt64) throws -> ProcessImage {
            try ProcessImage(
                decoding: try store.manifest(chain: "precopy", generation: generation).metadata,
                generation: generation)
        }

        @Test(
            .enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"),
            .timeLimit(.minutes(2)))
        func uffdWriteProtect() throws { try Self.run(.uffdWP) }

        @Test(
            .enabled(
                if: probe.result(.softDirty).supported, "this kernel has no soft-dirty bits (CONFIG_MEM_SOFT_DIRTY)"),
            .timeLimit(.minutes(2)))
        func softDirty() throws { try Self.run(.softDirty) }
    }
}
