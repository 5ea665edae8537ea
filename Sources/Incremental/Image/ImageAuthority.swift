import Store
import Syscall

/// Who an image may become. An image is input: whoever could write the store could write any
/// id into it (the manifest is plain JSON behind a hash anyone can recompute), so an image asks
/// for at most what its store's owner has: a store alice owns restarts as alice and her groups
/// whatever its JSON says, and only a store that only root can write restarts as root or as
/// any other user (docs/threat-model.md). Capabilities follow the user ids: a process whose ids
/// are not root's holds none after the restart.
public struct ImageAuthority: Sendable, Equatable {
    /// The store's owner.
    public var owner: UInt32
    /// The groups the owner may hold (their account's; without an account, the group of the
    /// store's directory); nil for root, who may grant any.
    public var groups: Set<UInt32>?
    /// The owner's login name, for messages.
    public var ownerName: String?
    /// Why nothing in the store may be trusted as root's: a store on S3 opened by root without
    /// `--trust-store` (whoever holds the bucket's credentials could have written it).
    public var untrusted: String?

    public init(owner: UInt32, groups: Set<UInt32>?, ownerName: String?) {
        (self.owner, self.groups, self.ownerName) = (owner, groups, ownerName)
    }

    /// What `store`'s owner may grant, from the system's user database.
    public init(store: Store) {
        let owner = store.owner
        if owner == 0, let remote = store.remote, !remote.trusted {
            self.init(owner: 0, groups: [], ownerName: "root")
            untrusted =
                "its store \(remote.location) can be written by whoever holds its bucket's credentials, so "
                + "restarting its image as root trusts them with root: pass --trust-store if only root can write "
                + "the bucket, or restart it as the image's user"
            return
        }
        guard owner != 0 else {
            self.init(owner: 0, groups: nil, ownerName: "root")
            return
        }
        let account = UserAccount(uid: owner)
        self.init(
            owner: owner, groups: Set(account?.groups ?? [store.ownerGroup]), ownerName: account?.name)
    }

    /// Whether a restart by `uid` trusts the image as root's own: root restarting it from a
    /// store only root can write. Only then may the restart open, with root's access, a file
    /// the process held that its own ids cannot open again (docs/threat-model.md).
    public func trustedAsRoot(restartedBy uid: UInt32) -> Bool { groups == nil && owner == 0 && uid == 0 }

    private var who: String { "uid \(owner)" + (ownerName.map { " (\($0))" } ?? "") }

    /// Why `credentials` ask for more than the owner may grant; nil when they do not.
    public func excess(_ credentials: ProcessImage.Credentials) -> String? {
        if let untrusted { return untrusted }
        guard let groups else { return nil }
        if let uid = credentials.user.all.first(where: { $0 != owner }) {
            return "its image asks to run as uid \(uid), but its store is \(who)'s, "
                + "who can have written any id into it: an image becomes at most its store's owner"
        }
        let asked = credentials.group.all + credentials.groups
        if let gid = asked.first(where: { !groups.contains($0) }) {
            return "its image asks for group \(gid), which \(who), the store's owner, does not belong to: "
                + "an image holds at most its store owner's groups"
        }
        return nil
    }
}
