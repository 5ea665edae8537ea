#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An error number returned by a system call.
public struct Errno: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current `errno`.
    public static var current: Errno { Errno(rawValue: errno) }

    public var description: String { String(cString: strerror(rawValue)) }

    /// The corresponding C constant is ENOENT.
    public static let noSuchFile = Errno(rawValue: ENOENT)
    /// The corresponding C constant is EEXIST.
    public static let exists = Errno(rawValue: EEXIST)
    /// The corresponding C constant is EWOULDBLOCK.
    public static let wouldBlock = Errno(rawValue: EWOULDBLOCK)
    /// The corresponding C constant is EINTR.
    public static let interrupted = Errno(rawValue: EINTR)
    /// The corresponding C constant is ELOOP (what O_NOFOLLOW reports for a symlink).
    public static let tooManySymlinks = Errno(rawValue: ELOOP)
    /// The corresponding C constant is ENOTDIR.
    public static let notDirectory = Errno(rawValue: ENOTDIR)
    /// The corresponding C constant is ENOSPC.
    public static let noSpace = Errno(rawValue: ENOSPC)
    /// The corresponding C constant is EACCES.
    public static let permissionDenied = Errno(rawValue: EACCES)
    /// The corresponding C constant is EPERM (a privilege the caller lacks).
    public static let notPermitted = Errno(rawValue: EPERM)
    /// The corresponding C constant is ESRCH (the process is gone).
    public static let noSuchProcess = Errno(rawValue: ESRCH)
}

/// Runs a raw call that reports failure as -1 and errno, retrying EINTR.
@inline(__always)
func retryingInterrupts<T: FixedWidthInteger>(_ call: () -> T) -> Result<T, Errno> {
    while true {
        let result = call()
        if result != -1 { return .success(result) }
        let error = Errno.current
        if error != .interrupted { return .failure(error) }
    }
}
