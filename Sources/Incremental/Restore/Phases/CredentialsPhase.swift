import Syscall
import Tracee

/// What the process may do: its resource limits (set from outside, prlimit), then, when root
/// restarts another user's image, its group ids and user ids, last of all calls that need
/// privilege (its supplementary groups came first, with the filesystem ids: `FileAccessPhase`).
public struct CredentialsPhase: RestartPhase {
    public var limits: [ProcessImage.ResourceLimit]
    public var credentials: ProcessImage.Credentials

    public var name: String { "limits and credentials" }
    public var steps: [String] {
        limits.map { "limit \($0.name): \($0.soft) / \($0.hard)" }
            + (changesIds(asUser: 0)
                ? [
                    "gid \(credentials.group.all.prefix(3)), uid \(credentials.user.all.prefix(3))"
                ] : [])
    }

    public init(image: ProcessImage) {
        limits = image.limits
        credentials = image.credentials
    }

    /// Whether a restart by `uid` sets the ids: only root does, and only to ones not all root's.
    public func changesIds(asUser uid: UInt32) -> Bool { Self.changesIds(credentials, asUser: uid) }

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
        guard changesIds(asUser: CurrentProcess.userID) else { return }
        // The supplementary groups were set first of all, with the filesystem ids (FileAccessPhase).
        let ids = credentials, calls = session.calls
        try calls.call(.setresgid, ids.group.real, ids.group.effective, ids.group.saved, to: "set the group ids")
        try calls.call(.setresuid, ids.user.real, ids.user.effective, ids.user.saved, to: "set the user ids")
    }
}
