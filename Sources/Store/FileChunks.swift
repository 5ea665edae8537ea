import Syscall

/// A file's contents as pages of the store, cut one of two ways (`Chunking`): into chunks at
/// content-defined boundaries (a gear rolling hash, as FastCDC does), so that bytes inserted or
/// removed move only the chunks around them, each chunk kept in one page of its own (its bytes,
/// zeros, and its length in the page's last two bytes); or into 4 KiB blocks at their offsets,
/// each block a page as it is. A file's chunks, in order, are the pages of a slot of its own
/// (`FileChunks.range(ofSlot:)`) in the last address space, 511 (a manifest's pages end at
/// 2^45: 512 spaces of 2^36), 4096 slots of 2^24 pages (16 GiB of chunks of 1 KiB at least):
/// the store deduplicates, collects, verifies and rebases them as it does every page, and a
/// delta holds only the chunks that changed.
///
/// Sizes: at least 1 KiB (smaller chunks cost an index and a map entry, 45 bytes, for too
/// little), a cut where the 10 high bits of the hash are zero (one chance in 1024 a byte: 2 KiB
/// on average), and at most 4094 bytes, what a page holds besides the length. A rewrite of W
/// bytes in place costs about W plus one chunk (the two it starts and ends in).
public enum FileChunks {
    /// How a file is cut into the pages of its slot; recorded with it (`nil` in images made
    /// before blocks: `content`).
    public enum Chunking: String, Codable, Sendable {
        /// Content-defined chunks, each at page `offset / 1 KiB` of the slot: what a file whose
        /// bytes are inserted or removed (rewritten whole, edited) changes least.
        case content
        /// 4 KiB blocks, each at page `offset / 4 KiB`, the last padded with zeros: what a file
        /// rewritten in place (a database, a file mapped shared) changes least, since a write of W
        /// bytes changes at most W + 8 KiB of blocks whatever its offset, and a block fills its
        /// page, so the store compresses it as it does memory (a content chunk averages 2 KiB in
        /// its page, which doubles what the store handles per byte).
        case blocks
    }

    public static let minimum = 1024
    public static let maximum = Page.size - 2
    /// The hash's high bits that must be zero for a cut.
    static let cutBits = 10

    /// The address space that holds files (processes have the ones below).
    public static let space: UInt64 = 511
    public static let pagesPerSlot: UInt64 = 1 << 24
    public static let slots: UInt64 = AddressSpaces.pagesPerSpace / pagesPerSlot
    /// The largest file a slot holds (its chunks are 1 KiB at least, but the last).
    public static let largestFile: Int64 = Int64(pagesPerSlot - 1) * Int64(minimum)

    /// The first page number no process's memory may have.
    public static var firstPage: UInt64 { AddressSpaces.range(of: space).first }

    /// The pages of file slot `slot`.
    public static func range(ofSlot slot: UInt64) -> PageRange {
        PageRange(first: firstPage + slot * pagesPerSlot, count: pagesPerSlot)
    }

    /// Where in its slot the chunk that starts at byte `offset` is: `offset / minimum` (chunks
    /// start at least `minimum` bytes apart, so no two share one). A chunk keeps its page as
    /// long as it keeps its offset: a file rewritten in place changes only the pages of the
    /// chunks it rewrote, and a delta holds only those.
    public static func page(ofChunkAt offset: Int, _ chunking: Chunking = .content) -> UInt64 {
        UInt64(offset / (chunking == .blocks ? Page.size : minimum))
    }

    /// The chunks of the file in slot `slot` of `map`, by `page(ofChunkAt:)`.
    public static func chunks(ofSlot slot: UInt64, in map: PageMap) -> PageMap {
        let range = range(ofSlot: slot)
        return PageMap(pages: map.entries(in: range).map { PageEntry(page: $0.page - range.first, chunk: $0.chunk) })
    }

    /// The gear table: 256 pseudo-random words (splitmix64 from a fixed seed). Fixed forever:
    /// other words cut other chunks (still correct, no longer deduplicated against the old).
    static let gear: [UInt64] = {
        var state: UInt64 = 0x6368_706F_785F_6364  // "chpox_cd"
        return (0..<256).map { _ in
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }()

    /// Where each chunk of `bytes` ends (ascending; the last is `bytes.count`; none when empty).
    public static func boundaries(_ bytes: UnsafeRawBufferPointer) -> [Int] {
        var ends: [Int] = []
        ends.reserveCapacity(bytes.count / 2048 + 1)
        let count = bytes.count
        guard count > 0, let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return [] }
        gear.withUnsafeBufferPointer { table in
            let shift = UInt64(64 - cutBits)
            var start = 0
            while start < count {
                let remaining = count - start
                if remaining <= minimum {
                    ends.append(count)
                    break
                }
                let limit = start + min(maximum, remaining)
                var position = start + minimum
                var hash: UInt64 = 0
                // The hash over the 64 bytes before the first possible cut.
                for k in max(start, position - 64)..<position { hash = (hash << 1) &+ table[Int(base[k])] }
                var end = limit
                while position < limit {
                    hash = (hash << 1) &+ table[Int(base[position])]
                    position += 1
                    if hash >> shift == 0 {
                        end = position
                        break
                    }
                }
                ends.append(end)
                start = end
            }
        }
        return ends
    }

