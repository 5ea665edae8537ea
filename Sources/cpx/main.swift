import ArgumentParser
import CommandSupport
import Foundation
import Incremental
import Reports
import Store
import SoftDirty
import Syscall
import Tracee
#if canImport(Glibc)
import Glibc
#endif

@main
struct Cpx: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cpx",
        abstract: "Checkpoint a live process into a chpox store, and maintain the store.",
        usage: """
            cpx [--store DIR] [--name NAME] [--adopt] [--interval SECONDS] [--count N] [--keep-last N] <pid>
            cpx --probe [--json]
            cpx <subcommand>
            """,
        discussion: """
            `cpx PID` takes one generation of process PID into the chain NAME (default: the executable's name and the \
            pid, e.g. python3-4242). The chain's first generation is a full base; every later one, in this run or a \
            later run, stores only what changed: pages the dirty-page tracker reports written (a later run, which has \
            no tracker history, compares every page with the chain instead).

            A chain belongs to one process and the processes restarted from it (ld-chpox records each one): cpx \
            refuses to extend a chain of another process, naming it (--name NEW starts a new chain; --adopt makes \
            this process the chain's process from now on), and a second cpx into a chain being written is refused \
            at once. A cpx (or cpx gc) also removes what a failed or killed cpx left in the store.

            With --interval, cpx takes a generation every interval until --count is reached, the process exits, or cpx \
            gets SIGINT or SIGTERM: the generation in flight is finished, tracking ends and the process runs on. \
            --leave-stopped and --kill act after the last generation (with --interval and no --count: a last \
            generation taken when cpx is stopped), for migration.

            The process is stopped only to collect its dirty pages, copy them out and read its registers and state; \
            hashing, compression and writing happen after it runs on. With uffd-wp or soft-dirty, pre-copy copies the \
            bulk while it runs first (--no-pre-copy turns it off). Whatever happens to cpx (an error, a full disk, \
            kill -9), the process runs on unharmed and the store never holds a half generation.

            The store: --store, else $CHPOX_STORE, else $XDG_STATE_HOME/chpox, else ~/.local/state/chpox (created \
            0700). cpx needs to ptrace the process: the same user (and /proc/sys/kernel/yama/ptrace_scope 0) or \
            CAP_SYS_PTRACE. chpox-inject must be installed beside cpx.

            Examples: `cpx 4242` (one generation); `cpx --interval 60 --keep-last 24 4242` (a generation a minute, \
            the newest 24 kept); `cpx --kill --name job 4242` (a last generation, then kill it: migration); \
            `cpx --probe` (which trackers this kernel has).

            Exit status: 0 when cpx ended as asked (every generation taken, the process exited, or SIGINT/SIGTERM \
            after the generation in flight: the ending line says which); 1 on an error, said on stderr (the \
            process runs on, and nothing half-written is left in the store); 64 for wrong arguments.
            """,
        subcommands: [Checkpoint.self, Track.self, GC.self, Rebase.self, RebuildIndex.self, Copy.self],
        defaultSubcommand: Checkpoint.self)
}

