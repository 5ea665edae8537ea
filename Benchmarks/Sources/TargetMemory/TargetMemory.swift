#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CBenchLZ4
import Incremental
import TargetProcess
import Store
import Tracee
import SoftDirty

/// The target's 1 GiB region read from outside, as the baselines need it: which pages are
/// resident, their bytes in address order, their hashes, and the LZ4 size of a run of pages
/// framed as the Store frames new chunks.
public struct TargetMemory {
    public let target: TargetProcess

    public init(target: TargetProcess) { self.target = target }

    /// Pages per process_vm_readv batch: 64 MiB (the checkpointer's pre-copy read such batches
    /// until it took 16 MiB ones, `Checkpointer.preCopyBatchPages`; kept so the baseline stays
    /// comparable with earlier runs).
    public static let batchPages = 16384
    /// Pages per LZ4 frame: 64 KiB, the Store's frames of new chunks.
    public static let framePages = 16

    public var region: PageRun { PageRun(start: target.base, end: target.base + target.size) }

    /// Pages of the region holding data: present or swapped, not the shared zero page (what the
    /// checkpointer copies). PAGEMAP_SCAN where the kernel has it, else pagemap entries.
    public func resident() throws -> [PageRun] {
        let pagemap = try Pagemap(pid: target.pid)
        if pagemap.hasScan() {
            // Sorted and merged: Linux 6.18 can answer a walk that ends inside one call with a
            // walk_end short of the range's end, so the next call reports its last runs again.
            return AddressRuns(
                try pagemap.scan(
                    start: region.start, end: region.end, anyOf: [.present, .swapped],
                    returned: [.present, .swapped, .pfnZero]
                ).filter { !$0.categories.contains(.pfnZero) }
            ).runs
        }
        var runs: [PageRun] = []
        try Residency.forEachEntry(pagemap, region) { address, entry in
            guard Residency.holdsData(entry) else { return }
            if let last = runs.last, last.end == address {
                runs[runs.count - 1].end += 4096
            } else {
                runs.append(PageRun(start: address, end: address + 4096))
            }
        }
        return runs
    }

    /// Reads the pages of `runs` in address order with process_vm_readv, `batchPages` at a
    /// time, and hands each batch on packed (page k of the batch at k * 4096), with the
    /// address of each of its pages.
    public func read(
        _ runs: [PageRun], _ body: (_ addresses: [UInt64], _ pages: UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let memory = ProcessMemory(pid: target.pid)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.batchPages * 4096, alignment: 4096)
        defer { buffer.deallocate() }
        var requests: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)] = []
        var addresses: [UInt64] = []
        func flush() throws {
            guard !addresses.isEmpty else { return }
            let unreadable = try memory.read(requests)
            precondition(unreadable.isEmpty, "pages of the target could not be read: \(unreadable)")
            try body(addresses, UnsafeRawBufferPointer(rebasing: buffer[0..<(addresses.count * 4096)]))
            requests.removeAll(keepingCapacity: true)
            addresses.removeAll(keepingCapacity: true)
        }
        for run in runs {
            var address = run.start
            while address < run.end {
                let room = Self.batchPages - addresses.count
                let take = min(Int((run.end - address) / 4096), room)
                let offset = addresses.count * 4096
                requests.append(
                    (address, UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<(offset + take * 4096)])))
                for k in 0..<take { addresses.append(address + UInt64(k) * 4096) }
                address += UInt64(take) * 4096
                if addresses.count == Self.batchPages { try flush() }
            }
        }
        try flush()
    }

    /// Reads the pages of `runs` all at once into a buffer allocated for them, as the
    /// checkpointer's final stop copies what it must while the process is frozen (the buffer's
    /// pages are faulted in by the read itself).
    public func readAtOnce(_ runs: [PageRun]) throws {
        let pages = runs.reduce(0) { $0 + Int($1.pageCount) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: pages * 4096, alignment: 4096)
        defer { buffer.deallocate() }
        var requests: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)] = []
        var offset = 0
        for run in runs {
            let size = Int(run.pageCount) * 4096
            requests.append((run.start, UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<(offset + size)])))
            offset += size
        }
        let unreadable = try ProcessMemory(pid: target.pid).read(requests)
        precondition(unreadable.isEmpty, "pages of the target could not be read: \(unreadable)")
    }

    /// XXH3-128 of every resident page, by page index in the region.
    public func hashes() throws -> [Int: ChunkID] {
        var hashes: [Int: ChunkID] = [:]
        try read(resident()) { addresses, pages in
            for (k, address) in addresses.enumerated() {
                hashes[Int((address - target.base) / 4096)] = ChunkID(
                    hashing: UnsafeRawBufferPointer(rebasing: pages[(k * 4096)..<((k + 1) * 4096)]))
            }
        }
        return hashes
    }

    /// The pages resident now whose bytes differ from `before` (or that were not resident
    /// then), packed in address order.
    public func changed(since before: [Int: ChunkID]) throws -> PackedPages {
        var changed = PackedPages()
        try read(resident()) { addresses, pages in
            for (k, address) in addresses.enumerated() {
                let page = UnsafeRawBufferPointer(rebasing: pages[(k * 4096)..<((k + 1) * 4096)])
                if before[Int((address - target.base) / 4096)] != ChunkID(hashing: page) { changed.append(page) }
            }
        }
        return changed
    }
}

/// Pages gathered into one buffer, in the order appended.
public struct PackedPages {
    public private(set) var bytes: [UInt8] = []
    public var count: Int { bytes.count / 4096 }

    public init() {}

    public mutating func append(_ page: UnsafeRawBufferPointer) { bytes.append(contentsOf: page) }
}

/// LZ4_compress_default over consecutive 16-page (64 KiB) frames, as the Store frames the new
/// chunks of a generation; a frame LZ4 does not shrink counts raw, as the Store keeps it.
public struct FrameCompressor {
    private let output: UnsafeMutableRawBufferPointer
    private let bound: Int32
    /// Compressed bytes so far.
    public private(set) var bytes = 0

    public init() {
        bound = LZ4_compressBound(Int32(TargetMemory.framePages * 4096))
        output = .allocate(byteCount: Int(bound), alignment: 16)
    }

    public func deallocate() { output.deallocate() }

    /// Compresses `pages` (a whole number of pages) frame by frame; all but the last frame
    /// are whole, so batches that are multiples of 16 pages frame as one run would.
    public mutating func compress(_ pages: UnsafeRawBufferPointer) {
        guard let base = pages.baseAddress else { return }
        let frame = TargetMemory.framePages * 4096
        var offset = 0
        while offset < pages.count {
            let length = min(frame, pages.count - offset)
            let packed = Int(
                LZ4_compress_default(
                    (base + offset).assumingMemoryBound(to: CChar.self),
                    output.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(length), bound))
            precondition(packed > 0, "LZ4_compress_default failed")
            bytes += min(packed, length)
            offset += length
        }
    }
}
