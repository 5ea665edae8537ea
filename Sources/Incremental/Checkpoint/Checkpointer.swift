#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SoftDirty
import Store
import Syscall
import Tracee

/// Checkpoints one live process into a chain of the store: a full base, then deltas of only
/// the pages its tracker reports written. Data flows one way: process (Tracee) → tracker
/// (SoftDirty) → selection and image (here) → store.
///
/// A generation stops the process only to collect-and-reset its dirty pages, copy them out
/// and read its registers and /proc state; hashing, compression and writing happen after it
/// runs on. With a kernel tracker (uffd-wp, soft-dirty) and pre-copy, the bulk is copied while
/// the process runs and the final stop copies only what it wrote meanwhile, as live migration
/// does. Whatever fails, the process runs on unharmed and no half generation is published.
public final class Checkpointer {
    public struct Options: Sendable {
        public var chain: String
        /// nil: the best tracker this kernel supports.
        public var tracker: TrackerKind?
        /// Copy while the process runs before the final stop, where the tracker allows it.
        public var preCopy = true
        public var maxPreCopyRounds = 3
        /// Pre-copy stops once a round finds at most this many written pages (16 MiB), and
        /// a delta is pre-copied only when the previous stop copied more than this.
        public var stopCopyPages: UInt64 = 4096  // pages (16 MiB), not a page size
        /// Record descriptors a restart cannot recreate instead of refusing the process.
        public var skipUnsupported = false
        /// Extend the chain even when it belongs to another process, making this one the chain's
        /// lineage from now on (`cpx --adopt`).
        public var adopt = false

        public init(chain: String, tracker: TrackerKind? = nil) {
            self.chain = chain
            self.tracker = tracker
        }
    }

    /// What happens to the process after the generation is taken.
    public enum Finish: Sendable {
        case resume
        /// Stopped (SIGSTOP) before it runs another instruction: for migration.
        case leaveStopped
        /// Killed once the generation is committed: for migration.
        case kill
    }

    /// One committed generation, as `cpx` reports it.
    public struct Generation: Sendable, Codable {
        public var event = "generation"
        public var chain: String
        public var generation: UInt64
        public var manifest: String
        public var pid: Int32
        public var kind: String
        public var tracker: String
        public var dirtyPages: UInt64
        public var copiedPages: UInt64
        public var zeroPages: UInt64
        public var revertedPages: UInt64
        public var unmappedPages: UInt64
        public var newChunks: UInt64
        public var storedBytes: UInt64
        public var pauseMicroseconds: Int64
        public var totalPauseMicroseconds: Int64
        public var preCopyRounds: Int
        public var milliseconds: Int64
    }

    public let pid: Int32
    public let store: Store
    public let options: Options
    public private(set) var tracker: any DirtyTracker
    /// Generations this checkpointer committed.
    public private(set) var written = 0
    private var lastFrozenCopy: UInt64 = 0
    /// The chain, held for the whole run: no other writer interleaves generations with ours.
    private var claim: ChainClaim?
    /// What the first generation records in the chain's lineage before it commits.
    private var pendingLineage: (member: Lineage.Member, replacing: Bool)?

    /// Called during the final stop of every generation with the frozen process and the
    /// generation's number: tests take their reference read of memory here.
    public var observeFrozen: ((FrozenProcess, UInt64) -> Void)?

    /// Called as copied pages are stored: (generation, pages stored so far in this round,
    /// pages the round copies). For a progress line on long generations.
    public var progress: ((UInt64, UInt64, UInt64) -> Void)?

    /// Claims the chain for the run (refused at once when another writer holds it, or when the
    /// chain belongs to another process: `ChainOwnership`), then starts tracking `pid` (before it
    /// is ever stopped: uffd-wp's helper needs it free).
    public init(pid: Int32, store: Store, options: Options) throws(CheckpointError) {
        self.pid = pid
        self.store = store
        self.options = options
        guard Chain.isValidName(options.chain) else { throw .store(.invalidChainName(options.chain)) }
        do {
            let state = try ProcFS.state(pid)
            if state == "Z" || state == "X" { throw TraceeError.zombie(pid: pid) }
            let claim = try ChainClaim(store: store, chain: options.chain)
            pendingLineage = try ChainOwnership.admit(pid, to: claim, store: store, adopt: options.adopt)
            self.claim = claim
            // What a failed or killed writer left goes now, if no one else writes.
            _ = try? store.reclaimAbandonedWrites()
            tracker = try TrackerSelection.start(options.tracker, pid: pid)
        } catch let error as TraceeError {
            throw .process(error)
        } catch let error as CheckpointError {
            throw error
        } catch let error as StoreError {
            throw .store(error)
        } catch {
            throw .process(.unsupported(pid: pid, reason: "\(error)"))
        }
    }

    deinit { stop() }

    /// Ends tracking, and gives the chain up to other writers; the process keeps no trace of it.
    public func stop() {
        tracker.stop()
        claim?.release()
        claim = nil
    }