struct Checkpoint: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Checkpoint a live process (the default: `cpx PID` is `cpx checkpoint PID`; "
            + "its options: `cpx checkpoint --help`).",
        discussion: """
            The process is checkpointed with all its descendants (its process tree: children, their children, \
            each with its threads), all frozen at once for each generation, each tracked on its own; a restart \
            recreates the tree with the same pids, parents, sessions and process groups, and the pipes and open \
            files they share. `--no-tree` refuses a process that has children instead.

            Examples: `cpx 4242`; `cpx --interval 5 --count 3 --json --name job 4242`; `cpx --skip-unsupported \
            4242` (record what a restart cannot recreate instead of refusing).

            Exit status: 0 when cpx ended as asked; 1 on an error, said on stderr (the process runs on); 64 for wrong \
            arguments.
            """)

    @Argument(help: "The process to checkpoint.")
    var pid: Int32?
    @OptionGroup var storeOptions: StoreOptions
    @Option(name: .long, help: "The chain to write (default: <executable>-<pid>).")
    var name: String?
    // Numbers take the next word whatever it is: `--interval -5` is refused for being negative,
    // not for a missing value.
    @Option(name: .long, parsing: .unconditional, help: "Seconds between generations (default: take one and exit).")
    var interval: Double?
    @Option(
        name: .long, parsing: .unconditional,
        help: "Generations to take in all (default: 1 without --interval, until stopped with it).")
    var count: Int?
    @Option(
        name: .long, parsing: .unconditional,
        help: "After each generation, keep only the chain's newest N generations (runs GC).")
    var keepLast: Int?
    @OptionGroup var trackerOption: TrackerOption
    @Flag(
        name: .long, inversion: .prefixedNo,
        help: ArgumentHelp(
            "Copy the bulk of memory while the process runs, then stop it only for what it wrote meanwhile "
                + "(uffd-wp and soft-dirty)."))
    var preCopy = true
    @Flag(name: .long, help: "Leave the process stopped (SIGSTOP) after the last generation, exactly as checkpointed.")
    var leaveStopped = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Kill the process once the last generation is committed. With --tcp-established its connections "
                + "to peers outside the tree are held until ld-chpox restarts it (nftables table inet chpox_hold)."))
    var kill = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Extend the chain even though it belongs to another process: this process becomes the chain's "
                + "process from now on (recorded; the others can no longer extend it)."))
    var adopt = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Checkpoint this process alone: refuse it when it has children (by default its whole tree is "
                + "checkpointed)."))
    var noTree = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Checkpoint a process with descriptors a restart cannot recreate (sockets...): "
                + "they are recorded and listed by dumpinfo."))
    var skipUnsupported = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Checkpoint TCP connections (established or half-closed) whose peer is outside the process tree "
                + "(CRIU's name). With --kill they are held: the sockets close without a packet and an nftables "
                + "rule drops theirs both ways until ld-chpox makes them again (the peer retransmits meanwhile). "
                + "Without --kill nothing is held: once the process is gone the peer's next packet resets them."))
    var tcpEstablished = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Checkpoint TCP connections (established or half closed) whose peer is outside the process tree "
                + "without their state, for programs that reconnect (CRIU's name): the restart makes each one a "
                + "closed socket at its descriptor numbers (its next read returns end of file, its next write fails "
                + "with EPIPE), and restores listening sockets and connections inside the tree as always. Nothing is "
                + "held: with --kill the peer sees the connection closed. dumpinfo lists them."))
    var tcpClose = false
    @Option(
        name: .long,
        help: ArgumentHelp(
            "A UNIX socket whose peer is outside the process tree, and what the restart does with it (repeatable; "
                + "CRIU's --external): PATH=reconnect or PATH=close names the sockets connected to the peer bound "
                + "to PATH, unix:INODE=close (or =reconnect) the socket of the tree with that inode, '*=ACTION' every such socket. reconnect: a "
                + "new socket of the same type connects to PATH again at the same descriptors, with its options; "
                + "refused unless nothing is queued in either direction (it would be lost). close: the socket "
                + "comes back with its peer closed (its next read returns end of file, a write fails with EPIPE). "
                + "Without it such a socket is refused, naming it and its peer. dumpinfo lists them.",
            valueName: "spec"))
    var externalUnix: [String] = []
    @Option(
        name: .long,
        help: ArgumentHelp(
            "FILE[,GENERATION]: the largest file whose contents a generation keeps, and the most bytes of "
                + "files one generation keeps in all, which cpx holds in memory while it stores them (default 1G,4G; "
                + "K, M, G, T: binary units). A file past either is recorded as too large: its restart uses it as "
                + "it is then, said loudly.",
            valueName: "size"))
    var fileLimit: String = "1G,4G"
    @Option(
        name: .long,
        help: ArgumentHelp(
            "A glob (fnmatch, `*` matches `/` too) of paths whose contents generations do not keep (repeatable): "
                + "recorded as excluded; a restart uses such a file as it is then, said loudly."))
    var excludeFile: [String] = []
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Keep no file contents with the generations (by default the regular files the tree writes, open for "
                + "writing or mapped shared and writable, are kept, so that any generation restarts with its files)."))
    var noFiles = false
    @Flag(name: .long, help: "Print which dirty-page trackers this kernel supports and which one `auto` picks.")
    var probe = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Print JSON for scripts: one chpox.checkpoint/1 object per generation and an ending event; "
                + "chpox.probe/1 with --probe."))
    var json = false

    /// `--file-limit FILE[,GENERATION]`; nil when either is no size.
    static func fileLimits(_ text: String) -> (file: Int64, generation: Int64?)? {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2, let file = Format.parseBytes(parts[0]) else { return nil }
        guard parts.count == 2 else { return (file, nil) }
        guard let generation = Format.parseBytes(parts[1]) else { return nil }
        return (file, generation)
    }

    func validate() throws {
        if probe { return }
        guard let pid else { throw ValidationError("give the pid of the process to checkpoint (or --probe)") }
        guard pid > 0 else { throw ValidationError("pid must be positive") }
        if let interval { try Self.validate(interval: interval) }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let keepLast, keepLast < 1 { throw ValidationError("--keep-last must be at least 1") }
        if leaveStopped && kill { throw ValidationError("--leave-stopped and --kill exclude each other") }
        for spec in externalUnix {
            if case .failure(let error) = ExternalUnix.parse(spec) {
                throw ValidationError("--external-unix \(error.reason)")
            }
        }
        if tcpEstablished && tcpClose {
            throw ValidationError("--tcp-established and --tcp-close exclude each other (restore or close them)")
        }
        guard Self.fileLimits(fileLimit) != nil else {
            throw ValidationError(
                "--file-limit takes a size per file and, after a comma, one per generation: 64M, 1G,4G, 512K,2G")
        }
    }

    func run() throws {
        if probe { return try printProbe() }
        guard let pid else { return }
        // A large process's lists are blocks of many megabytes each, made and freed through the
        // generation: mapped, they leave nothing behind in the heap when freed.
        Allocator.mapBlocks(atLeast: 1 << 20)
        try reportingErrors("cpx") {
            let chain = name ?? Self.defaultName(pid)
            var options = Checkpointer.Options(chain: chain, tracker: trackerOption.kind)
            options.preCopy = preCopy
            options.skipUnsupported = skipUnsupported
            options.tcpEstablished = tcpEstablished
            options.tcpClose = tcpClose
            options.externalUnix = externalUnix.compactMap { try? ExternalUnix.parse($0).get() }
            options.adopt = adopt
            options.tree = !noTree
            options.recordFiles = !noFiles
            if let (file, generation) = Self.fileLimits(fileLimit) {
                options.fileLimit = file
                options.generationFileLimit = generation ?? options.generationFileLimit
            }
            options.excludeFiles = excludeFile
            let schedule = CheckpointSchedule(
                interval: interval, count: count, keepLast: keepLast,
                finish: kill ? .kill : leaveStopped ? .leaveStopped : .resume)
            let store = try storeOptions.open(create: true)
            // A run that stored nothing (a wrong pid, a refused ptrace) leaves no store behind.
            defer { store.discardIfUnused() }
            // SIGINT and SIGTERM are held back and waited for between generations, so the
            // generation in flight always finishes.
            var stopSignals = sigset_t()
            sigemptyset(&stopSignals)
            sigaddset(&stopSignals, SIGINT)
            sigaddset(&stopSignals, SIGTERM)
            sigprocmask(SIG_BLOCK, &stopSignals, nil)
            let checkpointer = try Checkpointer(pid: pid, store: store, options: options)
            defer { checkpointer.stop() }
            let progress = ProgressLine("cpx \(chain)")
            if !json {
                var shown = Int64(0)
                checkpointer.progress = { generation, done, total in
                    // A redraw at most every 100 ms, and only on generations worth watching.
                    let now = Int64(Date().timeIntervalSince1970 * 1000)
                    guard total >= 65536, now - shown >= 100 || done == total else { return }
                    shown = now
                    progress.show(
                        "generation \(generation): stored \(Format.bytes(Page.bytes(done))) "
                            + "of \(Format.bytes(Page.bytes(total)))"
                    )
                }
            }
            let ending = try schedule.run(
                checkpointer,
                wait: { seconds in
                    Self.wait(seconds, for: stopSignals, progress: json ? nil : progress)
                },
                report: { generation, collected in
                    progress.finish()
                    print(json ? CheckpointReports.json(generation) : generation.text)
                    if let collected, !collected.dropped.isEmpty, !json {
                        print(
                            "  gc: dropped \(collected.dropped.count) generation(s), "
                                + "freed \(Format.bytes(collected.bytesFreed))"
                        )
                    }
                    fflush(nil)
                })
            if interval != nil || json { print(CheckpointReports.ending(ending, pid: pid, json: json)) }
        }
    }

    /// The longest `--interval` taken: a year.
    static let maximumInterval: Double = 366 * 24 * 3600

    /// `--interval`: a finite number of seconds, more than 0 and at most `maximumInterval`.
    static func validate(interval: Double) throws {
        guard interval.isFinite, interval > 0, interval <= maximumInterval else {
            throw ValidationError(
                "--interval takes seconds, more than 0 and at most \(Int(maximumInterval)) (a year); got \(interval)")
        }
    }

    /// Sleeps up to `seconds`; true if SIGINT or SIGTERM came.
    static func wait(_ seconds: Double, for signals: sigset_t, progress: ProgressLine?) -> Bool {
        var remaining = seconds
        var set = signals
        while remaining > 0 {
            progress?.show("next generation in \(Int(remaining.rounded(.up))) s")
            let step = min(remaining, 1)
            var timeout = timespec(tv_sec: Int(step), tv_nsec: Int((step - step.rounded(.down)) * 1e9))
            if sigtimedwait(&set, nil, &timeout) > 0 {
                progress?.finish()
                return true
            }
            remaining -= step
        }
        progress?.finish()
        return false
    }

    static func defaultName(_ pid: Int32) -> String {
        let exe = ProcFS.link(pid, "exe").map { String($0.split(separator: "/").last ?? "process") } ?? "process"
        let cleaned = exe.replacingOccurrences(of: " (deleted)", with: "").map {
            $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_"
        }
        return String(cleaned) + "-\(pid)"
    }

    func printProbe() throws {
        let probe = TrackerProbe()
        print(json ? ProbeReports.json(probe) : ProbeReports.text(probe))
    }
}

