#if canImport(Glibc)
import Glibc
#endif

/// A new file that takes the place of `path` only when it is complete: created beside it under
/// an unguessable name (exclusive, no symlink followed, 0600), then fsynced and renamed over
/// `path`. Whatever was at `path` (a file of another owner, a symlink to somewhere else) is
/// replaced, never written through; until `commit` nothing at `path` changes, and a file never
/// committed is removed.
public final class ReplacementFile {
    public let path: String
    /// The new file, open for writing.
    public let descriptor: FileDescriptor
    private let folder: FileDescriptor
    private let name: String
    private let temporaryName: String
    private var done = false

    public init(replacing path: String) throws(Errno) {
        self.path = path
        let slash = path.lastIndex(of: "/")
        let parent = slash.map { path[..<$0].isEmpty ? "/" : String(path[..<$0]) } ?? "."
        name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !name.isEmpty, name != ".", name != ".." else { throw Errno(rawValue: EISDIR) }
        folder = try FileDescriptor.open(parent, [.readOnly, .directory])
        temporaryName = ".\(name).\(String(UInt64.random(in: 0...UInt64.max), radix: 16)).partial"
        do {
            descriptor = try FileDescriptor.open(
                temporaryName, in: folder, [.writeOnly, .create, .exclusive, .noFollow], permissions: 0o600)
        } catch {
            folder.close()
            throw error
        }
    }

    deinit { discard() }

    /// Puts the file in place of `path` (fsync, then rename).
    public func commit() throws(Errno) {
        precondition(!done, "a replacement file is committed or discarded once")
        try descriptor.sync()
        try folder.rename(temporaryName, to: name)
        done = true
        descriptor.close()
        try? folder.sync()
        folder.close()
    }

    /// Removes the new file; `path` stays as it was.
    public func discard() {
        guard !done else { return }
        done = true
        descriptor.close()
        try? folder.removeFile(temporaryName)
        folder.close()
    }
}
