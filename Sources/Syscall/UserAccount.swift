#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A user as the system's user database knows them (getpwuid_r(3), getgrouplist(3)): the
/// groups they may hold are their primary group and the groups that list them as a member.
public struct UserAccount: Sendable, Equatable {
    public var uid: UInt32
    public var name: String
    public var primaryGroup: UInt32
    /// Every group the user belongs to, the primary one included, sorted.
    public var groups: [UInt32]

    /// The account of `uid`; nil when the user database has no such user.
    public init?(uid: UInt32) {
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let found = buffer.withUnsafeMutableBufferPointer { storage -> (String, UInt32, [UInt32])? in
            var entry = passwd()
            var result: UnsafeMutablePointer<passwd>? = nil
            guard let base = storage.baseAddress, getpwuid_r(uid, &entry, base, storage.count, &result) == 0,
                result != nil,
                let name = entry.pw_name
            else { return nil }
            var count: Int32 = 64
            var list = [gid_t](repeating: 0, count: Int(count))
            // Too small a list: getgrouplist says in `count` how many there are.
            while getgrouplist(name, entry.pw_gid, &list, &count) == -1 {
                list = [gid_t](repeating: 0, count: Int(count) + 1)
                count = Int32(list.count)
            }
            return (String(cString: name), entry.pw_gid, Array(list.prefix(Int(count))))
        }
        guard let (name, primary, groups) = found else { return nil }
        self.uid = uid
        self.name = name
        primaryGroup = primary
        self.groups = Array(Set(groups + [primary])).sorted()
    }
}