    /// Takes one generation.
    public func checkpoint(finish: Finish = .resume) throws(CheckpointError) -> Generation {
        let started = ClockTime.monotonic()
        let writer: GenerationWriter
        var baseline: PageMap?
        guard let claim else { preconditionFailure("checkpoint after stop") }
        do throws(StoreError) {
            writer = try claim.beginGeneration()
            // A run continuing a chain it did not start has no tracker history: its first
            // generation compares every page with the chain's newest (hash tracking
            // against the store).
            if written == 0, writer.kind == .delta, let head = try store.chain(options.chain).head {
                baseline = try store.pageMap(chain: options.chain, generation: head.generation)
            }
        } catch {
            throw .store(error)
        }
        var run = Run(writer: writer, baseline: baseline, pid: pid)
        do {
            let kernelTracker = tracker.kind != .hash
            if options.preCopy && kernelTracker && (written == 0 || lastFrozenCopy > options.stopCopyPages) {
                while run.rounds < options.maxPreCopyRounds {
                    let round = try preCopyRound(&run)
                    if round <= options.stopCopyPages { break }
                }
            }
            var image = try finalRound(&run, finish: finish)
            image.capture.tracker = run.baseline != nil ? "hash (chain)" : tracker.kind.rawValue
            let entry: Chain.Entry
            do {
                if let pending = pendingLineage {
                    var member = pending.member
                    member.generation = run.writer.generation
                    try claim.record(member, replacing: pending.replacing)
                    pendingLineage = nil
                }
                entry = try run.writer.commit(metadata: image.encoded())
            } catch {
                if finish != .resume { try? Signal.send(SIGCONT, to: pid) }  // never leave it stopped for nothing
                throw error
            }
            if finish == .kill { try? Signal.send(SIGKILL, to: pid) }
            written += 1
            lastFrozenCopy = run.frozenCopied
            let statistics = run.writer.currentStatistics
            return Generation(
                chain: options.chain, generation: entry.generation, manifest: entry.manifest.short, pid: pid,
                kind: entry.kind == .full ? "full" : "delta", tracker: image.capture.tracker,
                dirtyPages: run.dirty, copiedPages: run.runningCopied + run.frozenCopied, zeroPages: run.zeroed,
                revertedPages: run.reverted, unmappedPages: run.unmapped, newChunks: statistics.newChunks,
                storedBytes: statistics.storedBytes, pauseMicroseconds: image.capture.pauseNanoseconds / 1000,
                totalPauseMicroseconds: image.capture.totalPauseNanoseconds / 1000, preCopyRounds: run.rounds,
                milliseconds: (ClockTime.monotonic() - started) / 1_000_000)
        } catch {
            run.writer.abandon()
            throw Self.classify(error, pid: pid)
        }
    }

    static func classify(_ error: any Error, pid: Int32) -> CheckpointError {
        switch error {
        case let error as CheckpointError: return error
        case let error as TraceeError: return .process(error)
        case let error as StoreError: return .store(error)
        default: return .process(.unsupported(pid: pid, reason: "\(error)"))
        }
    }

    /// The state of one generation in progress.
    struct Run {
        let writer: GenerationWriter
        var baseline: PageMap?
        let pid: Int32
        var rounds = 0
        var pause: Int64 = 0
        var totalPause: Int64 = 0
        var dirty: UInt64 = 0
        var runningCopied: UInt64 = 0
        var frozenCopied: UInt64 = 0
        var zeroed: UInt64 = 0
        var reverted: UInt64 = 0
        var unmapped: UInt64 = 0
        var firstRound = true
        /// Pages stored and to store in the current round, for `progress`.
        var roundStored: UInt64 = 0
        var roundTotal: UInt64 = 0
    }

    /// Collects while frozen, copies while running; returns how many pages were written.
    private func preCopyRound(_ run: inout Run) throws -> UInt64 {
        let stopped = ClockTime.monotonic()
        let frozen = try FrozenProcess(pid: pid)
        let report: DirtyReport
        let pagemap: Pagemap
        do {
            pagemap = try Pagemap(frozen: frozen)
            report = try tracker.collect(frozen)
            frozen.thaw()
        } catch {
            frozen.thaw()
            throw error
        }
        run.totalPause += ClockTime.monotonic() - stopped
        let selection = try PageSelection(
            pid: pid,
            candidates: report.dirty, written: report.written, regions: report.regions, pagemap: pagemap)
        run.roundStored = 0
        run.roundTotal = selection.copy.pageCount
        run.runningCopied += try CopiedPages.stream(selection.copy, from: pid, maximumPages: 16384) { pages in
            try record(pages, &run)
        }
        apply(report, selection, &run)
        run.rounds += 1
        return report.dirty.pageCount
    }

