import Syscall
import Tracee

/// What is checked before a stub is started, so that a restart that cannot succeed is refused
/// with a reason and changes nothing: the files mapped still there and long enough, the files
/// being written not shorter than they were, who may restart the image, a vDSO it can have
/// (`VDSOProxy`). (The one change a restart makes outside the process, cutting back files it was
/// writing, is `WrittenFilesPhase`'s, after every other phase.)
public struct Preflight: Sendable {
    public let image: ProcessImage
    public let generation: UInt64
    /// Files the restart puts back as they were (`RestoredFiles`) before anything opens them:
    /// whether they are there now and how long does not matter.
    public let restoredFiles: Set<String>

    public init(image: ProcessImage, generation: UInt64, restoredFiles: Set<String>? = nil) {
        self.image = image
        self.generation = generation
        self.restoredFiles =
            restoredFiles ?? Set((image.files ?? []).filter { $0.state == .recorded }.map(\.path))
    }

    /// What the process held that the restart runs without (recorded at the checkpoint under
    /// --skip-unsupported): said on every restart and by `ld-chpox --check`.
    public var notRestored: [String] { image.processes.flatMap(\.unsupported) }

    private func refuse(_ reason: String) -> CheckpointError { .cannotRestart(generation: generation, reason: reason) }

    /// Throws the first reason this generation cannot restart here and now, its ids checked
    /// against what its store's owner may grant (`authority`).
    /// `otherControlGroups`: the user accepts running it in ld-chpox's control groups where
    /// they differ from the saved ones (`controlGroupChange` says how, for a notice).
    /// `requireSamePid`: a tree whose pids are taken is refused rather than restarted in a new
    /// PID namespace.
    public func check(
        authority: ImageAuthority, otherControlGroups: Bool = false, requireSamePid: Bool = false
    ) throws(CheckpointError) {
        guard isTree else {
            return try checkProcess(authority: authority, otherControlGroups: otherControlGroups)
        }
        try checkPids(requireSamePid: requireSamePid)
        if let reason = TreeLayout.descriptorTableRefusals(image.processes).first { throw refuse(reason) }
        for process in image.processes {
            do throws(CheckpointError) {
                try Preflight(image: process, generation: generation, restoredFiles: restoredFiles).checkProcess(
                    authority: authority, otherControlGroups: otherControlGroups)
            } catch .cannotRestart(_, let reason) where process.pid != image.pid {
                throw refuse("process \(process.pid) of its tree: \(reason)")
            }
        }
    }

    /// A process tree (more than one process, or zombie children): its processes know each
    /// other by their pids.
    public var isTree: Bool { image.tree?.isEmpty == false || image.zombies?.isEmpty == false }

    /// The pids of the tree taken here now: each with whose it was and what has it now.
    public var takenPids: [(pid: Int32, of: String, by: String)] {
        let pids =
            image.processes.map { ($0.pid, $0.command.first ?? "?") }
            + (image.zombies ?? []).map { ($0.pid, "a zombie child") }
            + TreeLayout(image: image).groupKeepers.keys.sorted().map { ($0, "the leader of process group \($0)") }
        return pids.compactMap { pid, what in
            (try? ProcFS.stat(pid)).map { (pid, what, $0.command) }
        }
    }

    /// A tree restarts with its own pids: its processes know each other by them (a parent kills
    /// or waits for its child's). Where one is taken, it restarts in a new PID namespace, in
    /// which each has its own (`namespaceNotice`): only root makes one; `requireSamePid` refuses.
    func checkPids(requireSamePid: Bool) throws(CheckpointError) {
        guard let (pid, what, now) = takenPids.first else { return }
        let advice =
            "end that process, or wait until it is gone (a killed tree's pids are free once their parent or init "
            + "reaps them)"
        let why = "a process tree restarts with the pids it had, which its processes know each other by"
        if requireSamePid {
            throw refuse(
                "pid \(pid), \(what)'s, is taken by \(now) now: \(why) (--require-same-pid: not in a new PID "
                    + "namespace); \(advice)")
        }
        guard CurrentProcess.effectiveUserID == 0 else {
            throw refuse(
                "pid \(pid), \(what)'s, is taken by \(now) now: \(why), in a new PID namespace where they are "
                    + "taken, and only root makes one; \(advice), or restart it as root")
        }
        if image.processes.contains(where: { $0.pid == 1 }) || image.zombies?.contains(where: { $0.pid == 1 }) == true
            || TreeLayout(image: image).groupKeepers[1] != nil
        {
            throw refuse(
                "pid \(pid), \(what)'s, is taken by \(now) now, and its tree has pid 1, which in a new PID namespace "
                    + "is the namespace's own init; \(advice)")
        }
    }

