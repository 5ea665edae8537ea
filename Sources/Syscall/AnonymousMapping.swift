#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Private anonymous memory of this process (mmap(2) with MAP_PRIVATE | MAP_ANONYMOUS),
/// unmapped (munmap(2)) when the last reference goes. The probes map pages of their own to
/// write and watch.
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

    /// Maps `size` bytes (rounded up to pages by the kernel). Unpopulated, a read maps the zero
    /// page and a write faults in a page of its own; `populated` faults every page in now, in
    /// one call (MAP_POPULATE, which the corresponding C constant names; best effort: what the
    /// kernel could not populate faults in later as usual).
    public init(size: Int, _ protection: Protection, populated: Bool = false) throws(Errno) {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | (populated ? MAP_POPULATE : 0)
        let address = mmap(nil, size, protection.rawValue, flags, -1, 0)
        guard let address, address != MAP_FAILED else { throw Errno.current }
        bytes = UnsafeMutableRawBufferPointer(start: address, count: size)
    }

    /// The address of the first byte.
    public var address: UInt64 { UInt64(UInt(bitPattern: bytes.baseAddress)) }

    deinit {
        if let base = bytes.baseAddress { munmap(base, bytes.count) }
    }
}
