#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SoftDirty
import Store
import Syscall
import Tracee

/// Checkpoints a live process and its descendants into a chain of the store: a full base, then
/// deltas of only the pages each process's own tracker reports written. Data flows one way:
/// processes (Tracee) → trackers (SoftDirty) → selection and image (here) → store. Each process
/// of the tree keeps its pages in its own address space of the page map (`AddressSpaces`), and
/// the whole tree is frozen before any of it is copied, so the generation is one instant of
/// every process.
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
        /// a delta is pre-copied only when more than this were written since the previous
        /// generation (`worthPreCopying`).
        public var stopCopyPages: UInt64 = 4096  // pages (16 MiB), not a page size
        /// Record descriptors a restart cannot recreate instead of refusing the process.
        public var skipUnsupported = false
        /// Record established TCP connections whose peer is outside the tree (`cpx
        /// --tcp-established`); otherwise they are refused.
        public var tcpEstablished = false
        /// Record those connections to be made again closed at the restart, without their state
        /// (`cpx --tcp-close`), for programs that reconnect; otherwise they are refused.
        public var tcpClose = false
        /// UNIX sockets whose peer is outside the tree, named by the user with what a restart
        /// does with each (`cpx --external-unix`); any other such socket is refused.
        public var externalUnix: [ExternalUnix] = []
        /// Extend the chain even when it belongs to another process, making this one the chain's
        /// lineage from now on (`cpx --adopt`).
        public var adopt = false
        /// Checkpoint the process's descendants with it; false: refuse a process with children
        /// (`cpx --no-tree`).
        public var tree = true
        /// Keep the contents of the regular files the tree writes with each generation
        /// (`FileCapture`); false: `cpx --no-files`, a restart uses them as they are then.
        public var recordFiles = true
        /// Files larger than this are recorded as too large, without their contents
        /// (`cpx --file-limit`).
        public var fileLimit: Int64 = 1 << 30
        /// The most bytes of files a generation keeps, all files together (what cpx holds in
        /// memory for them); files past it are recorded as too large (`cpx --file-limit ,TOTAL`).
        public var generationFileLimit: Int64 = 4 << 30
        /// Globs of paths whose contents are not kept (`cpx --exclude-file`).
        public var excludeFiles: [String] = []

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
        /// Processes in the generation: the one checkpointed and its descendants.
        public var processes: Int
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
        /// Connections to peers outside the tree held for the restart (`--kill`): "LOCAL to REMOTE".
        public var heldConnections: [String] = []
        /// Connections to peers outside the tree recorded to be made again closed at the restart
        /// (`--tcp-close`): "LOCAL to REMOTE".
        public var closedConnections: [String] = []
        /// UNIX sockets whose peer is outside the tree, named external (`--external-unix`): "process
        /// PID fd N: UNIX stream socket INODE to PATH: reconnect" (or "... to an unnamed socket: close").
        public var externalUnixSockets: [String] = []
        /// What went wrong after the generation was committed (it stands).
        public var warnings: [String] = []
        /// Regular files the tree writes kept with the generation, and of them, those read again
        /// (changed since the previous generation), and those not kept (excluded, too large).
        public var filesRecorded = 0
        public var filesRead = 0
        /// Of those read, the ones read while the tree ran and unchanged since (`prefetch`): not
        /// read in the pause.
        public var filesReadEarly = 0
        public var filesNotKept: [String] = []
    }

    public let pid: Int32
    public let store: Store
    public let options: Options
    /// The first process's tracker (each process of the tree has its own).
    public var tracker: any DirtyTracker { members[0].tracker }
    /// Generations this checkpointer committed.
    public private(set) var written = 0
    /// The processes followed, the first one first, each after its parent.
    private var members: [TrackedProcess]
    /// Address spaces of processes that ended since the last committed generation: the next
    /// one drops their pages.
    private var endedSpaces: [UInt64] = []
    /// The address space each process had in the chain's newest generation, for a run that
    /// continues a chain (so that its pages are compared with the same process's).
    private var chainSpaces: [Int32: UInt64] = [:]
    private var nextSpace: UInt64 = 1
    /// The files the tree writes (nil: `recordFiles` is off).
    private let files: FileCapture?
    /// Descendants that had exited, unreaped, when the tree was last looked at.
    private var zombies: [Int32] = []
    /// The children `--no-tree` leaves out, one line each.
    private var leftOut: [String] = []
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
        ConnectionHold.releaseStale()  // a hold a cpx left on connections that still run
        self.pid = pid
        self.store = store
        self.options = options
        files =
            options.recordFiles
            ? FileCapture(
                options: .init(
                    limit: options.fileLimit, total: options.generationFileLimit, exclude: options.excludeFiles)) : nil
        guard Chain.isValidName(options.chain) else { throw .store(.invalidChainName(options.chain)) }
        do {
            let state = try ProcFS.state(pid)
            if state == "Z" || state == "X" { throw TraceeError.zombie(pid: pid) }
            if let reason = Self.pidNamespaceRefusal(pid) { throw TraceeError.unsupported(pid: pid, reason: reason) }
            let claim = try ChainClaim(store: store, chain: options.chain)
            pendingLineage = try ChainOwnership.admit(pid, to: claim, store: store, adopt: options.adopt)
            self.claim = claim
            // What a failed or killed writer left goes now, if no one else writes.
            _ = try? store.reclaimAbandonedWrites()
            members = [
                TrackedProcess(pid: pid, space: 0, tracker: try TrackerSelection.start(options.tracker, pid: pid))
            ]
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
        for member in members { member.tracker.stop() }
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
                let (_, manifest, map) = try store.rebuild(chain: options.chain, generation: head.generation)
                baseline = map
                chainSpaces = Self.spaces(in: manifest.metadata, generation: head.generation)
                if let files, let image = try? ProcessImage(decoding: manifest.metadata, generation: head.generation) {
                    files.continuing(image, map: map, createdNanoseconds: head.createdNanoseconds)
                }
            }
        } catch {
            throw .store(error)
        }
        var run = Run(writer: writer, baseline: baseline, pid: pid)
        do {
            try followTree()
            let kernelTracker = tracker.kind != .hash
            if options.preCopy && kernelTracker && (written == 0 || worthPreCopying()) {
                while run.rounds < options.maxPreCopyRounds {
                    var round: UInt64 = 0
                    for member in members {
                        do { round += try preCopyRound(member, &run) } catch {
                            guard hasEnded(member) else { throw error }  // else the final round follows the tree again
                        }
                    }
                    run.rounds += 1
                    run.firstRound = false
                    if round <= options.stopCopyPages { break }
                }
            }
            // The connections to peers outside the tree are held before they are read: a
            // segment the kernel took (and acknowledged) between the read and the kill would
            // be lost to the restart, and the peer would never send it again.
            if finish == .kill && options.tcpEstablished {
                run.held = try ConnectionHold.holdOutside(members.map(\.pid))
            }
            files?.prefetch(full: run.writer.kind == .full, pids: members.map(\.pid))  // while the tree runs
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
                files?.committed()
            } catch {
                // Never leave them stopped for nothing.
                if finish != .resume { for member in members { try? Signal.send(SIGCONT, to: member.pid) } }
                throw error
            }
            var warnings: [String] = []
            var held: [String] = []
            if finish == .kill {
                do {
                    let killed = try ConnectionHold.kill(
                        members.map(\.pid), images: [image] + (image.tree ?? []), held: run.held)
                    (held, warnings) = (killed.held.map(\.description), killed.problems)
                    run.held = []
                } catch {
                    for member in members { try? Signal.send(SIGCONT, to: member.pid) }
                    throw error
                }
            }
            written += 1
            endedSpaces = []
            let statistics = run.writer.currentStatistics
            return Generation(
                chain: options.chain, generation: entry.generation, manifest: entry.manifest.short, pid: pid,
                processes: members.count,
                kind: entry.kind == .full ? "full" : "delta", tracker: image.capture.tracker,
                dirtyPages: run.dirty, copiedPages: run.runningCopied + run.frozenCopied, zeroPages: run.zeroed,
                revertedPages: run.reverted, unmappedPages: run.unmapped, newChunks: statistics.newChunks,
                storedBytes: statistics.storedBytes, pauseMicroseconds: image.capture.pauseNanoseconds / 1000,
                totalPauseMicroseconds: image.capture.totalPauseNanoseconds / 1000, preCopyRounds: run.rounds,
                milliseconds: (ClockTime.monotonic() - started) / 1_000_000, heldConnections: held,
                closedConnections: ProcessImage.closedConnections(image.processes).map(\.connection.description),
                externalUnixSockets: ProcessImage.externalUnixSockets(image.processes), warnings: warnings,
                filesRecorded: (image.files ?? []).filter { $0.state == .recorded }.count,
                filesRead: run.filesRead, filesReadEarly: run.filesReadEarly,
                filesNotKept: (image.files ?? []).filter { $0.state != .recorded }.map {
                    "\($0.path): \($0.state.rawValue) (\($0.reason ?? ""))"
                })
        } catch {
            run.writer.abandon()
            if !run.held.isEmpty { _ = try? PacketFilter.release(run.held) }  // the process runs on
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
        /// Connections held by a packet filter for `--kill` (`ConnectionHold`), released if
        /// the generation fails.
        var held: Set<PacketFilter.Connection> = []
        var firstRound = true
        /// A base's first round needs no zero entries: absent anonymous pages are zero.
        var needsZeros: Bool { !(firstRound && writer.kind == .full) }
        /// Pages stored and to store in the current round, for `progress`.
        var roundStored: UInt64 = 0
        var roundTotal: UInt64 = 0
        /// The files read at the final stop, stored once the tree runs again.
        var files: [FileCapture.Pending] = []
        var filesReadAt: Int64 = 0
        var filesRead = 0
        var filesReadEarly = 0
    }

    /// Follows the tree as it is now: a tracker for each new descendant (started while it runs),
    /// none for those that ended (their address spaces are dropped by the next generation).
    /// Without `options.tree`, a process with children is refused.
    private func followTree() throws {
        var tree = try ProcessTree(of: pid)
        if !options.tree {
            leftOut = (try ProcFS.children(pid)).map {
                "child process \($0) (\(Self.name(of: $0))): --no-tree checkpoints a process alone; "
                    + "a restart would run without it (leave --no-tree off to checkpoint the tree)"
            }
            tree = ProcessTree(alone: pid)
        }
        zombies = tree.zombies
        let current = Set(tree.members)
        for member in members where !current.contains(member.pid) {
            member.tracker.stop()
            endedSpaces.append(member.space)
        }
        members.removeAll { !current.contains($0.pid) }
        guard members.first?.pid == pid else { throw TraceeError.noSuchProcess(pid: pid) }
        let followed = Set(members.map(\.pid))
        nextSpace = max(nextSpace, (chainSpaces.values.max() ?? 0) + 1)
        for child in tree.members where !followed.contains(child) {
            let space: UInt64
            if let kept = chainSpaces[child], !members.contains(where: { $0.space == kept }) {
                space = kept
            } else {
                space = nextSpace
                nextSpace += 1
            }
            // The last space holds the files the tree writes (`FileChunks`).
            guard space < FileChunks.space else {
                throw TraceeError.unsupported(
                    pid: pid,
                    reason: "its tree has had more than \(FileChunks.space) processes in this chain (each keeps an "
                        + "address space of the page map): start a new chain")
            }
            let tracker: any DirtyTracker
            do { tracker = try TrackerSelection.start(options.tracker ?? self.tracker.kind, pid: child) } catch {
                if ["Z", "X", nil].contains(try? ProcFS.state(child)) { continue }  // it ended meanwhile
                throw error
            }
            members.append(TrackedProcess(pid: child, space: space, tracker: tracker))
        }
        // Parents before children, as the tree lists them.
        let order = Dictionary(uniqueKeysWithValues: tree.members.enumerated().map { ($1, $0) })
        members.sort { (order[$0.pid] ?? Int.max) < (order[$1.pid] ?? Int.max) }
    }

    /// Whether the checkpointed process itself has exited (or is a zombie).
    private func hasEnded(root: Int32) -> Bool {
        let state = try? ProcFS.state(root)
        return state == nil || state == "Z" || state == "X"
    }

    /// A descendant that has exited (or is a zombie) since the tree was followed: a tree's
    /// processes come and go while it runs (a shell's commands, make's compilers), and the
    /// generation goes on without it. The first process ending ends the checkpoint.
    private func hasEnded(_ member: TrackedProcess) -> Bool {
        guard member.pid != pid else { return false }
        let state = try? ProcFS.state(member.pid)
        return state == nil || state == "Z" || state == "X"
    }

    /// Why a process in a PID namespace below cpx's (its /proc/PID/status NSpid lists more pids
    /// than cpx's own) is refused: it knows itself and others by pids the image does not record.
    static func pidNamespaceRefusal(_ pid: Int32) -> String? {
        guard let nspid = (try? ProcFS.status(pid))?["NSpid"]?.split(whereSeparator: \.isWhitespace),
            let own = (try? ProcFS.status(CurrentProcess.id))?["NSpid"]?.split(whereSeparator: \.isWhitespace),
            nspid.count > own.count
        else { return nil }
        return "it runs in a PID namespace of its own (NSpid \(nspid.joined(separator: " "))): "
            + "its pids inside are not recorded yet"
    }

    static func name(of pid: Int32) -> String { (try? ProcFS.threadName(pid, thread: pid)) ?? "?" }

    /// Which address space each process had in a generation (its image's metadata).
    static func spaces(in metadata: [UInt8], generation: UInt64) -> [Int32: UInt64] {
        guard let image = try? ProcessImage(decoding: metadata, generation: generation) else { return [:] }
        return Dictionary(image.processes.map { ($0.pid, $0.space) }, uniquingKeysWith: { first, _ in first })
    }

    /// Whether a later generation is copied while the tree runs before its final stop: when the
    /// trackers, asked while it runs (nothing reset), report more than `stopCopyPages` pages
    /// written since the previous generation. A delta that wrote little is taken in one stop,
    /// as the pre-copy's own collect would cost a second stop for nothing; one that wrote much
    /// no longer copies it all frozen (a 1% delta of 16 GiB, 42,000 pages, did: the previous
    /// stop, the rule before, had copied few). A tracker that cannot tell without a collect
    /// (or fails to: a descendant just ended) leaves it to what the previous stop copied.
    private func worthPreCopying() -> Bool {
        var pending: UInt64 = 0
        for member in members {
            guard let pages = (try? member.tracker.pendingPages(upTo: options.stopCopyPages + 1 - pending)) ?? nil
            else { return members.map(\.lastFrozenCopy).reduce(0, +) > options.stopCopyPages }
            pending += pages
            if pending > options.stopCopyPages { return true }
        }
        return false
    }

    /// Collects while frozen, copies while running; returns how many pages were written.
    private func preCopyRound(_ member: TrackedProcess, _ run: inout Run) throws -> UInt64 {
        let stopped = ClockTime.monotonic()
        let frozen = try FrozenProcess(pid: member.pid)
        let report: DirtyReport
        let pagemap: Pagemap
        do {
            pagemap = try Pagemap(frozen: frozen)
            report = try member.tracker.collect(frozen)
            frozen.thaw()
        } catch {
            frozen.thaw()
            throw error
        }
        run.totalPause += ClockTime.monotonic() - stopped
        let selection = try PageSelection(
            pid: member.pid,
            candidates: report.dirty, written: report.written, regions: report.regions, pagemap: pagemap,
            zeros: run.needsZeros)
        run.roundStored = 0
        run.roundTotal = selection.copy.pageCount
        run.writer.reservePages(Int(selection.copy.pageCount))
        run.runningCopied += try CopiedPages.stream(
            selection.copy, from: member.pid, maximumPages: Self.preCopyBatchPages
        ) { pages in
            try record(pages, member, &run)
        }
        apply(report, selection, member, &run)
        return report.dirty.pageCount
    }

    /// What one process of the tree gave in the final stop.
    private struct Stopped {
        var report: DirtyReport
        var selection: PageSelection
        var copy: CopiedPages
        var image: ProcessImage
    }

    /// The stop-and-copy: freezes the whole tree, collects each process, copies what is left,
    /// reads the images, and resumes every process before anything is hashed or written.
    private func finalRound(_ run: inout Run, finish: Finish) throws -> ProcessImage {
        var attempts = 0
        // What the helper read of each process, kept across tries: a try that failed because
        // the tree changed asks only its new processes (a shell or make forks faster than every
        // process of the tree can be asked again).
        var asked: [Int32: (state: InjectedState, smaps: ImageCapture.EarlySmaps)] = [:]
        // A stop that copies the processes whole (this checkpointer's first generation without
        // pre-copy: the trackers have no history yet) copies each into a buffer made and faulted
        // in while it still runs: a fresh buffer's faults (a zeroed page each) were most of it.
        var prepared: [Int32: AnonymousMapping] = [:]
        let copiesWhole = written == 0 && run.firstRound
        while true {
            attempts += 1
            if attempts > 1 { try followTree() }
            let followedZombies = Set(zombies)
            let started = ClockTime.monotonic()
            var injected: [InjectedState] = []
            var smaps: [ImageCapture.EarlySmaps] = []
            var stopped = started
            var frozen: [FrozenProcess] = []
            var frozenAt: [Int64] = []  // CLOCK_MONOTONIC once each was stopped
            defer { for process in frozen.reversed() { process.thaw() } }
            var earlier = Set<Int32>()  // processes whose answer is from an earlier try
            do {
                for member in members {
                    if asked[member.pid] != nil { earlier.insert(member.pid) }
                    if asked[member.pid] == nil {
                        asked[member.pid] = (
                            try Injector.readState(of: member.pid), try ImageCapture.EarlySmaps(pid: member.pid)
                        )
                    }
                    injected.append(asked[member.pid]!.state)
                    smaps.append(asked[member.pid]!.smaps)
                }
                run.totalPause += ClockTime.monotonic() - started
                for member in members where copiesWhole && prepared[member.pid] == nil {
                    prepared[member.pid] = Self.stopBuffer(for: asked[member.pid]!.smaps)
                }
                stopped = ClockTime.monotonic()
                for member in members {
                    let stat = try? ProcFS.stat(member.pid)
                    member.stateBeforeStop = stat?.state ?? "R"
                    member.stopSignal = stat?.exitCode ?? 0
                    frozen.append(try FrozenProcess(pid: member.pid))
                    frozenAt.append(ClockTime.monotonic())
                }
            } catch {
                // A descendant ended since the tree was followed, or a thread while its process
                // was asked or stopped (glibc's SIGEV_THREAD timers start a thread per expiry,
                // make's children come and go): follow the tree again and ask what is new. What
                // a try that succeeds takes is checked below as always.
                var vanished = false
                if case .noSuchProcess = error { vanished = true }
                guard attempts < Self.attempts,
                    members.contains(where: { hasEnded($0) }) || (vanished && !hasEnded(root: pid))
                else { throw error }
                for process in frozen.reversed() { process.thaw() }
                continue
            }
            // What the helpers read must still hold (same threads, same caught and ignored
            // signals), and the tree must be the one followed (no fork, no exit since, no new
            // zombie: one its parent had no time to reap yet is gone once the parent runs).
            // Otherwise ask again (nothing has been collected yet). The zombies recorded are
            // the ones seen frozen.
            var sameTree = true
            if options.tree {
                let tree = try ProcessTree(of: pid)
                zombies = tree.zombies
                sameTree = tree.members == members.map(\.pid) && Set(tree.zombies) == followedZombies
            }
            var holds = sameTree
            for (k, process) in frozen.enumerated() where holds {
                holds = try Self.stillHolds(injected[k], process)
                if holds {
                    let moved = try Self.timersAtFreeze(injected[k], process, frozenAt: frozenAt[k])
                    if let moved { injected[k] = moved } else { holds = false }
                }
                // An answer from an earlier try must also be of the same memory (no exec since).
                if holds && earlier.contains(process.pid) {
                    holds = try MemoryRegion.of(process.pid) == smaps[k].regions
                }
                if !holds { asked[process.pid] = nil }
            }
            if !holds && attempts < Self.attempts {
                for process in frozen.reversed() { process.thaw() }
                run.totalPause += ClockTime.monotonic() - stopped
                continue
            }
            if !sameTree {  // never an image of a tree that is not the one frozen
                throw TraceeError.unsupported(
                    pid: pid,
                    reason: "its process tree changed (a fork, an exit) in each of \(Self.attempts) tries to stop "
                        + "it whole; try again, or checkpoint it when it forks less often")
            }
            var taken: [Stopped] = []
            var refused: [String] = []
            for (k, member) in members.enumerated() {
                let pagemap = try Pagemap(frozen: frozen[k])
                let report = try member.tracker.collect(frozen[k])
                let selection = try PageSelection(
                    pid: member.pid,
                    candidates: report.dirty, written: report.written, regions: report.regions, pagemap: pagemap,
                    zeros: run.needsZeros)
                let copy = try CopiedPages(
                    selection.copy.runs, from: ProcessMemory(pid: member.pid), prepared: prepared[member.pid])
                prepared[member.pid] = nil  // kept by the copy if it took it
                do {
                    let image = try ImageCapture.capture(
                        frozen[k], regions: try MemoryRegion.of(member.pid), injected: injected[k], smaps: smaps[k],
                        skipUnsupported: options.skipUnsupported, tree: members.map(\.pid),
                        externalUnix: options.externalUnix)
                    taken.append(Stopped(report: report, selection: selection, copy: copy, image: image))
                } catch CheckpointError.unsupportedDescriptors(let who, let list) {
                    refused += list.map { who == pid ? $0 : "process \(who) (\(Self.name(of: who))): \($0)" }
                }
            }
            var images = taken.map(\.image)
            if refused.isEmpty {
                refused = leftOut + TreeCapture.link(&images, members: members, zombies: zombies)
                refused += InetSocketCapture.unheldPeers(
                    &images, external: options.tcpEstablished, close: options.tcpClose,
                    skip: options.skipUnsupported)
                if refused.isEmpty { refused += InetSocketCapture.settle(&images) }
                if refused.isEmpty, let files {  // read frozen: the files as the processes left them
                    run.filesReadAt = ClockTime.realtime()
                    let read = files.read(images, full: run.writer.kind == .full)
                    run.files = read.pending
                    run.filesRead = read.pending.filter { $0.bytes != nil }.count
                    run.filesReadEarly = read.early
                    refused += read.refused
                }
                if options.skipUnsupported {
                    images[0].unsupported += refused
                    refused = []
                }
            }
            if !refused.isEmpty { throw CheckpointError.unsupportedDescriptors(pid: pid, refused) }
            observeFrozen?(frozen[0], run.writer.generation)
            if finish != .resume {  // delivered before they run again
                for member in members { try? Signal.send(SIGSTOP, to: member.pid) }
            }
            for process in frozen.reversed() { process.thaw() }
            let pause = ClockTime.monotonic() - stopped
            run.totalPause += pause
            run.pause = pause
            run.frozenCopied = taken.map(\.copy.pageCount).reduce(0, +)
            for (k, member) in members.enumerated() {
                member.lastFrozenCopy = taken[k].copy.pageCount
                run.roundStored = 0
                run.roundTotal = taken[k].copy.pageCount
                run.writer.reservePages(Int(taken[k].copy.pageCount))
                try taken[k].copy.forEach { pages in try record(pages, member, &run) }
                apply(taken[k].report, taken[k].selection, member, &run)
            }
            for space in endedSpaces { run.writer.unmap(AddressSpaces.range(of: space)) }
            if run.baseline != nil {  // spaces of the chain's newest generation no process has now
                let kept = Set(members.map(\.space))
                for space in Set(chainSpaces.values) where !kept.contains(space) {
                    run.writer.unmap(AddressSpaces.range(of: space))
                }
            }
            run.firstRound = false
            var image = images[0]
            if images.count > 1 { image.tree = Array(images.dropFirst()) }
            if let files {
                let records = try files.store(run.files, into: run.writer, readAt: run.filesReadAt)
                run.files = []
                if !records.isEmpty {
                    image.files = records
                    image.format = ProcessImage.filesFormat
                }
            }
            if image.hasExternalSockets { image.format = ProcessImage.externalFormat }
            if image.files?.contains(where: { $0.chunking == .blocks }) == true {
                image.format = ProcessImage.blockFilesFormat
            }
            image.capture.pauseNanoseconds = run.pause
            image.capture.totalPauseNanoseconds = run.totalPause
            image.capture.preCopyRounds = run.rounds
            image.capture.pagesCopiedWhileRunning = run.runningCopied
            image.capture.pagesCopiedFrozen = run.frozenCopied
            return image
        }
    }

    /// Pages a pre-copy round reads at a time (16 MiB, one `CopiedPages.bytesPerPart`), into
    /// each of two buffers: one is read on a thread of its own while the other's pages are
    /// hashed and compressed on every core, which takes longer. 64 MiB batches held 128 MiB of
    /// buffers whatever the process's size, for no faster a round (a 4 GiB base: 10.2-11.4 s
    /// either way; Benchmarks/README.md, "Scale").
    static let preCopyBatchPages = 4096

    /// A buffer for the stop's copy of a process copied whole, faulted in now (in parts, on
    /// every core): as many pages as its mappings that hold data of their own had resident
    /// when it was asked, and a little more for what it maps meanwhile (a copy that does not
    /// fit takes a fresh buffer, as a small one does). Nil below `preparedStopPages`, or when
    /// it cannot be made.
    static func stopBuffer(for smaps: ImageCapture.EarlySmaps) -> AnonymousMapping? {
        var pages: UInt64 = 0
        for region in smaps.regions {
            switch ImageCapture.backing(of: region) {
            case .anonymous, .heap, .stack, .sharedAnonymous: break
            case .privateFile where region.writable: break
            default: continue
            }
            pages += smaps.details[region.start]?.residentPages ?? 0
        }
        guard pages >= preparedStopPages,
            let buffer = try? AnonymousMapping(size: Page.bytes(Int(pages + pages / 32)), [.read, .write])
        else { return nil }
        // On every core: zeroing the pages is most of the cost. A kernel without
        // MADV_POPULATE_WRITE leaves them to fault in during the copy, as a fresh buffer's do.
        Parallel.forEachBlock(buffer.bytes.count, step: populatedPart) { part in try? buffer.populate(part) }
        return buffer
    }

    /// Bytes populated per task (16 MiB).
    static let populatedPart = 16 << 20

    /// Below this many pages (16 MiB) a stop's fresh buffer faults in within milliseconds.
    static let preparedStopPages: UInt64 = 4096

    /// Tries of the final stop before a tree that keeps changing is given up.
    static let attempts = 10

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

    /// The helper's answer with its POSIX timers as they were when `frozen` stopped (each moved
    /// on by the time since they were read); nil when a timer was made or deleted since, or a
    /// one-shot timer expired meanwhile (its signal may have been taken after the reading).
    static func timersAtFreeze(
        _ injected: InjectedState, _ frozen: FrozenProcess, frozenAt: Int64
    ) throws(TraceeError) -> InjectedState? {
        guard try PosixTimer.of(frozen.pid).map(\.id) == injected.posixTimers.map(\.id) else { return nil }
        let elapsed = UInt64(max(0, frozenAt - injected.timersReadAt))
        var moved = injected
        moved.posixTimers = []
        for timer in injected.posixTimers {
            guard let later = timer.later(by: elapsed) else { return nil }
            moved.posixTimers.append(later)
        }
        return moved
    }

    /// Puts copied pages of `member` into its address space; in the first round of a run
    /// continuing a chain, only those that differ from the chain's newest generation.
    private func record(_ pages: CopiedPages.Slice, _ member: TrackedProcess, _ run: inout Run) throws {
        defer {
            run.roundStored += pages.count
            progress?(run.writer.generation, run.roundStored, run.roundTotal)
        }
        // Only the first round compares: a later round's page may have changed back to the
        // chain's bytes after the first round put other bytes, and must be put again.
        guard let baseline = run.baseline, run.firstRound else {
            try run.writer.put(firstPage: member.number(pages.firstPage), contents: pages.bytes)
            return
        }
        for k in 0..<Int(pages.count) {
            let page = pages.bytes.page(at: k)
            let number = member.number(pages.firstPage + UInt64(k))
            if let old = baseline.chunk(of: number), old == ChunkID(hashing: page) { continue }
            try run.writer.put(firstPage: number, contents: page)
        }
    }

    /// Records what the round found in `member` besides copied pages: unmapped ranges, zeroed
    /// pages and pages that revert to their file.
    private func apply(_ report: DirtyReport, _ selection: PageSelection, _ member: TrackedProcess, _ run: inout Run) {
        run.dirty += report.dirty.pageCount
        for range in report.unmapped.runs { run.writer.unmap(member.range(Self.pages(range))) }
        run.unmapped += report.unmapped.pageCount
        for range in selection.revert.runs { run.writer.unmap(member.range(Self.pages(range))) }
        run.reverted += selection.revert.pageCount
        if run.needsZeros {
            for range in selection.zero.runs {
                let pages = member.range(Self.pages(range))
                for page in pages.first..<pages.end { run.writer.putZero(page: page) }
            }
            run.zeroed += selection.zero.pageCount
        }
        if run.firstRound, let baseline = run.baseline {
            // Stored pages of the chain that hold nothing of their own now.
            let kept = selection.copy
            let space = AddressSpaces.range(of: member.space)
            var stale: [PageRun] = []
            for entry in baseline.entries(in: space)
            where !kept.contains(page: Page.address(of: entry.page - space.first)) {
                stale.append(PageRun(pageAt: Page.address(of: entry.page - space.first)))
            }
            for range in AddressRuns(stale).runs { run.writer.unmap(member.range(Self.pages(range))) }
        }
    }

    static func pages(_ run: PageRun) -> PageRange {
        PageRange(first: Page.number(of: run.start), count: run.pageCount)
    }
}
