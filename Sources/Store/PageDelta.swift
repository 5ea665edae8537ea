import Syscall

/// A run of pages, by page number (`Page.number(of: address)`).
public struct PageRange: Hashable, Sendable, CustomStringConvertible {
    public var first: UInt64
    public var count: UInt64
    public var end: UInt64 { first + count }

    public init(first: UInt64, count: UInt64) {
        self.first = first
        self.count = count
    }

    public var description: String { "pages \(first)..<\(end)" }
}

/// One page of a page map: its number and the chunk holding its bytes.
public struct PageEntry: Hashable, Sendable {
    public var page: UInt64
    public var chunk: ChunkID

    public init(page: UInt64, chunk: ChunkID) {
        self.page = page
        self.chunk = chunk
    }
}

/// The full page map of a generation: every page, ascending, each once. A page whose chunk is
/// `ChunkID.zeroPage` is present and zero; a page that is absent is not mapped.
public struct PageMap: Sendable, Equatable {
    public var pages: [PageEntry]
    public init(pages: [PageEntry] = []) { self.pages = pages }
    public static let empty = PageMap()

    /// The chunk of page `page`, nil if the map has none (binary search).
    public func chunk(of page: UInt64) -> ChunkID? {
        let low = firstIndex(atOrAfter: page)
        return low < pages.count && pages[low].page == page ? pages[low].chunk : nil
    }

    /// The entries of pages `range.first ..< range.end` (binary search).
    public func entries(in range: PageRange) -> ArraySlice<PageEntry> {
        pages[firstIndex(atOrAfter: range.first)..<firstIndex(atOrAfter: range.end)]
    }