    /// What a restart in a new PID namespace says: the pids that were taken, and `root`, the
    /// root process's pid outside it.
    public func namespaceNotice(taken pids: [Int32], root: Int32) -> String {
        let taken = pids.map { "\($0)" }
        return "restarted in a new PID namespace: "
            + (taken.count == 1 ? "pid \(taken[0]) is" : "pids \(taken.joined(separator: ", ")) are")
            + " taken here; inside it every process has its own pid; seen from outside, pid \(root) is \(image.pid)"
    }

    /// The checks of one process of the image.
    private func checkProcess(authority: ImageAuthority, otherControlGroups: Bool) throws(CheckpointError) {
        if let excess = authority.excess(image.credentials) { throw refuse(excess) }
        for thread in image.threads {
            guard let own = thread.credentials else { continue }
            if let excess = authority.excess(own) { throw refuse("thread \(thread.tid): \(excess)") }
            // Only root gives a thread ids of its own (setresuid on that thread alone).
            if CurrentProcess.effectiveUserID != 0
                && (own.user.all + own.group.all) != (image.credentials.user.all + image.credentials.group.all)
            {
                throw refuse(
                    "thread \(thread.tid) has its own user or group ids (uid \(own.user.all.prefix(3)), gid "
                        + "\(own.group.all.prefix(3))): only root restores them; restart it as root")
            }
        }
        // The ids an I/O signal owner was set with are a grant too (they let a signal through).
        if authority.groups != nil || CurrentProcess.effectiveUserID != 0,
            let owned = image.descriptors.first(where: { descriptor in
                descriptor.signalOwner.map { owner in
                    [owner.uid, owner.euid].contains { $0 != authority.owner || $0 != CurrentProcess.effectiveUserID }
                } ?? false
            })
        {
            throw refuse(
                "fd \(owned.fd)'s I/O signal owner was set with uid \(owned.signalOwner?.uid ?? 0) and euid "
                    + "\(owned.signalOwner?.euid ?? 0): only root restarting a store only root can write gives other ids"
            )
        }
        for mapping in image.mappings where mapping.backing == .privateFile || mapping.backing == .sharedFile {
            guard !mapping.path.hasSuffix(" (deleted)"), !restoredFiles.contains(mapping.path) else { continue }
            guard let status = Self.status(mapping.path) else {
                throw refuse(
                    "\(mapping.path), mapped at 0x\(String(mapping.start, radix: 16)), no longer exists; "
                        + "put it back to restart"
                )
            }
            guard status.size > Int64(mapping.offset) || mapping.offset == 0 else {
                throw refuse(
                    "\(mapping.path) is \(status.size) bytes now, "
                        + "shorter than its mapping at offset \(mapping.offset) needs"
                )
            }
        }
        // Every file it had open, read or written, must be there (on another host too: a
        // migration's files are named here, before anything is made). A file open for reading,
        // as a name (lstat: a symlink's own name counts); the kernel's files (/proc of the process itself, /sys, /dev) are the phases'
        // to reopen or refuse.
        for descriptor in image.descriptors where descriptor.kind == .file {
            guard !restoredFiles.contains(descriptor.target) else { continue }
            let missing =
                "\(descriptor.target), open as descriptor \(descriptor.fd), no longer exists (on this machine); put it back to restart"
            guard let size = descriptor.size else {
                let kernels = ["/proc/", "/sys/", "/dev/"].contains { descriptor.target.hasPrefix($0) }
                let named = try? FileDescriptor.currentDirectory.status(of: descriptor.target, followingSymlinks: false)
                if !kernels && named == nil { throw refuse(missing) }
                continue
            }
            guard let status = Self.status(descriptor.target) else { throw refuse(missing) }
            guard status.size >= size else {
                throw refuse(
                    "\(descriptor.target) is \(status.size) bytes, shorter than the \(size) it had at this generation: "
                        + "what the process wrote is gone (restored from a later generation's run?); "
                        + "restore the file or restart an earlier generation"
                )
            }
        }
        // A user restarts only their own images; root restores the image's own ids, never more.
        let me = CurrentProcess.userID
        if me != 0, let owner = image.credentials.user.all.first(where: { $0 != me }) {
            throw refuse("it ran as uid \(owner); only root or that user can restart it")
        }
        if let root = image.rootDirectory {
            guard me == 0 else {
                throw refuse("it ran chrooted in \(root), and only root can chroot: restart it as root")
            }
            guard authority.groups == nil else {
                throw refuse(
                    "it ran chrooted in \(root), and its store is uid \(authority.owner)'s: a chroot is restored only "
                        + "from a store only root can write (a chroot into a directory its user controls could lead "
                        + "a set-user-id program there to trust files the user wrote)")
            }
        }
        // Only root sets supplementary groups: a user's restart keeps ld-chpox's, so they must be the same.
        if me != 0, let mine = try? ProcFS.status(CurrentProcess.id).groups, mine != image.credentials.groups {
            throw refuse(
                "it ran with supplementary groups \(image.credentials.groups) and ld-chpox has \(mine); "
                    + "only root can set them: restart it as root, or from a login with those groups")
        }
        // The stub is ld-chpox's child, in ld-chpox's control groups: a process that ran in
        // others would run with other limits and accounting (and a program that reads its own
        // cgroup finds another). Moving a process between cgroups is the caller's to decide.
        if !otherControlGroups {
            _ = try controlGroupPlacement(authority: authority)
            _ = try threadControlGroupPlacements(authority: authority)
        }
        // The kernel's vDSO: the same, or one the image's can be a proxy for (`VDSOProxy`).
        do throws(VDSOProxy.Refusal) {
            _ = try VDSOProxy.plan(image, running: VDSOProxy.running)
        } catch {
            throw refuse(error.description)
        }
    }

