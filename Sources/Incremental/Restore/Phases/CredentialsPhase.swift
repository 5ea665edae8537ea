import CLinux
import Syscall
import Tracee

/// What the process may do: its resource limits (set from outside, prlimit), then, when root
/// restarts another user's image, its group ids and user ids, last of all calls that need
/// privilege (its supplementary groups came first, with the filesystem ids: `FileAccessPhase`),
/// on every thread; its bounding set is narrowed just before, while the thread may still.
public struct CredentialsPhase: RestartPhase {
    public var limits: [ProcessImage.ResourceLimit]
    public var credentials: ProcessImage.Credentials
    /// The ids of threads whose own differ from the process's, by their tid in the image.
    public var threadCredentials: [Int32: ProcessImage.Credentials]
    /// The threads (by their tid in the image) whose secure bits hold SECBIT_KEEP_CAPS (the
    /// only secure bit set again: the checkpoint lists any other as not restored).
    public var keepCaps: Set<Int32>
    let pid: Int32

    /// SECBIT_KEEP_CAPS (linux/securebits.h), what PR_SET_KEEPCAPS sets.
    static let keepCapsBit: UInt32 = 1 << 4
    /// The corresponding C constant is PR_SET_KEEPCAPS (linux/prctl.h).
    static let setKeepCaps: Int32 = 8

    public var name: String { "limits and credentials" }
    public var steps: [String] {
        limits.map { "limit \($0.name): \($0.soft) / \($0.hard)" }
            + (changesIds(asUser: 0)
                ? [
                    "gid \(credentials.group.all.prefix(3)), uid \(credentials.user.all.prefix(3))"
                ] : [])
            + threadCredentials.sorted { $0.key < $1.key }.map {
                "thread \($0.key): gid \($0.value.group.all.prefix(3)), uid \($0.value.user.all.prefix(3))"
            }
            + keepCaps.sorted().map {
                "thread \($0): keep capabilities across a change of user ids (PR_SET_KEEPCAPS; before the ids "
                    + "change only for root restarting a store only root can write)"
            }
    }

    public init(image: ProcessImage) {
        limits = image.limits
        credentials = image.credentials
        pid = image.pid
        threadCredentials = Dictionary(
            image.threads.compactMap { thread in thread.credentials.map { (thread.tid, $0) } },
            uniquingKeysWith: { first, _ in first })
        keepCaps = Set(image.threads.filter { ($0.securebits ?? 0) & Self.keepCapsBit != 0 }.map(\.tid))
    }

    /// Whether a restart by `uid` sets the ids: only root does, and only to ones not all root's
    /// (on some thread).
    public func changesIds(asUser uid: UInt32) -> Bool {
        ([credentials] + threadCredentials.values).contains { Self.changesIds($0, asUser: uid) }
    }

    static func changesIds(_ credentials: ProcessImage.Credentials, asUser uid: UInt32) -> Bool {
        uid == 0 && (credentials.user.all + credentials.group.all).contains { $0 != 0 }
    }

    public func run(in session: RestartSession) throws {
        let pid = session.pid
        for limit in limits {
            do throws(Errno) {
                try Syscall.ResourceLimit(soft: limit.soft, hard: limit.hard).set(pid, limit.resource)
            } catch {
                throw TraceeError.from(error, pid: pid, "set resource limit \(limit.name) of")
            }
        }
        let calls = session.calls
        // A thread that kept its capabilities through a change of its ids (PR_SET_KEEPCAPS) keeps
        // them again only where the image is trusted as root's own: elsewhere the flag is set
        // after the ids change, when it grants nothing (CapabilitiesPhase then refuses the
        // capabilities the thread held).
        let keepsEarly = session.tree.trustedAsRoot
        guard changesIds(asUser: CurrentProcess.userID) else {
            for (saved, tid) in session.threadsBySavedID(main: self.pid) where keepCaps.contains(saved) {
                try calls.call(.prctl, Self.setKeepCaps, 1, 0, 0, 0, on: tid, to: "set keep-caps of thread \(tid)")
            }
            return
        }
        // The supplementary groups were set first of all, with the filesystem ids (FileAccessPhase).
        // The ids are each thread's own (the kernel's setresuid changes the calling thread alone;
        // glibc's signals every thread to make them all change): every thread makes the calls.
        // Each thread by its tid in the image and now: its own ids where it had them.
        for (saved, tid) in session.threadsBySavedID(main: self.pid) {
            let ids = threadCredentials[saved] ?? credentials
            try narrowBoundingSet(on: tid, to: ids.capabilities, session)
            let keeps = keepCaps.contains(saved)
            if keeps && keepsEarly {
                try calls.call(.prctl, Self.setKeepCaps, 1, 0, 0, 0, on: tid, to: "set keep-caps of thread \(tid)")
            }
            // setresgid and setresuid make the filesystem id the effective one: each is set
            // again after (the group's while the thread is still root: it may be none of the
            // others). setfs* answer the old id, never an error: the ids are read back below.
            try calls.call(
                .setresgid, ids.group.real, ids.group.effective, ids.group.saved, on: tid,
                to: "set the group ids of thread \(tid)")
            _ = try calls.result(of: .setfsgid, ids.group.filesystem, on: tid)
            try calls.call(
                .setresuid, ids.user.real, ids.user.effective, ids.user.saved, on: tid,
                to: "set the user ids of thread \(tid)")
            _ = try calls.result(of: .setfsuid, ids.user.filesystem, on: tid)
            if keeps && !keepsEarly {
                try calls.call(.prctl, Self.setKeepCaps, 1, 0, 0, 0, on: tid, to: "set keep-caps of thread \(tid)")
            }
            let status = try ProcFS.status(pid, thread: tid)
            guard status.userIDs == ids.user.all, status.groupIDs == ids.group.all else {
                throw TraceeError.unsupported(
                    pid: pid,
                    reason: "thread \(tid) has user ids \(status.userIDs) and group ids \(status.groupIDs), "
                        + "not the image's \(ids.user.all) and \(ids.group.all) (real, effective, saved, filesystem)")
            }
        }
    }

    /// The capabilities the image's bounding set lacks, dropped from the thread's while it still
    /// holds CAP_SETPCAP (a user other than root holds none after setresuid): narrowing a
    /// bounding set never grants anything. The other sets are `CapabilitiesPhase`'s.
    func narrowBoundingSet(on tid: Int32, to sets: ProcessImage.Capabilities?, _ session: RestartSession) throws {
        guard let bounding = sets?.bounding else { return }
        let now = try CapabilitiesPhase.current(session.pid, thread: tid)
        guard now.effective & CapabilitiesPhase.setPCAP != 0 else { return }
        for capability in CapabilitiesPhase.bits(now.bounding & ~bounding) {
            try session.calls.call(
                .prctl, CHPOX_PR_CAPBSET_DROP, capability, 0, 0, 0, on: tid,
                to: "drop \(CapabilitiesPhase.names(1 << UInt64(capability))) from the bounding set of thread \(tid)")
        }
    }
}