    /// Where each chunk of `bytes` cut as `chunking` says ends (ascending; the last is
    /// `bytes.count`; none when empty).
    public static func boundaries(_ bytes: UnsafeRawBufferPointer, _ chunking: Chunking) -> [Int] {
        switch chunking {
        case .content: return boundaries(bytes)
        case .blocks:
            return bytes.isEmpty ? [] : Array(stride(from: Page.size, to: bytes.count, by: Page.size)) + [bytes.count]
        }
    }

    /// Writes chunk `bytes` (at most `maximum`; a block: at most a page) as its page into
    /// `page` (one page).
    public static func encode(
        _ bytes: UnsafeRawBufferPointer, into page: UnsafeMutableRawBufferPointer, _ chunking: Chunking = .content
    ) {
        precondition(page.count == Page.size)
        if chunking == .blocks {
            precondition(bytes.count >= 1 && bytes.count <= Page.size)
            page.copyMemory(from: bytes)
            if bytes.count < Page.size {
                UnsafeMutableRawBufferPointer(rebasing: page[bytes.count...]).initializeMemory(
                    as: UInt8.self, repeating: 0)
            }
            return
        }
        precondition(bytes.count >= 1 && bytes.count <= maximum)
        page.copyMemory(from: bytes)
        for k in bytes.count..<Page.size - 2 { page[k] = 0 }
        page[Page.size - 2] = UInt8(bytes.count & 0xFF)
        page[Page.size - 1] = UInt8(bytes.count >> 8)
    }

    /// The chunk a page holds; nil when the page is not one (a length out of range, or bytes
    /// after it that are not zero).
    public static func decode(_ page: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard page.count == Page.size else { return nil }
        let length = Int(page[Page.size - 2]) | Int(page[Page.size - 1]) << 8
        guard length >= 1, length <= maximum else { return nil }
        for k in length..<Page.size - 2 where page[k] != 0 { return nil }
        return UnsafeRawBufferPointer(rebasing: page[0..<length])
    }

    /// The pages of `bytes` cut as `chunking` says, one per chunk, in order, with their ids and
    /// their page numbers in a slot (`page(ofChunkAt:)`).
    public static func pages(
        of bytes: UnsafeRawBufferPointer, _ chunking: Chunking = .content
    ) -> (pages: [UInt8], ids: [ChunkID], numbers: [UInt64]) {
        let ends = boundaries(bytes, chunking)
        var pages = [UInt8](repeating: 0, count: ends.count * Page.size)
        var ids: [ChunkID] = []
        ids.reserveCapacity(ends.count)
        var numbers: [UInt64] = []
        pages.withUnsafeMutableBytes { out in
            var start = 0
            for (k, end) in ends.enumerated() {
                numbers.append(page(ofChunkAt: start, chunking))
                let page = UnsafeMutableRawBufferPointer(rebasing: out[k * Page.size..<(k + 1) * Page.size])
                encode(UnsafeRawBufferPointer(rebasing: bytes[start..<end]), into: page, chunking)
                ids.append(ChunkID(hashing: UnsafeRawBufferPointer(page)))
                start = end
            }
        }
        return (pages, ids, numbers)
    }

    /// The bytes of the file a page of a slot holds: a content chunk's (nil when the page is
    /// not one), or a whole block.
    public static func payload(_ page: UnsafeRawBufferPointer, _ chunking: Chunking) -> UnsafeRawBufferPointer? {
        chunking == .blocks ? page : decode(page)
    }

    /// The file whose chunks are the pages of slot `slot` in `map`, cut as `chunking` says,
    /// read through `reader`; `size` cuts the last block's padding. Throws when a page is not a
    /// chunk, or not where a chunk starting where the previous one ended would be (a chunk
    /// missing).
    public static func contents(
        ofSlot slot: UInt64, in map: PageMap, reader: ChunkReader, chunking: Chunking = .content, size: Int64
    ) throws -> [UInt8] {
        let pages = chunks(ofSlot: slot, in: map)
        let space = slot
        var bytes: [UInt8] = []
        bytes.reserveCapacity(chunking == .blocks ? Int(size) : pages.pages.count * 2048)
        try reader.readPages(pages) { entry, page in
            guard entry.page == Self.page(ofChunkAt: bytes.count, chunking) else {
                throw StoreError.invalidArgument("file slot \(space): the chunk at byte \(bytes.count) is missing")
            }
            guard let chunk = payload(page, chunking) else {
                throw StoreError.invalidArgument("file slot \(space): page \(entry.page) holds no file chunk")
            }
            bytes.append(contentsOf: chunk)
        }
        if chunking == .blocks, Int64(bytes.count) > size, Int64(bytes.count) - size < Int64(Page.size) {
            bytes.removeLast(bytes.count - Int(size))
        }
        return bytes
    }
}