/// `--tracker`, shared by every command that tracks a process.
struct TrackerOption: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Dirty-page tracker: auto, soft-dirty, uffd-wp or hash (see `cpx --probe`).", valueName: "name"))
    var tracker: String = "auto"

    func validate() throws {
        guard tracker == "auto" || TrackerKind(rawValue: tracker) != nil else {
            throw ValidationError("unknown tracker '\(tracker)': use auto, soft-dirty, uffd-wp or hash")
        }
    }

    var kind: TrackerKind? { TrackerKind(rawValue: tracker) }
}

struct Track: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure how many pages a live process writes per interval, with any tracker.",
        discussion: """
            Every interval the process is frozen (all threads), the tracker collects and resets, and the process runs \
            on: the freeze time is what a checkpoint's pause would start from. Sample 0 reports every page (there is \
            nothing to compare with yet). The process is never changed: uffd-wp's userfaultfd is created by the \
            chpox-inject helper and leaves no descriptor behind; stopping cpx at any moment leaves the process \
            running.

            Examples: `cpx track 4242` (a sample a second until it exits); `cpx track 4242 --tracker hash \
            --count 5 --json`.

            Exit status: 0 when the samples were taken or the process exited; 1 on an error; 64 for wrong arguments.
            """)

    @Argument(help: "The process to watch.")
    var pid: Int32
    @OptionGroup var trackerOption: TrackerOption
    @Flag(name: .long, help: "Print JSON for scripts: one chpox.track/1 line per sample and an ending event.")
    var json = false
    @Option(name: .long, parsing: .unconditional, help: "Seconds between samples.")
    var interval: Double = 1
    @Option(
        name: .long, parsing: .unconditional,
        help: "Samples to take after the first (default: until the process exits or cpx is interrupted).")
    var count: Int?

    func validate() throws {
        try Checkpoint.validate(interval: interval)
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        let monitor: DirtyRate
        do { monitor = try DirtyRate(pid: pid, tracker: trackerOption.kind) } catch {
            FileHandle.standardError.write(Data("cpx track: \(error)\n".utf8))
            throw ExitCode.failure
        }
        var index = 0
        while count.map({ index <= $0 }) ?? true {
            if index > 0 { CurrentProcess.sleep(microseconds: UInt64(interval * 1_000_000)) }
            let sample: DirtyRate.Sample
            do { sample = try monitor.sample(index) } catch {
                if case .noSuchProcess = error, index > 0 {
                    print(
                        json
                            ? "{\"event\":\"exited\",\"pid\":\(pid),\"schema\":\"chpox.track/1\"}" : "pid \(pid) exited"
                    )
                    return
                }
                FileHandle.standardError.write(Data("cpx track: \(error)\n".utf8))
                throw ExitCode.failure
            }
            if json {
                print(StoreReports.jsonLine(sample))
            } else {
                print(sample.text)
            }
            index += 1
        }
    }
}

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Drop old generations and reclaim the space only they used.",
        discussion: """
            A dropped generation's changes are merged into the next kept one, so every kept generation still rebuilds \
            byte for byte, under the same number. The newest generation of a chain is always kept. Without a retention \
            option, gc only sweeps garbage left by interrupted writes. Safe while `cpx` writes into the same store: gc \
            waits for the generation in flight, and writers wait for gc at their next generation.

            Examples: `cpx gc --keep-last 10 --dry-run` (what it would drop and free); `cpx gc --keep-within 7d \
            --keep 0` (a week, and the first generation); `cpx gc` (sweep only).

            gc changes nothing in a damaged store: when a generation it would drop, merge or rewrite uses a chunk \
            whose pack is missing, cut short or unreadable, or that the index lost, it names each file, the \
            generations using it and what to run (`cpx rebuild-index` for an incomplete index), and exits 1; \
            --dry-run makes the same checks and refuses alike.

            Exit status: 0 when done (or planned, with --dry-run); 1 on an error or damage (nothing is dropped \
            then); 64 for wrong arguments.
            """)

    @OptionGroup var storeOptions: StoreOptions
    @Flag(name: .long, help: "Print JSON for scripts (chpox.gc/1).")
    var json = false
    @Option(name: .long, help: "Apply retention to this chain only (default: every chain).")
    var name: String?
    @Option(name: .long, parsing: .unconditional, help: "Keep the newest N generations.")
    var keepLast: Int?
    @Option(
        name: .long,
        help: ArgumentHelp("Keep generations created within this long (90s, 30m, 12h, 7d, 2w).", valueName: "duration"))
    var keepWithin: String?
    @Option(name: .long, parsing: .upToNextOption, help: "Keep these generation numbers.")
    var keep: [UInt64] = []
    @Option(name: .long, help: "Repack packs whose dead share is over this fraction.")
    var repackThreshold: Double = 0.3
    @Flag(name: .long, help: "Report what would be dropped and freed; change nothing.")
    var dryRun = false

    func validate() throws {
        if let keepLast, keepLast < 1 { throw ValidationError("--keep-last must be at least 1") }
        if let keepWithin, Format.duration(keepWithin) == nil {
            throw ValidationError("--keep-within takes a number and a unit: 90s, 30m, 12h, 7d, 2w")
        }
        if !(0...1).contains(repackThreshold) {
            throw ValidationError("--repack-threshold is a fraction between 0 and 1")
        }
    }

    func run() throws {
        try reportingErrors("cpx gc") {
            let store = try storeOptions.open()
            let policy = RetentionPolicy(
                keepLast: keepLast, keepWithinNanoseconds: keepWithin.flatMap(Format.duration),
                keep: Set(keep), chains: name.map { [$0] })
            if let name { _ = try store.chain(name) }
            let report = try store.collectGarbage(policy, dryRun: dryRun, repackThreshold: repackThreshold)
            print(json ? StoreReports.gcJSON(report, store: store.location) : StoreReports.gcText(report))
        }
    }
}

