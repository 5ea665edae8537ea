#if canImport(Glibc)
import Glibc
#endif
import Store
import Syscall
import Tracee

/// Restarts a process from a generation, without a kernel module (DESIGN.md, "Restart"): the
/// plan's checks, then a stub process is started and stopped with ptrace, and the plan's phases
/// (Phases/) rebuild the saved process in it by system calls run from a trampoline page. Nothing
/// runs from the trampoline after it is unmapped: the last call unmaps it, and the registers are
/// set before the process runs again.
public final class Restorer {
    public struct Options: Sendable {
        /// Fail rather than take a new pid when the saved one is taken (a tree: rather than
        /// restart in a new PID namespace).
        public var requireSamePid = false
        /// Run it in ld-chpox's control groups where they differ from the saved ones (a notice
        /// says so) instead of refusing.
        public var otherControlGroups = false
        /// Let the processes run before their memory is in (`ld-chpox --lazy`): their anonymous
        /// memory is filled on first touch and streamed in meanwhile by `Outcome.pageServer`,
        /// which the caller must `finish` (root only: userfaultfd fork events need CAP_SYS_PTRACE).
        public var lazy = false
        /// In a lazy restart, stream the pages in this many seconds after the processes run
        /// (until then only the pages they touch are filled), or once they have all ended.
        public var lazyStreamDelay = 0.0
        public init() {}
    }

    /// What a restart did.
    public struct Outcome: Sendable {
        public var pid: Int32
        public var originalPid: Int32
        public var mappings: Int
        public var pagesWritten: Int
        /// Of those, the pages put in by UFFDIO_COPY (`PageCopier`).
        public var pagesCopied = 0
        public var child: ChildProcess
        /// What the restart changed outside the process (files cut back).
        public var notices: [String] = []
        /// Every process restarted: the first one, then the rest of its tree.
        public var processes: [Int32] = []
        /// Their saved pids, in the same order: their pids inside a new PID namespace.
        public var originalProcesses: [Int32] = []
        /// The init of the new PID namespace the tree runs in (its pid here; `child`), where
        /// its pids were taken; nil where it runs with its pids here.
        public var namespaceInit: Int32?
        /// The TCP connections made again closed (`closingConnections`, `cpx --tcp-close`), one
        /// line each: "process PID fd N: LOCAL to REMOTE".
        public var closedConnections: [String] = []
        /// The files put back as they were at the generation, each with the name the file that
        /// was there has now (`RestoredFiles`).
        public var restoredFiles: [RestoredFiles.Restored] = []
        /// A lazy restart's page server, filling the processes' memory as they run: `finish()`
        /// waits until every page is in (the processes are killed if it fails).
        public var pageServer: LazyPageServer?
        /// Where the time went, from the call until the processes were let go.
        public var timings = RestartTimings()
    }

    public let image: ProcessImage
    public let map: PageMap
    public let store: Store
    public let generation: UInt64
    /// The chain the generation is of: the restarted process joins its lineage (nil: it joins
    /// none, and a `cpx` of it into any chain is a new process's).
    public let chain: String?
    /// How long `load` took to read the generation from the store (0 when made otherwise): the
    /// first step of the restart's `timings`.
    public private(set) var storeReadNanoseconds: Int64 = 0

    public init(image: ProcessImage, map: PageMap, store: Store, generation: UInt64, chain: String? = nil) {
        self.image = image
        self.map = map
        self.store = store
        self.generation = generation
        self.chain = chain
    }

    /// Generation `generation` of chain `chain` (default: its newest), rebuilt and ready to
    /// restart or inspect.
    public static func load(_ store: Store, chain name: String, generation: UInt64?) throws -> Restorer {
        let start = ClockTime.monotonic()
        let (entry, manifest, map) = try store.rebuild(chain: name, generation: generation)
        let target = entry.generation
        guard !manifest.metadata.isEmpty else {
            throw CheckpointError.badImage(
                generation: target, reason: "it holds pages but no process image (written by something other than cpx)")
        }
        let image = try ProcessImage(decoding: manifest.metadata, generation: target)
        let restorer = Restorer(image: image, map: map, store: store, generation: target, chain: name)
        restorer.storeReadNanoseconds = ClockTime.monotonic() - start
        return restorer
    }

