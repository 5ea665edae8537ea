import Foundation
import Incremental
import Syscall
import StoreTestSupport
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// The checkpointer proven on real processes: the C churn workload (threads, malloc/free,
    /// mmap/munmap/mremap, DONTNEED, signals, FPU/AVX registers, a file being written) runs
    /// while generations are taken at random instants. For every generation, the page map the
    /// store rebuilds equals a full read taken during that generation's own stop, and the image
    /// holds its threads, descriptor offsets and signal state; the workload's self-check passes
    /// throughout.
    @Suite struct CheckpointProofTests {
        final class References: @unchecked Sendable {
            var taken: [UInt64: CheckpointReference] = [:]
            var failures: [String] = []
        }

        static func prove(_ kind: TrackerKind, preCopy: Bool, generations: Int, newRunAt: Int?, seed: UInt64) throws {
            let directory = NSTemporaryDirectory() + "chpox-proof-\(getpid())-\(kind.rawValue)-\(seed)"
            try? FileManager.default.removeItem(atPath: directory)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let workload = try WorkloadProcess(executable: Tools.path("chpox-churn-workload"),
                                               arguments: ["--megabytes", "24", "--threads", "4", "--file", directory + "/records", "--seed", "\(seed)", "--pace", "20000"])
            let ready = try workload.line()
            #expect(ready.hasPrefix("ready"), "workload: \(ready)")
            let store = try Store(at: directory + "/store", create: true)
            let references = References()
            func start() throws -> Checkpointer {
                var options = Checkpointer.Options(chain: "proof", tracker: kind)
                options.preCopy = preCopy
                let checkpointer = try Checkpointer(pid: workload.pid, store: store, options: options)
                checkpointer.observeFrozen = { frozen, generation in
                    do { references.taken[generation] = try CheckpointReference(frozen) } catch {
                        references.failures.append("reference of generation \(generation): \(error)")
                    }
                }
                return checkpointer
            }
            var checkpointer = try start()
            var rng = SplitMix(seed)
            var trackers: Set<String> = []
            for index in 0..<generations {
                if index == newRunAt {
                    // A later cpx run: no tracker history, the chain continues.
                    checkpointer.stop()
                    checkpointer = try start()
                }
                let generation = try checkpointer.checkpoint()
                #expect(generation.generation == UInt64(index))
                #expect(generation.kind == (index == 0 ? "full" : "delta"))
                trackers.insert(generation.tracker)
                usleep(UInt32(10_000 + rng.next() % 70_000))
                if index % 10 == 9 { #expect(try workload.send("check").hasPrefix("ok"), "self-check after generation \(index)") }
            }
            checkpointer.stop()
            #expect(references.failures.isEmpty, "\(references.failures)")
            #expect(trackers.contains(kind.rawValue))
            if newRunAt != nil { #expect(trackers.contains("hash (chain)")) }

            for index in 0..<generations {
                let generation = UInt64(index)
                let reference = try #require(references.taken[generation])
                let map = try store.pageMap(chain: "proof", generation: generation)
                let differences = reference.differences(from: map)
                #expect(differences.isEmpty, "generation \(index): \(differences.joined(separator: "; "))")
                let manifest = try store.manifest(chain: "proof", generation: generation)
                let image = try ProcessImage(decoding: manifest.metadata, generation: generation)
                #expect(image.threads.map(\.state.tid) == reference.threads, "generation \(index): threads")
                #expect(image.threads.allSatisfy { $0.clearAddress != nil && $0.state.xstate.count >= 832 && $0.state.instructionPointer != 0 })
                for descriptor in image.descriptors where descriptor.kind == .file {
                    #expect(descriptor.offset == reference.offsets[descriptor.fd], "generation \(index): offset of fd \(descriptor.fd)")
                }
                #expect(image.descriptors.contains { $0.kind == .file && $0.target.hasSuffix("/records") })
                #expect(image.signalActions.contains { $0.signal == SIGALRM && $0.handler > 1 }, "SIGALRM's handler")
                #expect(image.threads[0].state.signalMask & (1 << UInt64(SIGUSR1 - 1)) != 0, "SIGUSR1 blocked in the main thread")
                #expect(image.capture.pauseNanoseconds > 0 && image.capture.totalPauseNanoseconds >= image.capture.pauseNanoseconds)
                #expect(image.mappings.contains { $0.backing == .stack } && image.mappings.contains { $0.backing == .vdso })
            }
            let verified = try store.verify(deep: true)
            #expect(verified.isClean, "\(verified.problems)")
            #expect(try workload.send("check").hasPrefix("ok"))
            #expect(try workload.quit("quit") == .exited(0))
        }

        @Test(.enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"), .timeLimit(.minutes(5)))
        func uffdWriteProtectWithPreCopy() throws {
            try Self.prove(.uffdWP, preCopy: true, generations: 32, newRunAt: 16, seed: 41)
        }

        @Test(.enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"), .timeLimit(.minutes(5)))
        func uffdWriteProtectStopAndCopy() throws {
            try Self.prove(.uffdWP, preCopy: false, generations: 30, newRunAt: nil, seed: 42)
        }

        @Test(.timeLimit(.minutes(5))) func hashTracker() throws {
            try Self.prove(.hash, preCopy: true, generations: 30, newRunAt: 20, seed: 43)
        }
    }
}