    /// The stop-and-copy: collects, copies what is left, reads the image, and resumes the
    /// process before anything is hashed or written.
    private func finalRound(_ run: inout Run, finish: Finish) throws -> ProcessImage {
        var attempts = 0
        while true {
            attempts += 1
            let asked = ClockTime.monotonic()
            let injected = try Injector.readState(of: pid)
            run.totalPause += ClockTime.monotonic() - asked
            let smaps = try ImageCapture.EarlySmaps(pid: pid)
            let stopped = ClockTime.monotonic()
            let frozen = try FrozenProcess(pid: pid)
            do {
                // What the helper read must still hold: same threads, same caught and ignored
                // signals. Otherwise ask again (nothing has been collected yet).
                if !(try Self.stillHolds(injected, frozen)) && attempts < 5 {
                    frozen.thaw()
                    run.totalPause += ClockTime.monotonic() - stopped
                    continue
                }
                let pagemap = try Pagemap(frozen: frozen)
                let report = try tracker.collect(frozen)
                let selection = try PageSelection(
                    pid: pid,
                    candidates: report.dirty, written: report.written, regions: report.regions, pagemap: pagemap)
                let copy = try CopiedPages(selection.copy.runs, from: ProcessMemory(pid: pid))
                var image = try ImageCapture.capture(
                    frozen, regions: try MemoryRegion.of(pid), injected: injected, smaps: smaps,
                    skipUnsupported: options.skipUnsupported)
                observeFrozen?(frozen, run.writer.generation)
                if finish != .resume { try? Signal.send(SIGSTOP, to: pid) }  // delivered before it runs again
                frozen.thaw()
                let pause = ClockTime.monotonic() - stopped
                run.totalPause += pause
                run.pause = pause
                run.frozenCopied = copy.pageCount
                run.roundStored = 0
                run.roundTotal = copy.pageCount
                try copy.forEach { pages in try record(pages, &run) }
                apply(report, selection, &run)
                image.capture.pauseNanoseconds = run.pause
                image.capture.totalPauseNanoseconds = run.totalPause
                image.capture.preCopyRounds = run.rounds
                image.capture.pagesCopiedWhileRunning = run.runningCopied
                image.capture.pagesCopiedFrozen = run.frozenCopied
                return image
            } catch {
                frozen.thaw()
                throw error
            }
        }
    }

    /// The helper's answer still describes the frozen process.
    static func stillHolds(_ injected: InjectedState, _ frozen: FrozenProcess) throws(TraceeError) -> Bool {
        guard Set(injected.threads.map(\.tid)) == Set(frozen.threads) else { return false }
        let status = try ProcFS.status(frozen.pid)
        let caught = status.caughtSignals, ignored = status.ignoredSignals
        var expectCaught: UInt64 = 0, expectIgnored: UInt64 = 0
        for action in injected.signalActions where action.signal <= 64 {
            let bit = UInt64(1) << UInt64(action.signal - 1)
            if action.handler == 1 { expectIgnored |= bit } else if action.handler > 1 { expectCaught |= bit }
        }
        return caught == expectCaught && ignored == expectIgnored
    }

    /// Puts copied pages; in the first round of a run continuing a chain, only those that
    /// differ from the chain's newest generation.
    private func record(_ pages: CopiedPages.Slice, _ run: inout Run) throws {
        defer {
            run.roundStored += pages.count
            progress?(run.writer.generation, run.roundStored, run.roundTotal)
        }
        // Only the first round compares: a later round's page may have changed back to the
        // chain's bytes after the first round put other bytes, and must be put again.
        guard let baseline = run.baseline, run.firstRound else {
            try run.writer.put(firstPage: pages.firstPage, contents: pages.bytes)
            return
        }
        for k in 0..<Int(pages.count) {
            let page = pages.bytes.page(at: k)
            let number = pages.firstPage + UInt64(k)
            if let old = baseline.chunk(of: number), old == ChunkID(hashing: page) { continue }
            try run.writer.put(firstPage: number, contents: page)
        }
    }

    /// Records what the round found besides copied pages: unmapped ranges, zeroed pages and
    /// pages that revert to their file.
    private func apply(_ report: DirtyReport, _ selection: PageSelection, _ run: inout Run) {
        run.dirty += report.dirty.pageCount
        for range in report.unmapped.runs { run.writer.unmap(Self.pages(range)) }
        run.unmapped += report.unmapped.pageCount
        for range in selection.revert.runs { run.writer.unmap(Self.pages(range)) }
        run.reverted += selection.revert.pageCount
        // A base's first round needs no zero entries: absent anonymous pages are zero.
        let needZeros = !(run.firstRound && run.writer.kind == .full)
        if needZeros {
            for range in selection.zero.runs {
                for page in Self.pages(range).first..<Self.pages(range).end { run.writer.putZero(page: page) }
            }
            run.zeroed += selection.zero.pageCount
        }
        if run.firstRound, let baseline = run.baseline {
            // Stored pages of the chain that hold nothing of their own now.
            let kept = selection.copy
            var stale: [PageRun] = []
            for entry in baseline.pages where !kept.contains(page: Page.address(of: entry.page)) {
                stale.append(PageRun(pageAt: Page.address(of: entry.page)))
            }
            for range in AddressRuns(stale).runs { run.writer.unmap(Self.pages(range)) }
        }
        run.firstRound = false
    }

    static func pages(_ run: PageRun) -> PageRange {
        PageRange(first: Page.number(of: run.start), count: run.pageCount)
    }
}
