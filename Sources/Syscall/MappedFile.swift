#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A whole file mapped read-only (mmap(2)); unmapped when the last reference goes.
/// Large sorted tables (the chunk index) are read through this instead of being loaded.
public final class MappedFile: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer

    /// Maps all of `descriptor`'s file; the descriptor may be closed afterwards.
    public init(_ descriptor: FileDescriptor) throws(Errno) {
        let size = Int(try descriptor.status().size)
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let address = mmap(nil, size, PROT_READ, MAP_SHARED, descriptor.rawValue, 0)
        guard let address, address != MAP_FAILED else { throw Errno.current }
        bytes = UnsafeRawBufferPointer(start: address, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }

    /// Drops the pages read so far from this process's memory (madvise(2) MADV_DONTNEED): they
    /// stay in the page cache, and a later read maps them again. A file read through once (a
    /// checksum) then no longer counts as resident memory of this process.
    public func releasePages() {
        guard let base = bytes.baseAddress else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base), bytes.count, MADV_DONTNEED)
    }
}