    /// Where the process is moved to run in the control groups it ran in, where they differ
    /// from ld-chpox's (which the stub inherits); nil when they do not. Only root moves a
    /// process, and only for an image of a store only root can write (a cgroup is a grant);
    /// otherwise, or when a group cannot be found here, the reason is thrown.
    public func controlGroupPlacement(authority: ImageAuthority) throws(CheckpointError) -> ControlGroupPlacement? {
        guard let change = controlGroupChange, let saved = image.cgroups else { return nil }
        let advice = "run ld-chpox from within the process's control groups, or accept ld-chpox's with --other-cgroups"
        guard authority.owner == 0, CurrentProcess.effectiveUserID == 0 else {
            throw refuse(
                "\(change): only root restarting an image of a store only root can write moves it into its "
                    + "control groups; \(advice)")
        }
        let own = (try? ProcFS.bytes(CurrentProcess.id, "cgroup")).map {
            String(decoding: $0, as: UTF8.self).split(separator: "\n").map(String.init)
        }
        do {
            return try ControlGroupPlacement.resolve(
                saved: saved, below: image.cgroupsBelow ?? [], own: own ?? [], mounts: ControlGroupMounts())
        } catch {
            throw refuse("\(change): \(error); \(advice)")
        }
    }

    /// Where each thread that ran in other control groups than its process is moved (one by
    /// one, once the threads exist: they start in their process's), by saved thread id; the
    /// same rules as the process's (`controlGroupPlacement`), and the reason where one cannot be.
    public func threadControlGroupPlacements(
        authority: ImageAuthority
    ) throws(CheckpointError) -> [(tid: Int32, placement: ControlGroupPlacement)] {
        let threads = image.threads.compactMap { thread in thread.cgroups.map { (thread.tid, $0) } }
        guard !threads.isEmpty else { return [] }
        let advice = "accept its process's groups for them with --other-cgroups"
        guard authority.owner == 0, CurrentProcess.effectiveUserID == 0 else {
            throw refuse(
                "thread \(threads[0].0) ran in other control groups than its process: only root restarting an image "
                    + "of a store only root can write moves it there; \(advice)")
        }
        let mounts = ControlGroupMounts()
        var placements: [(tid: Int32, placement: ControlGroupPlacement)] = []
        for (tid, lines) in threads {
            do {
                placements.append(
                    (
                        tid,
                        try ControlGroupPlacement.resolve(
                            saved: lines, below: [], own: image.cgroups ?? [], mounts: mounts, thread: true)
                    ))
            } catch {
                throw refuse("thread \(tid) ran in other control groups than its process: \(error); \(advice)")
            }
        }
        return placements
    }

    /// How the control groups it ran in differ from ld-chpox's, which the stub inherits; nil
    /// when they do not (or the image did not record them).
    public var controlGroupChange: String? {
        guard let saved = image.cgroups, let own = try? ProcFS.bytes(CurrentProcess.id, "cgroup") else { return nil }
        let here = String(decoding: own, as: UTF8.self).split(separator: "\n").map(String.init)
        let differing = saved.filter { !here.contains($0) }
        guard !differing.isEmpty else { return nil }
        return "it ran in control groups \(differing.joined(separator: ", ")), and ld-chpox runs in "
            + here.filter { !saved.contains($0) }.joined(separator: ", ")
    }

    /// What stat(2) says of `path`, through symlinks; nil when it cannot be reached.
    static func status(_ path: String) -> FileDescriptor.Status? {
        try? FileDescriptor.currentDirectory.status(of: path, followingSymlinks: true)
    }
}