struct Rebase: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Store a generation's whole page map, so it and later ones rebuild without older generations.",
        discussion: """
            Older generations stay; `cpx gc --keep-last` can then drop them cheaply.

            Examples: `cpx rebase` (the store's only chain, its newest generation); `cpx rebase --name job \
            --generation 40`.

            Exit status: 0 when the generation is full; 1 on an error (the chain is unchanged); 64 for wrong arguments.
            """)

    @OptionGroup var storeOptions: StoreOptions
    @Flag(name: .long, help: "Print JSON for scripts (chpox.rebase/1).")
    var json = false
    @Option(name: .long, help: "The chain (default: the store's only chain).")
    var name: String?
    @Option(name: .long, parsing: .unconditional, help: "The generation to make full (default: the oldest).")
    var generation: UInt64?

    func run() throws {
        try reportingErrors("cpx rebase") {
            let store = try storeOptions.open()
            let name = try store.chainName(name)
            let chain = try store.chain(name)
            guard let target = generation ?? chain.entries.first?.generation else { throw StoreError.noSuchChain(name) }
            let entry = try store.rebase(chain: name, generation: target)
            print(
                json
                    ? StoreReports.rebaseJSON(entry, chain: name, store: store.location)
                    : "\(name) generation \(entry.generation) is now full (manifest \(entry.manifest.short))")
        }
    }
}

