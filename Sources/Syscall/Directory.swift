#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// Directory operations relative to an open directory descriptor (the *at(2) calls), so that a
/// path is resolved once and never through a symlink that was swapped in later.
extension FileDescriptor {
    /// Creates directory `name` inside this directory (mkdirat(2)).
    public func makeDirectory(_ name: String, permissions: UInt32 = 0o700) throws(Errno) {
        _ = try retryingInterrupts { mkdirat(rawValue, name, mode_t(permissions)) }.get()
    }

    /// Atomically renames `name` in this directory to `newName` in `target` (renameat(2)).
    public func rename(_ name: String, to newName: String, in target: FileDescriptor? = nil) throws(Errno) {
        let targetFD = (target ?? self).rawValue
        _ = try retryingInterrupts { renameat(rawValue, name, targetFD, newName) }.get()
    }

    /// Gives file `name` of this directory a second name, `newName` in `target` (linkat(2)):
    /// fails with EEXIST rather than replace anything.
    public func link(_ name: String, to newName: String, in target: FileDescriptor? = nil) throws(Errno) {
        let targetFD = (target ?? self).rawValue
        _ = try retryingInterrupts { linkat(rawValue, name, targetFD, newName, 0) }.get()
    }

    /// Removes file `name` from this directory (unlinkat(2)).
    public func removeFile(_ name: String) throws(Errno) {
        _ = try retryingInterrupts { unlinkat(rawValue, name, 0) }.get()
    }

    /// Removes empty directory `name` from this directory (unlinkat(2) with AT_REMOVEDIR).
    public func removeDirectory(_ name: String) throws(Errno) {
        _ = try retryingInterrupts { unlinkat(rawValue, name, AT_REMOVEDIR) }.get()
    }

    /// Where symlink `name` in this directory points (readlinkat(2)); the /proc links (exe,
    /// cwd, fd/<n>) name deleted files with a " (deleted)" suffix.
    public func linkTarget(of name: String) throws(Errno) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        let count = buffer.count
        let n = try retryingInterrupts { readlinkat(rawValue, name, &buffer, count) }.get()
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Whether this process may execute `name` in this directory (faccessat(2) with X_OK,
    /// checked with the real ids as access(2) does).
    public func isExecutable(_ name: String) -> Bool {
        (try? retryingInterrupts { faccessat(rawValue, name, X_OK, 0) }.get()) != nil
    }

    /// The names in this directory, without "." and "..", in no particular order.
    public func entries() throws(Errno) -> [String] {
        // fdopendir takes ownership of the descriptor it is given, so it gets a duplicate.
        let copy = try retryingInterrupts { dup(rawValue) }.get()
        guard let stream = fdopendir(copy) else {
            let error = Errno.current
            Glibc.close(copy)
            throw error
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
