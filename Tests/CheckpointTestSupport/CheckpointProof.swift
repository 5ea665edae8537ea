#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Incremental
import SoftDirty
import Store
import Syscall
import TrackerTestSupport

/// The checkpointer's proof on a live process, as the host tests and the QEMU guests run it:
/// the churn workload (Tests/ChurnWorkload: threads, malloc/free, mmap/munmap/mremap,
/// DONTNEED, signals, FPU/AVX registers, a file being written) runs while generations are
/// taken at random instants. For every generation, the page map the store rebuilds must equal
/// a full read taken during that generation's own final stop, and the image must hold the
/// threads, descriptor offsets and signal state seen then; the workload's self-check must pass
/// throughout. Returns every failure found (empty: proven).
public enum CheckpointProof {
    public struct Outcome: Sendable, CustomStringConvertible {
        public var tracker: String
        public var generations = 0
        public var trackers: Set<String> = []
        public var pagesCopied: UInt64 = 0
        public var failures: [String] = []
        public var description: String {
            "\(tracker): \(generations) generations, \(pagesCopied) pages copied, trackers \(trackers.sorted()), "
                + (failures.isEmpty
                    ? "every generation equals its reference"
                    : "\(failures.count) failures: \(failures.prefix(3).joined(separator: "; "))")
        }
    }

    public static func run(
        _ kind: TrackerKind, churnPath: String, directory: String, generations: Int, newRunAt: Int?,
        preCopy: Bool, megabytes: Int = 24, threads: Int = 4, paceMicroseconds: Int = 20_000,
        seed: UInt64
    ) throws -> Outcome {
        var outcome = Outcome(tracker: kind.rawValue)
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let workload = try WorkloadProcess(
            executable: churnPath,
            arguments: [
                "--megabytes", "\(megabytes)", "--threads", "\(threads)", "--file",
                directory + "/records", "--seed", "\(seed)",
                "--pace", "\(paceMicroseconds)",
            ])
        let ready = try workload.line()
        guard ready.hasPrefix("ready") else { throw WorkloadProcess.WorkloadError.unexpected(ready) }
        let store = try Store(at: directory + "/store", create: true)
        final class Taken: @unchecked Sendable {
            var references: [UInt64: CheckpointReference] = [:]; var failures: [String] = []
        }
        let taken = Taken()
        func start() throws -> Checkpointer {
            var options = Checkpointer.Options(chain: "proof", tracker: kind)
            options.preCopy = preCopy
            let checkpointer = try Checkpointer(pid: workload.pid, store: store, options: options)
            checkpointer.observeFrozen = { frozen, generation in
                do { taken.references[generation] = try CheckpointReference(frozen) } catch {
                    taken.failures.append("reference of generation \(generation): \(error)")
                }
            }
            return checkpointer
        }
        var checkpointer = try start()
        var state = seed | 1
        for index in 0..<generations {
            if index == newRunAt {
                checkpointer.stop()  // a later cpx run: no tracker history, the chain continues
                checkpointer = try start()
            }
            let generation = try checkpointer.checkpoint()
            outcome.generations += 1
            outcome.trackers.insert(generation.tracker)
            outcome.pagesCopied += generation.copiedPages
            if generation.generation != UInt64(index) {
                outcome.failures.append("generation \(index) numbered \(generation.generation)")
            }
            state = state &* 6364136223846793005 &+ 1442695040888963407
            usleep(UInt32(10_000 + (state >> 33) % 70_000))
            if index % 10 == 9 {
                let answer = try workload.send("check")
                if !answer.hasPrefix("ok") {
                    outcome.failures.append("self-check after generation \(index): \(answer)")
                }
            }
        }
        checkpointer.stop()
        outcome.failures += taken.failures
        if !outcome.trackers.contains(kind.rawValue) {
            outcome.failures.append("tracker \(kind.rawValue) never used: \(outcome.trackers)")
        }
        if newRunAt != nil && !outcome.trackers.contains("hash (chain)") {
            outcome.failures.append("the new run did not compare with the chain")
        }

        for index in 0..<generations {
            let generation = UInt64(index)
            guard let reference = taken.references[generation] else { continue }
            let differences = reference.differences(from: try store.pageMap(chain: "proof", generation: generation))
            if !differences.isEmpty {
                outcome.failures.append("generation \(index): \(differences.joined(separator: "; "))")
            }
            let image = try ProcessImage(
                decoding: try store.manifest(chain: "proof", generation: generation).metadata, generation: generation)
            func require(_ ok: Bool, _ what: String) {
                if !ok { outcome.failures.append("generation \(index): \(what)") }
            }
            require(
                image.threads.map(\.state.tid) == reference.threads,
                "threads \(image.threads.map(\.state.tid)) vs \(reference.threads)")
            require(
                image.threads.allSatisfy {
                    $0.clearAddress != nil && $0.state.xstate.count >= 512 && $0.state.instructionPointer != 0
                },
                "thread state incomplete")
            for descriptor in image.descriptors where descriptor.kind == .file {
                require(descriptor.offset == reference.offsets[descriptor.fd], "offset of fd \(descriptor.fd)")
            }
            require(
                image.descriptors.contains { $0.kind == .file && $0.target.hasSuffix("/records") }, "the records file")
            require(image.signalActions.contains { $0.signal == SIGALRM && $0.handler > 1 }, "SIGALRM's handler")
            require(
                image.threads.first.map { $0.state.signalMask & (1 << UInt64(SIGUSR1 - 1)) != 0 } ?? false,
                "SIGUSR1 blocked")
            require(
                image.capture.pauseNanoseconds > 0
                    && image.capture.totalPauseNanoseconds >= image.capture.pauseNanoseconds, "pause recorded")
            require(
                image.mappings.contains { $0.backing == .stack } && image.mappings.contains { $0.backing == .vdso },
                "stack and vdso mapped")
        }
        let verified = try store.verify(deep: true)
        if !verified.isClean { outcome.failures.append("deep verify: \(verified.problems)") }
        let answer = try workload.send("check")
        if !answer.hasPrefix("ok") { outcome.failures.append("final self-check: \(answer)") }
        if try workload.quit("quit") != .exited(0) { outcome.failures.append("the workload did not exit cleanly") }
        return outcome
    }
}