    private func firstIndex(atOrAfter page: UInt64) -> Int {
        var low = 0, high = pages.count
        while low < high {
            let middle = (low + high) / 2
            if pages[middle].page < page { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

/// What one generation changed: ranges that were unmapped, then pages that were set (written,
/// zeroed or newly mapped). Applying a delta removes `unmapped` first and then sets `pages`, so a
/// range unmapped and mapped again in one generation is expressed exactly.
///
/// Deltas compose: `compose(a, b)` applied to a map equals `a` then `b`. Rebuilding a generation
/// composes the deltas since the nearest snapshot in a balanced tree and applies the result once,
/// and GC merges a dropped generation into its successor with the same operation.
public struct PageDelta: Sendable, Equatable {
    /// Ascending, disjoint, coalesced.
    public private(set) var unmapped: [PageRange]
    /// Ascending by page, each page once.
    public private(set) var pages: [PageEntry]

    public init() {
        unmapped = []
        pages = []
    }

    /// Builds a delta from entries in any order (a later entry for the same page wins) and
    /// ranges in any order (overlaps are merged).
    ///
    /// The entries are sorted where they are, and kept as they are when they ascend already: a
    /// generation's page list (24 bytes a page, 67 MB for a 16 GiB base) is not copied when the
    /// caller hands its only reference over.
    public init(unmapped: [PageRange], pages: consuming [PageEntry]) {
        self.unmapped = Self.normalize(unmapped)
        var ordered = consume pages
        if !Self.strictlyAscending(ordered) {
            // The standard library's sort is stable: a page's entries keep their order, so the
            // last one written is the last of its run, and wins.
            ordered.sort { $0.page < $1.page }
            var kept = 0
            for k in ordered.indices {
                if kept > 0 && ordered[kept - 1].page == ordered[k].page {
                    ordered[kept - 1] = ordered[k]
                } else {
                    ordered[kept] = ordered[k]
                    kept += 1
                }
            }
            ordered.removeSubrange(kept...)
        }
        self.pages = ordered
    }

    private static func strictlyAscending(_ pages: [PageEntry]) -> Bool {
        var k = 1
        while k < pages.count {
            if pages[k - 1].page >= pages[k].page { return false }
            k += 1
        }
        return true
    }

    /// Trusted constructor: inputs already normalized (parsers check this themselves).
    init(normalizedUnmapped: [PageRange], normalizedPages: [PageEntry]) {
        unmapped = normalizedUnmapped
        pages = normalizedPages
    }

    /// A full map as a delta from nothing.
    public init(full map: PageMap) {
        unmapped = []
        pages = map.pages
    }

    public var isEmpty: Bool { unmapped.isEmpty && pages.isEmpty }
    public var unmappedPageCount: UInt64 { unmapped.reduce(0) { $0 + $1.count } }

    /// `older` then `newer`, as one delta.
    public static func compose(_ older: PageDelta, _ newer: PageDelta) -> PageDelta {
        PageDelta(
            normalizedUnmapped: union(older.unmapped, newer.unmapped),
            normalizedPages: overlay(subtract(older.pages, newer.unmapped), with: newer.pages))
    }

    /// Composes many deltas, oldest first, pairwise in a balanced tree: O(n log k) for k deltas
    /// of n entries in all, where folding one by one would be O(n k).
    public static func compose(_ deltas: [PageDelta]) -> PageDelta {
        guard !deltas.isEmpty else { return PageDelta() }
        var level = deltas
        while level.count > 1 {
            var next: [PageDelta] = []
            next.reserveCapacity((level.count + 1) / 2)
            var i = 0
            while i + 1 < level.count {
                next.append(compose(level[i], level[i + 1]))
                i += 2
            }
            if i < level.count { next.append(level[i]) }
            level = next
        }
        return level[0]
    }

    /// This delta applied to `map`.
    public func applied(to map: PageMap) -> PageMap {
        PageMap(pages: Self.overlay(Self.subtract(map.pages, unmapped), with: pages))
    }

    // MARK: Sorted-sequence operations

    static func normalize(_ ranges: [PageRange]) -> [PageRange] {
        let sorted = ranges.filter { $0.count > 0 }.sorted { $0.first < $1.first }
        var result: [PageRange] = []
        result.reserveCapacity(sorted.count)
        for range in sorted {
            if let last = result.last, range.first <= last.end {
                result[result.count - 1].count = max(last.end, range.end) - last.first
            } else {
                result.append(range)
            }
        }
        return result
    }

    static func union(_ a: [PageRange], _ b: [PageRange]) -> [PageRange] {
        if a.isEmpty { return b }
        if b.isEmpty { return a }
        return normalize(a + b)
    }

    /// Entries of `entries` outside every range of `ranges`.
    static func subtract(_ entries: [PageEntry], _ ranges: [PageRange]) -> [PageEntry] {
        if ranges.isEmpty { return entries }
        var result: [PageEntry] = []
        result.reserveCapacity(entries.count)
        var r = 0
        for entry in entries {
            while r < ranges.count && ranges[r].end <= entry.page { r += 1 }
            if r < ranges.count && ranges[r].first <= entry.page { continue }
            result.append(entry)
        }
        return result
    }

    /// Merges two ascending entry lists; where both have a page, `newer` wins.
    static func overlay(_ older: [PageEntry], with newer: [PageEntry]) -> [PageEntry] {
        if newer.isEmpty { return older }
        if older.isEmpty { return newer }
        var result: [PageEntry] = []
        result.reserveCapacity(older.count + newer.count)
        var i = 0, j = 0
        while i < older.count && j < newer.count {
            let a = older[i], b = newer[j]
            if a.page < b.page {
                result.append(a); i += 1
            } else if b.page < a.page {
                result.append(b); j += 1
            } else {
                result.append(b); i += 1; j += 1
            }
        }
        result.append(contentsOf: older[i...])
        result.append(contentsOf: newer[j...])
        return result
    }
}

// MARK: Encoding, shared by manifests and snapshots

extension PageDelta {
    /// Pages above this are beyond any x86-64 or arm64 address space (2^57 bytes).
    static let maxPage: UInt64 = 1 << 45

    ///     u64 rangeCount, rangeCount x (u64 first, u64 count)
    ///     u64 runCount,   runCount x (u64 firstPage, u32 count, count x 16-byte chunk id)
    func encode(into writer: inout BinaryWriter) {
        writer.append(UInt64(unmapped.count))
        for range in unmapped {
            writer.append(range.first)
            writer.append(range.count)
        }
        writer.append(UInt64(runCount))
        forEachRun { run in
            writer.append(pages[run.lowerBound].page)
            writer.append(UInt32(run.count))
            for entry in pages[run] { writer.append(entry.chunk) }
        }
    }

    /// The bytes `encode` writes.
    var encodedSize: Int { 8 + 16 * unmapped.count + 8 + 12 * runCount + 16 * pages.count }

    /// Runs of consecutive pages, as `encode` writes them (at most `UInt32.max` pages each).
    private var runCount: Int {
        var count = 0
        forEachRun { _ in count += 1 }
        return count
    }

    /// Visits the runs one by one: a large base has a million of them (its resident pages
    /// between holes), not worth an array beside the pages.
    private func forEachRun(_ body: (Range<Int>) -> Void) {
        var start = 0
        for i in pages.indices where i > 0 {
            if pages[i].page != pages[i - 1].page + 1 || i - start == Int(UInt32.max) {
                body(start..<i)
                start = i
            }
        }
        if !pages.isEmpty { body(start..<pages.count) }
    }

    /// Parses and validates (ascending, disjoint, in range); never allocates more than the
    /// remaining bytes could hold.
    static func decode(from reader: inout BinaryReader) throws(StoreError) -> PageDelta {
        let rangeCount: UInt64 = try reader.read()
        try reader.check(count: rangeCount, recordSize: 16, "unmapped range")
        var ranges: [PageRange] = []
        ranges.reserveCapacity(Int(rangeCount))
        var floor: UInt64 = 0
        for _ in 0..<rangeCount {
            let first: UInt64 = try reader.read()
            let count: UInt64 = try reader.read()
            guard count > 0, first >= floor, count <= maxPage, first <= maxPage - count, ranges.isEmpty || first > floor
            else {
                throw reader.fail("unmapped ranges out of order or out of range")
            }
            ranges.append(PageRange(first: first, count: count))
            floor = first + count
        }
        let runCount: UInt64 = try reader.read()
        try reader.check(count: runCount, recordSize: 12 + 16, "page run")
        var pages: [PageEntry] = []
        var next: UInt64 = 0
        for _ in 0..<runCount {
            let first: UInt64 = try reader.read()
            let count = UInt64(try reader.read(UInt32.self))
            try reader.check(count: count, recordSize: 16, "page")
            guard count > 0, first >= next, first <= maxPage - count else {
                throw reader.fail("page runs out of order or out of range")
            }
            if pages.isEmpty { pages.reserveCapacity(reader.remaining / 16) }
            for k in 0..<count { pages.append(PageEntry(page: first + k, chunk: try reader.readID())) }
            next = first + count
        }
        return PageDelta(normalizedUnmapped: ranges, normalizedPages: pages)
    }
}