struct Copy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy chains from one store to another: a local store and one on S3, either way.",
        discussion: """
            Manifests are copied byte for byte (the copy is the same chain, with the same ids), with every chunk \
            they use that the destination lacks, each checked against its id as it is read. A destination that \
            holds an earlier copy of a chain gets only the newer generations; one whose chain differs is refused. \
            The destination commits each chain at once, as a generation: a copy that fails or is killed leaves \
            nothing half-copied there.

            Examples: `cpx copy --store ~/.local/state/chpox --to s3://ckpt/hosts/a --name job` (push a chain \
            before a migration); `cpx copy --store s3://ckpt/hosts/a --to /srv/chpox` (every chain, to a local store).

            Exit status: 0 when every chain was copied (or was there already); 1 on an error; 64 for wrong arguments.
            """)

    @OptionGroup var storeOptions: StoreOptions
    @Option(name: .long, help: "The store to copy into: a directory or s3://BUCKET/PREFIX (made when missing).")
    var to: String
    @Option(name: .long, help: "A chain to copy (repeatable; default: every chain of --store).")
    var name: [String] = []
    @Flag(name: .long, help: "Print JSON for scripts (chpox.copy/1).")
    var json = false

    func run() throws {
        try reportingErrors("cpx copy") {
            let source = try storeOptions.openToRead()
            let destination = try storeOptions.open(to, create: true)
            let names = name.isEmpty ? try source.chainNames() : name
            var reports: [ChainCopyReport] = []
            for chain in names {
                let progress = ProgressLine("copying \(chain)")
                let report = try source.copyChain(chain, to: destination, progress: progress.update)
                progress.finish()
                reports.append(report)
                if !json { print(StoreReports.copyText(report, to: destination.location)) }
            }
            if json { print(StoreReports.copyJSON(reports, from: source.location, to: destination.location)) }
        }
    }
}

struct RebuildIndex: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild-index",
        abstract: "Rebuild the chunk index from the packs alone (after index damage).",
        discussion: """
            Reads every pack's trailer and replaces the index with what they list; a pack whose trailer is damaged \
            is reported and left out. Run it when `dumpinfo --verify` names the index as damaged.

            Example: `cpx rebuild-index --store /srv/chpox`.

            Exit status: 0 when the index was rebuilt (skipped packs are listed); 1 on an error.
            """)

    @OptionGroup var storeOptions: StoreOptions
    @Flag(name: .long, help: "Print JSON for scripts (chpox.rebuild-index/1).")
    var json = false

    func run() throws {
        try reportingErrors("cpx rebuild-index") {
            let store = try storeOptions.open()
            let result = try store.rebuildIndex()
            if json {
                print(
                    StoreReports.rebuildIndexJSON(
                        chunks: result.chunks, packs: result.packs, skipped: result.skipped, store: store.location))
            } else {
                print("indexed \(result.chunks) chunks from \(result.packs) packs")
                for problem in result.skipped { print("skipped \(problem.file): \(problem.message)") }
            }
            if !result.skipped.isEmpty { throw ExitCode.failure }
        }
    }
}
