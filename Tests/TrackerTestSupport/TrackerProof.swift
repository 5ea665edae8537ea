import CXXHash
import SoftDirty
import Tracee

/// The proof every tracker must pass: after each round of the workload, with the process
/// frozen, the tracker's dirty set is held against ground truth, a full read of every tracked
/// page compared with the previous full read. Zero missed pages; false positives are counted.
public struct TrackerProof {
    public struct Outcome: Sendable, CustomStringConvertible {
        public var tracker: String
        public var rounds = 0
        /// Pages that changed (or appeared) between collects, in all rounds.
        public var changedPages = 0
        /// Pages the tracker reported, in all rounds.
        public var reportedPages = 0
        /// Changed pages the tracker did not report: must be zero.
        public var missedPages = 0
        public var firstMiss: String?
        public var falsePositivePages: Int { reportedPages - (changedPages - missedPages) }
        public var falsePositiveRate: Double {
            reportedPages == 0 ? 0 : Double(falsePositivePages) / Double(reportedPages)
        }

        public var description: String {
            "\(tracker): \(rounds) rounds, \(changedPages) pages changed, "
                + "\(reportedPages) reported, \(missedPages) missed"
                + ", false positives \(falsePositivePages) (\(Int(falsePositiveRate * 100))% of reported)"
                + (firstMiss.map { "; first miss: \($0)" } ?? "")
        }
    }

    /// Reads every page of `regions` (a page that cannot be read reads as zero), 1 MiB at a
    /// time, and hands each to `visit` with its address: the ground truth of the proofs.
    public static func forEachPage(
        of regions: [MemoryRegion], pid: Int32, _ visit: (UInt64, UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let memory = ProcessMemory(pid: pid)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        for region in regions {
            var address = region.start
            while address < region.end {
                let length = Int(min(region.end - address, UInt64(buffer.count)))
                let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
                chunk.initializeMemory(as: UInt8.self, repeating: 0)
                _ = try memory.read(from: address, into: chunk)
                for offset in stride(from: 0, to: length, by: 4096) {
                    try visit(
                        address + UInt64(offset), UnsafeRawBufferPointer(rebasing: chunk[offset..<(offset + 4096)]))
                }
                address += UInt64(length)
            }
        }
    }

    /// Full-read snapshot: page address -> XXH3-128 of its contents (absent pages: zero).
    typealias Snapshot = [UInt64: XXH128_hash_t]

    static func read(_ regions: [MemoryRegion], pid: Int32) throws -> Snapshot {
        var snapshot: Snapshot = [:]
        try Self.forEachPage(of: regions, pid: pid) { address, page in
            snapshot[address] = XXH3_128bits(page.baseAddress!, 4096)
        }
        return snapshot
    }

    /// Runs `rounds` rounds of the workload at `workloadPath` under tracker `kind`.
    public static func run(
        _ kind: TrackerKind, workloadPath: String, rounds: Int, seed: UInt64,
        log: (String) -> Void = { _ in }
    ) throws -> Outcome {
        try run(
            kind.rawValue, start: { pid in try TrackerSelection.start(kind, pid: pid) }, workloadPath: workloadPath,
            rounds: rounds, seed: seed, log: log)
    }

    /// Runs the proof with the tracker `start` makes for the workload's pid.
    public static func run(
        _ label: String, start: (Int32) throws -> any DirtyTracker, workloadPath: String, rounds: Int, seed: UInt64,
        log: (String) -> Void = { _ in }
    ) throws -> Outcome {
        let workload = try DirtyWorkloadProcess(executable: workloadPath, seed: seed)
        var outcome = Outcome(tracker: label)
        var tracker: (any DirtyTracker)?
        var previous: Snapshot = [:]
        defer { tracker?.stop() }
        for round in 0...rounds {
            if round > 0 { try workload.round(round) }
            if tracker == nil { tracker = try start(workload.pid) }
            let frozen = try FrozenProcess(pid: workload.pid)
            defer { frozen.thaw() }
            let report = try tracker!.collect(frozen)
            let truth = try read(report.regions, pid: workload.pid)
            if round > 0 {
                var changed = 0, missed = 0
                for (page, hash) in truth {
                    let before = previous[page]
                    if let before, before.high64 == hash.high64 && before.low64 == hash.low64 { continue }
                    changed += 1
                    if !report.dirty.contains(page: page) {
                        missed += 1
                        if outcome.firstMiss == nil {
                            let region = report.regions.first { $0.start <= page && page < $0.end }
                            let place = region.map(String.init(describing:)) ?? "?"
                            let suffix = before == nil ? " (new)" : ""
                            outcome.firstMiss = "round \(round), page \(String(page, radix: 16)) in \(place)\(suffix)"
                        }
                    }
                }
                outcome.rounds += 1
                outcome.changedPages += changed
                outcome.missedPages += missed
                outcome.reportedPages += Int(report.dirty.pageCount)
                log("round \(round): \(changed) changed, \(report.dirty.pageCount) reported, \(missed) missed")
            }
            previous = truth
        }
        let check = try workload.selfCheck()
        guard check == "selfcheck ok" else { throw DirtyWorkloadProcess.WorkloadError.unexpected(check) }
        return outcome
    }
}
