#if canImport(Glibc)
import Glibc
#endif
import Store
import Tracee

/// XXH3-128 of every page of a process's region, read from outside with process_vm_readv, 64 MiB
/// at a time: what a restarted process must hold again, page for page. A page never touched reads
/// as zero, as it does in a restarted process that never had it.
public struct MemoryDigest: Equatable, Sendable {
    public let pages: [ChunkID]

    public static let batchBytes = 64 << 20

    /// Reads `size` bytes at `base` of `pid` (it must hold them all mapped).
    public init(pid: Int32, base: UInt64, size: UInt64) throws {
        let memory = ProcessMemory(pid: pid)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.batchBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var pages: [ChunkID] = []
        pages.reserveCapacity(Int(size / 4096))
        var offset: UInt64 = 0
        while offset < size {
            let length = Int(min(UInt64(Self.batchBytes), size - offset))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
            let read = try memory.read(from: base + offset, into: chunk)
            guard read == length else {
                throw ShortRead("pid \(pid): read \(read) of \(length) bytes at \(String(base + offset, radix: 16))")
            }
            for start in stride(from: 0, to: length, by: 4096) {
                pages.append(ChunkID(hashing: UnsafeRawBufferPointer(rebasing: chunk[start..<(start + 4096)])))
            }
            offset += UInt64(length)
        }
        self.pages = pages
    }

    /// How many pages differ from `other`'s (a page one of them lacks counts as different).
    public func differences(from other: MemoryDigest) -> Int {
        zip(pages, other.pages).reduce(abs(pages.count - other.pages.count)) { $0 + ($1.0 == $1.1 ? 0 : 1) }
    }

    /// A region that could not be read whole (the process went away, or does not map it all).
    public struct ShortRead: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }
}