    /// This generation with every TCP connection (established or half closed) made again
    /// closed (`ld-chpox --tcp-close`), for programs that reconnect: each socket comes back at
    /// its descriptors not connected and shut down (`InetSocket.State.closed`), and the hold of
    /// those `cpx --kill --tcp-established` held is released, so that their peers are reset.
    public func closingConnections() -> Restorer {
        let restorer = Restorer(
            image: image.closingConnections(), map: map, store: store, generation: generation, chain: chain)
        restorer.storeReadNanoseconds = storeReadNanoseconds
        return restorer
    }

    /// What a restart of this generation will do.
    public var plan: RestartPlan { RestartPlan(image: image, generation: generation) }

    /// What a restart of this generation will do, lazily where `lazy` (a single process only:
    /// a tree is restarted whole).
    public func plan(lazy: Bool) -> RestartPlan {
        RestartPlan(image: image, generation: generation, lazy: lazy && image.processes.count == 1)
    }

    /// Who the image may become: at most its store's owner.
    public var authority: ImageAuthority { ImageAuthority(store: store) }

    /// Throws the reason a restart would be refused now (`Preflight`).
    public func check(otherControlGroups: Bool = false, requireSamePid: Bool = false) throws(CheckpointError) {
        try plan.preflight.check(
            authority: authority, otherControlGroups: otherControlGroups, requireSamePid: requireSamePid)
    }

