#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Private anonymous memory of this process (mmap(2) with MAP_PRIVATE | MAP_ANONYMOUS),
/// unmapped (munmap(2)) when the last reference goes. The probes map pages of their own to
/// write and watch; the checkpointer's stop copies into one faulted in beforehand.
public final class AnonymousMapping: @unchecked Sendable {
    public let bytes: UnsafeMutableRawBufferPointer

    /// Access to the pages.
    public struct Protection: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// The corresponding C constant is PROT_READ.
        public static let read = Protection(rawValue: PROT_READ)
        /// The corresponding C constant is PROT_WRITE.
        public static let write = Protection(rawValue: PROT_WRITE)
    }

    /// Maps `size` bytes (rounded up to pages by the kernel), unpopulated: a read maps the zero
    /// page, a write a page of its own (see `populate`).
    public init(size: Int, _ protection: Protection) throws(Errno) {
        let address = mmap(nil, size, protection.rawValue, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let address, address != MAP_FAILED else { throw Errno.current }
        bytes = UnsafeMutableRawBufferPointer(start: address, count: size)
    }

    /// Faults in the pages of bytes `range` (page-aligned offsets) ready for writing, in one
    /// call instead of a fault per page (madvise(2) with MADV_POPULATE_WRITE, which the
    /// corresponding C constant names; Linux 5.14+, EINVAL before). Parts of one mapping may be
    /// populated from several threads at once.
    public func populate(_ range: Range<Int>) throws(Errno) {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count && Page.isAligned(range.lowerBound))
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        _ = try retryingInterrupts { madvise(base + range.lowerBound, range.count, MADV_POPULATE_WRITE) }.get()
    }

    /// The address of the first byte.
    public var address: UInt64 { UInt64(UInt(bitPattern: bytes.baseAddress)) }

    deinit {
        if let base = bytes.baseAddress { munmap(base, bytes.count) }
    }
}
