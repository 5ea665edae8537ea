#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// A userfaultfd (userfaultfd(2)) and the ioctls chpox makes on it, for write-protect
/// tracking: the uffd-wp tracker holds one taken from its target, the probe one of its own.
/// Closing the descriptor unregisters every range.
public struct Userfaultfd: Sendable {
    public let descriptor: FileDescriptor

    /// Takes over an existing userfaultfd (one taken from another process with pidfd_getfd).
    public init(descriptor: FileDescriptor) { self.descriptor = descriptor }

    /// Flags for `create`.
    public struct Options: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// The corresponding C constant is O_NONBLOCK.
        public static let nonBlocking = Options(rawValue: O_NONBLOCK)
        /// The corresponding C constant is UFFD_USER_MODE_ONLY: no faults from kernel mode, so
        /// an unprivileged process may create it under vm.unprivileged_userfaultfd=0.
        public static let userModeOnly = Options(rawValue: Int32(UFFD_USER_MODE_ONLY))
    }

    /// A new userfaultfd of this process (userfaultfd(2)), close-on-exec.
    public static func create(_ options: Options) throws(Errno) -> Userfaultfd {
        let fd = try retryingInterrupts { chpox_userfaultfd(O_CLOEXEC | options.rawValue) }.get()
        return Userfaultfd(descriptor: FileDescriptor(rawValue: fd))
    }

    /// Features asked of the kernel in the API handshake.
    public struct Features: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        /// The corresponding C constant is UFFD_FEATURE_WP_ASYNC (Linux 6.7): a write to a
        /// protected page clears the protection itself, no fault reaches the reader.
        public static let writeProtectAsync = Features(rawValue: UInt64(UFFD_FEATURE_WP_ASYNC))
        /// The corresponding C constant is UFFD_FEATURE_WP_UNPOPULATED (Linux 6.4): pages not
        /// yet populated can be protected too.
        public static let writeProtectUnpopulated = Features(rawValue: UInt64(UFFD_FEATURE_WP_UNPOPULATED))
    }

    /// The API handshake (UFFDIO_API), which must come first; fails when the kernel lacks
    /// one of `features`.
    public func enable(_ features: Features) throws(Errno) {
        var api = uffdio_api(api: UInt64(UFFD_API), features: features.rawValue, ioctls: 0)
        _ = try descriptor.control(chpox_UFFDIO_API, &api)
    }

    /// Registers [start, start + length) for write-protect tracking (UFFDIO_REGISTER with
    /// UFFDIO_REGISTER_MODE_WP).
    public func registerForWriteProtect(start: UInt64, length: UInt64) throws(Errno) {
        var register = uffdio_register(
            range: uffdio_range(start: start, len: length), mode: UInt64(UFFDIO_REGISTER_MODE_WP), ioctls: 0)
        _ = try descriptor.control(chpox_UFFDIO_REGISTER, &register)
    }

    /// Unregisters [start, start + length) (UFFDIO_UNREGISTER).
    public func unregister(start: UInt64, length: UInt64) throws(Errno) {
        var range = uffdio_range(start: start, len: length)
        _ = try descriptor.control(chpox_UFFDIO_UNREGISTER, &range)
    }

    /// Write-protects [start, start + length) (UFFDIO_WRITEPROTECT with
    /// UFFDIO_WRITEPROTECT_MODE_WP).
    public func writeProtect(start: UInt64, length: UInt64) throws(Errno) {
        var protect = uffdio_writeprotect(
            range: uffdio_range(start: start, len: length), mode: UInt64(UFFDIO_WRITEPROTECT_MODE_WP))
        _ = try descriptor.control(chpox_UFFDIO_WRITEPROTECT, &protect)
    }

    public func close() { descriptor.close() }
}