    /// Starts the stub, rebuilds the process in it and lets it run; a tree's other processes
    /// are forked from their parents' stubs first (`RestartPlan`). A failure at any step kills
    /// every stub and leaves every file as it was (files are cut back only by the last phases).
    /// The process is added to the chain's lineage, so that `cpx` continues the chain with it;
    /// where that cannot be recorded, a notice says so.
    public func restart(options: Options = Options()) throws(CheckpointError) -> Outcome {
        // A tree is restarted whole (`RestartPlan`): no page server, no guardian.
        var timings = RestartTimings()
        if storeReadNanoseconds > 0 { timings.add("store read", nanoseconds: storeReadNanoseconds) }
        let lazy = options.lazy && image.processes.count == 1
        let plan = self.plan(lazy: lazy)
        if lazy && CurrentProcess.effectiveUserID != 0 {
            throw .cannotRestart(
                generation: generation,
                reason: "a lazy restart needs root: the page server follows the process's forks through its "
                    + "userfaultfd, which takes CAP_SYS_PTRACE; restart without --lazy")
        }
        // The page server's guardian is spawned meanwhile: its start overlaps the checks and the stub's.
        let store = self.store
        let hintChain = chain
        let starting =
            lazy
            ? LazyPageServer.Starting(
                store: store, hint: { hintChain.flatMap { store.touchOrder(of: $0)?.pages } ?? [] })
            : nil
        ConnectionHold.releaseStale()
        // The holds of its connections to peers outside the tree are this restart's from now
        // (`PacketFilter.Owner`): a cpx or ld-chpox run beside it must not take them for stale
        // once it has made their sockets and before it releases them.
        let outside = Set(ProcessImage.outsideConnections(image.processes).map(\.connection))
        if !outside.isEmpty { _ = try? PacketFilter.takeOver(outside) }
        try plan.preflight.check(
            authority: authority, otherControlGroups: options.otherControlGroups,
            requireSamePid: options.requireSamePid)
        // A tree keeps its pids: its processes know each other by them. Where one is taken, it
        // keeps them in a new PID namespace (`Preflight.checkPids`).
        timings.mark("checks")
        let isTree = plan.preflight.isTree
        let taken = isTree ? plan.preflight.takenPids.map(\.pid) : []
        // The files the generation kept, as they were, before any process opens them; put back
        // as they are now if the restart fails.
        let files = RestoredFiles(image: image, map: map, generation: generation, chain: chain)
        let restoredFiles = try files.restore(store: store, authority: authority)
        var keepFiles = false
        defer { if !keepFiles { RestoredFiles.undo(restoredFiles) } }
        if !restoredFiles.isEmpty { timings.mark("files put back") }
        let child: ChildProcess, stub: Int32
        if taken.isEmpty {
            child = try StubProcess.start(
                pid: image.pid, generation: generation, requireSamePid: options.requireSamePid || isTree)
            stub = child.pid
        } else {
            (child, stub) = try StubProcess.startInPidNamespace(pid: image.pid, generation: generation)
        }
        timings.mark("stub started")
        var sessions: [RestartSession] = []
        var keepers: [(group: Int32, process: FrozenProcess, forker: RestartSession)] = []
        var pageServer: LazyPageServer?
        do {
            let tree = RestartTree()
            if let starting {
                do { pageServer = try starting.take() } catch {
                    throw CheckpointError.cannotRestart(
                        generation: generation, reason: "cannot start the lazy restart's guardian process: \(error)")
                }
                tree.pageServer = pageServer
                timings.mark("page server and guardian started")
            }
            tree.namespace = !taken.isEmpty
            tree.trustedAsRoot = authority.trustedAsRoot(restartedBy: CurrentProcess.userID)
            let root = try RestartSession(
                stub: stub, image: image, store: store, map: map.space(0), generation: generation, tree: tree)
            sessions.append(root)
            tree.root = root
            timings.mark("stub stopped and prepared")
            try root.setGroups(plan.processes[0].groups)
            let images = image.processes
            var moved: [String] = []
            // Each process, parents first: forked by its parent once the parent's memory is
            // rebuilt (it starts with that memory and keeps the pages it shared copy-on-write),
            // given its session, group and control groups (before its memory is made, so that it
            // is charged there), then its own memory: the phases it runs alone (`ProcessPlan.inStep`).
            for (k, process) in plan.processes.enumerated() {
                if k > 0 {
                    guard let parent = sessions.first(where: { $0.image.pid == process.parent }) else {
                        throw CheckpointError.badImage(
                            generation: generation,
                            reason: "process \(process.pid) comes before its parent \(process.parent ?? 0) in the image"
                        )
                    }
                    let sharing = process.descriptorTableOf != nil
                    let session = try RestartSession(
                        process: try parent.fork(pid: process.pid, sharingDescriptors: sharing),
                        image: images[k], store: store, map: map.space(process.space), generation: generation,
                        tree: tree, forkedFrom: parent, sharesDescriptorTable: sharing)
                    sessions.append(session)
                    if case .join = process.groups {} else { try session.setGroups(process.groups) }
                }
                if !options.otherControlGroups,
                    let placement = try Preflight(image: images[k], generation: generation)
                        .controlGroupPlacement(authority: authority)
                {
                    do {
                        try placement.move(sessions[k].pid)
                    } catch {
                        throw CheckpointError.cannotRestart(
                            generation: generation,
                            reason: "move process \(process.pid) into \(placement.files.joined(separator: ", ")): "
                                + "\(error)")
                    }
                    moved.append("process \(process.pid) into \(placement.files.count) control group(s)")
                }
                for phase in process.phases[..<process.inStep] {
                    try phase.run(in: sessions[k])
                    timings.mark(phase.name)
                }
            }
            for (group, forker) in plan.layout.groupKeepers.sorted(by: { $0.key < $1.key }) {
                guard let session = sessions.first(where: { $0.image.pid == forker }) else {
                    throw CheckpointError.badImage(
                        generation: generation,
                        reason: "process group \(group)'s keeper's parent \(forker) is not in it")
                }
                keepers.append((group, try session.forkGroupKeeper(group), session))
            }
            for zombie in plan.zombies {
                guard let parent = sessions.first(where: { $0.image.pid == zombie.parent }) else {
                    throw CheckpointError.badImage(
                        generation: generation, reason: "zombie \(zombie.pid)'s parent \(zombie.parent) is not in it")
                }
                try parent.forkZombie(zombie)
            }
            for (k, process) in plan.processes.enumerated() {
                if case .join = process.groups { try sessions[k].setGroups(process.groups) }
            }
            while let keeper = keepers.last {
                try keeper.forker.endGroupKeeper(keeper.process, of: keeper.group)
                keepers.removeLast()  // reaped: its pid may be another's now
            }
            let phases = plan.processes.map(\.phases.count).max() ?? 0
            for phase in 0..<phases {
                for (k, process) in plan.processes.enumerated()
                where process.inStep <= phase && phase < process.phases.count {
                    try process.phases[phase].run(in: sessions[k])
                    timings.mark(process.phases[phase].name)
                }
            }
            // Threads that ran in other groups than their process: one by one, now that they exist.
            for (k, process) in images.enumerated() where !options.otherControlGroups {
                let placements = try Preflight(image: process, generation: generation)
                    .threadControlGroupPlacements(authority: authority)
                for (saved, placement) in placements {
                    guard let tid = sessions[k].threadIDs[saved] else {
                        throw CheckpointError.cannotRestart(
                            generation: generation, reason: "thread \(saved) of process \(process.pid) was not created")
                    }
                    do {
                        try placement.move(tid)
                    } catch {
                        throw CheckpointError.cannotRestart(
                            generation: generation,
                            reason: "move thread \(saved) of process \(process.pid) into "
                                + "\(placement.files.joined(separator: ", ")): \(error)"
                                + (placement.files.contains { $0.hasSuffix("/cgroup.threads") }
                                    ? " (a cgroup v2 group takes single threads only where it is threaded)" : ""))
                    }
                    moved.append(
                        "thread \(saved) of process \(process.pid) into \(placement.files.count) control group(s)")
                }
            }
            var notices = sessions.flatMap(\.notices)
            if options.lazy && !lazy {
                notices.append(
                    "--lazy serves a single process: this tree of \(images.count) processes was filled whole (a child "
                        + "forked from its parent's memory must have its own pages written over its parent's)")
            }
            notices += restoredFiles.map {
                "put back \($0.path) as it was at generation \(generation)"
                    + ($0.displaced.map { ", the file that was there kept as \($0)" } ?? " (there was none)")
            }
            notices += files.notKeptNotices
            if !taken.isEmpty { notices.insert(plan.preflight.namespaceNotice(taken: taken, root: stub), at: 0) }
            notices += plan.preflight.notRestored.map { "not restored (skipped at the checkpoint): \($0)" }
            if options.otherControlGroups, let change = plan.preflight.controlGroupChange {
                notices.append("\(change) (--other-cgroups)")
            }
            for process in images where options.otherControlGroups {
                for thread in process.threads where thread.cgroups != nil {
                    notices.append(
                        "thread \(thread.tid) of process \(process.pid) ran in other control groups than its process "
                            + "and runs in its process's now (--other-cgroups)")
                }
            }
            notices += moved.map { "moved \($0) it ran in" }
            if let chain,
                let notice = ChainOwnership.recordRestart(
                    store: store, chain: chain, generation: generation, pid: stub)
            {
                notices.append(notice)
            }
            // In a new PID namespace, its own /proc before any process runs again (the init mounts
            // it on SIGUSR1); without it a process reading /proc/<its pid> would read another's.
            if !taken.isEmpty {
                guard Self.giveOwnProc(to: child) else {
                    throw CheckpointError.cannotRestart(
                        generation: generation,
                        reason: "the new PID namespace's init (pid \(child.pid)) did not mount a /proc of its own: "
                            + "its processes would see the host's /proc under their pids")
                }
            }
            // The connections to peers outside the tree that `cpx --kill` held have their sockets
            // again (out of repair mode): their packets may flow. Those made again closed have
            // none: released, their peer's next packet is answered with a reset.
            let closed = ProcessImage.closedConnections(images)
            notices += closed.map {
                "closed (--tcp-close): process \($0.pid) fd \($0.fd), the TCP connection \($0.connection): its next "
                    + "read returns end of file, its next write fails with EPIPE"
            }
            notices += ProcessImage.externalUnixNotices(images)
            let releasing = outside.union(closed.map(\.connection))
            if !releasing.isEmpty {
                do {
                    let released = try PacketFilter.release(releasing)
                    if !released.isEmpty {
                        notices.append(
                            "released the hold of \(released.count) connection(s) to peers outside the tree: "
                                + released.map(\.description).sorted().joined(separator: ", "))
                    }
                } catch {
                    notices.append(
                        "could not look for held connections to release (\(error)): the next cpx or ld-chpox "
                            + "releases any left")
                }
            }
            timings.mark("lineage recorded, holds released")
            // Let go children first; a stopped process gets its stop signal as it is let go
            // (SIGSTOP where that one did not stop it: SIGTSTP and the like are ignored in an
            // orphaned process group).
            for (k, process) in plan.processes.enumerated().reversed() {
                if process.stopped { try? Signal.send(process.stopSignal, to: sessions[k].pid) }
                sessions[k].process.thaw()
            }
            for (k, process) in plan.processes.enumerated() where process.stopped && process.stopSignal != SIGSTOP {
                var state: Character = "?"
                for _ in 0..<200 {
                    state = (try? ProcFS.state(sessions[k].pid)) ?? "?"
                    if state == "T" { break }
                    CurrentProcess.sleep(microseconds: 1000)
                }
                if state != "T" {
                    try? Signal.send(SIGSTOP, to: sessions[k].pid)
                    notices.append(
                        "process \(process.pid) was stopped by signal \(process.stopSignal), which did not stop it "
                            + "now: stopped by SIGSTOP instead")
                }
            }
            keepFiles = true
            pageServer?.letGo(after: options.lazyStreamDelay)
            timings.mark("let go")
            return Outcome(
                pid: stub, originalPid: image.pid, mappings: image.mappings.count,
                pagesWritten: sessions.map(\.pagesWritten).reduce(0, +),
                pagesCopied: sessions.map(\.pagesCopied).reduce(0, +),
                child: child, notices: notices, processes: sessions.map(\.pid),
                originalProcesses: sessions.map(\.image.pid), namespaceInit: taken.isEmpty ? nil : child.pid,
                closedConnections: closed.map { "process \($0.pid) fd \($0.fd): \($0.connection)" },
                restoredFiles: restoredFiles, pageServer: pageServer, timings: timings)
        } catch {
            pageServer?.cancel()
            for session in sessions.dropFirst().reversed() { try? Signal.send(SIGKILL, to: session.pid) }
            // A process made for dead pidfds runs the image's memory if let go: killed first.
            for stand in sessions.first?.tree.deadProcesses.values.map(\.process) ?? [] {
                try? Signal.send(SIGKILL, to: stand.pid)
                stand.thaw()
                if !(sessions.first?.tree.namespace ?? false) { _ = try? ChildProcess(child: stand.pid).wait() }
            }
            sessions.first?.tree.deadProcesses = [:]
            for keeper in keepers {
                try? Signal.send(SIGKILL, to: keeper.process.pid)
                keeper.process.thaw()
            }
            try? child.send(SIGKILL)
            for session in sessions.reversed() { session.process.thaw() }
            // A thread that died traced waits for ld-chpox to reap it; its process cannot end before.
            for session in sessions.reversed() { session.process.reapKilledThreads() }
            // Every death of a process ld-chpox traces is reported to it before its parent may
            // reap it: a namespace's init waits for its killed processes, so they are collected
            // here until the init itself is (`ChildProcess.reapAll`: any child of this process).
            if taken.isEmpty { _ = try? child.wait() } else { ChildProcess.reapAll(until: child.pid) }
            throw Checkpointer.classify(error, pid: stub)
        }
    }
}

extension Restorer {
    /// Tells a PID namespace's init the restart is done (SIGUSR1: it lives on without
    /// ld-chpox and mounts the namespace's own /proc), repeating until that mount shows in its
    /// mountinfo; false after two seconds.
    static func giveOwnProc(to initProcess: ChildProcess) -> Bool {
        func procMounts() -> Int {
            let text = (try? ProcFS.bytes(initProcess.pid, "mountinfo")).map { String(decoding: $0, as: UTF8.self) }
            return (text ?? "").split(separator: "\n").filter { line in
                let fields = line.split(separator: " ")
                guard let dash = fields.firstIndex(of: "-"), fields.count > dash + 1, fields.count > 4 else {
                    return false
                }
                return fields[4] == "/proc" && fields[dash + 1] == "proc"
            }.count
        }
        let before = procMounts()
        for _ in 0..<100 {
            guard (try? initProcess.send(SIGUSR1)) != nil else { return false }
            CurrentProcess.sleep(microseconds: 20_000)
            if procMounts() > before { return true }
        }
        return false
    }
}
