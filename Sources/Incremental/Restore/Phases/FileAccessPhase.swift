import Syscall
import Tracee

/// First: when root restarts another user's image, the stub takes that user's groups and
/// filesystem ids before it touches a single path, so that every file the restart opens, maps
/// or creates (descriptors, mapped files, the executable, the working directory, deleted files
/// recreated) is reached with no more access than the image's owner has: a symlink planted in
/// the user's files leads only where the user could go. Its other ids follow last
/// (`CredentialsPhase`). Root restarting its own image keeps its ids and takes the image's
/// supplementary groups alone (the stub has ld-chpox's).
public struct FileAccessPhase: RestartPhase {
    public var credentials: ProcessImage.Credentials

    public var name: String { "file access" }
    public var steps: [String] {
        guard CredentialsPhase.changesIds(credentials, asUser: 0) else {
            return ["as ld-chpox's own user, groups \(credentials.groups) when restarted by root"]
        }
        return [
            "groups \(credentials.groups), filesystem gid \(credentials.group.filesystem), "
                + "filesystem uid \(credentials.user.filesystem), before any path is opened"
        ]
    }

    public init(image: ProcessImage) { credentials = image.credentials }

    public func run(in session: RestartSession) throws {
        let ids = credentials
        guard CredentialsPhase.changesIds(credentials, asUser: CurrentProcess.userID) else {
            // A user restarting their own image cannot set groups: Preflight refused one whose differ.
            if CurrentProcess.userID == 0, try ProcFS.status(session.pid).groups != ids.groups {
                try setGroups(in: session)
            }
            return
        }
        try setGroups(in: session)
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

    func setGroups(in session: RestartSession) throws {
        let groups = credentials.groups
        // The stub's own stack lends the group list where no trampoline exists yet.
        try session.withScratch(size: max(64, 4 * groups.count + 16)) { (calls) throws(TraceeError) in
            let list = groups.isEmpty ? try calls.reserve(4) : try calls.value(groups.map(\.littleEndian))
            try calls.call(.setgroups, groups.count, list, to: "set the supplementary groups")
        }
    }
}
