#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// A userfaultfd (userfaultfd(2)) and the ioctls chpox makes on it: for write-protect
/// tracking (the uffd-wp tracker holds one taken from its target, the probe one of its own),
/// and for a lazy restart's missing pages (the page server holds one per restarted process).
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
        /// The corresponding C constant is UFFD_FEATURE_EVENT_FORK: a fork of the process
        /// hands the reader a userfaultfd of the child's copy (needs CAP_SYS_PTRACE).
        public static let forkEvents = Features(rawValue: UInt64(UFFD_FEATURE_EVENT_FORK))
        /// The corresponding C constant is UFFD_FEATURE_EVENT_REMAP: an mremap of a registered
        /// range is reported (it stays registered at its new address).
        public static let remapEvents = Features(rawValue: UInt64(UFFD_FEATURE_EVENT_REMAP))
        /// The corresponding C constant is UFFD_FEATURE_EVENT_REMOVE: MADV_DONTNEED or
        /// MADV_REMOVE of a registered range is reported.
        public static let removeEvents = Features(rawValue: UInt64(UFFD_FEATURE_EVENT_REMOVE))
        /// The corresponding C constant is UFFD_FEATURE_EVENT_UNMAP: munmap of a registered
        /// range is reported.
        public static let unmapEvents = Features(rawValue: UInt64(UFFD_FEATURE_EVENT_UNMAP))
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

    /// Registers [start, start + length) for missing-page faults (UFFDIO_REGISTER with
    /// UFFDIO_REGISTER_MODE_MISSING): a touch of a page not present there waits until it is
    /// filled (`copy`, `zeroPage`), and the reader gets `.pageFault`.
    public func registerForMissingPages(start: UInt64, length: UInt64) throws(Errno) {
        var register = uffdio_register(
            range: uffdio_range(start: start, len: length), mode: UInt64(UFFDIO_REGISTER_MODE_MISSING), ioctls: 0)
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

    /// Fills the missing pages [address, address + bytes.count) with `bytes` (UFFDIO_COPY) and
    /// wakes what waits on them. Returns the bytes copied: fewer than asked where it stopped
    /// early. Errors as the kernel gives them: EEXIST (a page is present already: nothing
    /// copied from it on), EAGAIN (the layout is changing: read the events, then try again),
    /// ENOENT (no registered mapping there any more), ESRCH (the process is gone).
    public func copy(_ bytes: UnsafeRawBufferPointer, to address: UInt64) -> (copied: Int, error: Errno?) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return (0, nil) }
        var copy = uffdio_copy(
            dst: address, src: UInt64(UInt(bitPattern: source)), len: UInt64(bytes.count), mode: 0, copy: 0)
        let result = retryingInterrupts { chpox_ioctl(descriptor.rawValue, chpox_UFFDIO_COPY, &copy) }
        let copied = copy.copy > 0 ? Int(copy.copy) : 0
        if case .failure(let error) = result { return (copied, error) }
        return (copied, nil)
    }

    /// Maps the zero page at the missing pages [address, address + length) (UFFDIO_ZEROPAGE)
    /// and wakes what waits on them; errors as `copy`'s.
    public func zeroPage(at address: UInt64, length: UInt64) -> Errno? {
        var zero = uffdio_zeropage(range: uffdio_range(start: address, len: length), mode: 0, zeropage: 0)
        if case .failure(let error) = retryingInterrupts({
            chpox_ioctl(descriptor.rawValue, chpox_UFFDIO_ZEROPAGE, &zero)
        }) {
            return error
        }
        return nil
    }

    /// Wakes what waits on [address, address + length) (UFFDIO_WAKE): for a fault whose page
    /// another fill made present first.
    public func wake(at address: UInt64, length: UInt64) {
        var range = uffdio_range(start: address, len: length)
        _ = try? descriptor.control(chpox_UFFDIO_WAKE, &range)
    }

    /// What the reader of a userfaultfd is told (struct uffd_msg).
    public enum Message: Sendable, Equatable {
        /// A touch of the missing page at `address` (page-aligned), a write where `write`.
        case pageFault(address: UInt64, write: Bool)
        /// The process forked: `child` is a new userfaultfd of the child's copy of the ranges.
        case fork(child: FileDescriptor)
        /// [from, from + length) moved to [to, to + length) (mremap).
        case remap(from: UInt64, to: UInt64, length: UInt64)
        /// [start, end) emptied (MADV_DONTNEED, MADV_REMOVE): its pages read as zero now.
        case remove(start: UInt64, end: UInt64)
        /// [start, end) unmapped.
        case unmap(start: UInt64, end: UInt64)
        /// An event this reader does not know (its number).
        case other(UInt8)
    }

    /// Reads what is queued, without waiting (the descriptor is non-blocking): up to `limit`
    /// messages; none when nothing is queued.
    public func readMessages(limit: Int = 64) throws(Errno) -> [Message] {
        let size = MemoryLayout<uffd_msg>.size
        var buffer = [UInt8](repeating: 0, count: size * limit)
        let count: Int
        do throws(Errno) {
            count = try buffer.withMutableRawBytes { (bytes) throws(Errno) in try descriptor.read(into: bytes) }
        } catch {
            if error == .wouldBlock { return [] }
            throw error
        }
        var messages: [Message] = []
        buffer.withUnsafeBytes { bytes in
            for offset in stride(from: 0, to: count - size + 1, by: size) {
                func word(_ at: Int) -> UInt64 { bytes.loadUnaligned(fromByteOffset: offset + at, as: UInt64.self) }
                switch Int32(bytes[offset]) {
                case Int32(UFFD_EVENT_PAGEFAULT):
                    messages.append(
                        .pageFault(
                            address: word(16) & ~UInt64(4095),
                            write: word(8) & UInt64(UFFD_PAGEFAULT_FLAG_WRITE) != 0))
                case Int32(UFFD_EVENT_FORK):
                    let fd = bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
                    messages.append(.fork(child: FileDescriptor(rawValue: Int32(bitPattern: fd))))
                case Int32(UFFD_EVENT_REMAP): messages.append(.remap(from: word(8), to: word(16), length: word(24)))
                case Int32(UFFD_EVENT_REMOVE): messages.append(.remove(start: word(8), end: word(16)))
                case Int32(UFFD_EVENT_UNMAP): messages.append(.unmap(start: word(8), end: word(16)))
                default: messages.append(.other(bytes[offset]))
                }
            }
        }
        return messages
    }

    public func close() { descriptor.close() }
}
