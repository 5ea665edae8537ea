import Syscall
import Tracee

/// First: when root restarts another user's image, the stub takes that user's groups and
/// filesystem ids before it touches a single path, so that every file the restart opens, maps
/// or creates (descriptors, mapped files, the executable, the working directory, deleted files
/// recreated) is reached with no more access than the image's owner has: a symlink planted in
/// the user's files leads only where the user could go. Its other ids follow last
/// (`CredentialsPhase`).
public struct FileAccessPhase: RestartPhase {
    public var credentials: ProcessImage.Credentials

    public var name: String { "file access" }
    public var steps: [String] {
        guard CredentialsPhase.changesIds(credentials, asUser: 0) else { return ["as ld-chpox's own user"] }
        return [
            "groups \(credentials.groups), filesystem gid \(credentials.group.filesystem), "
                + "filesystem uid \(credentials.user.filesystem), before any path is opened"
        ]
    }

    public init(image: ProcessImage) { credentials = image.credentials }

    public func run(in session: RestartSession) throws {
        guard CredentialsPhase.changesIds(credentials, asUser: CurrentProcess.userID) else { return }
        let ids = credentials
        // The stub's own stack lends the group list: no trampoline exists yet.
        try RemoteCalls.onStack(of: session.process, size: max(64, 4 * ids.groups.count + 16), purpose: "restart") {
            (calls) throws(TraceeError) in
            let groups = ids.groups.isEmpty ? try calls.reserve(4) : try calls.value(ids.groups.map(\.littleEndian))
            try calls.call(.setgroups, ids.groups.count, groups, to: "set the supplementary groups")
        }
        // setfsgid and setfsuid answer the previous id, never an error: check the result.
        _ = try session.calls.result(of: .setfsgid, ids.group.filesystem)
        _ = try session.calls.result(of: .setfsuid, ids.user.filesystem)
        let status = try ProcFS.status(session.pid)
        guard status.userIDs.last == ids.user.filesystem, status.groupIDs.last == ids.group.filesystem else {
            throw TraceeError.unsupported(
                pid: session.pid,
                reason: "the stub did not take filesystem ids \(ids.user.filesystem)/\(ids.group.filesystem)")
        }
    }
}
