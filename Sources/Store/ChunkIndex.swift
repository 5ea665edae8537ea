import Syscall

/// All index segments of a store. Lookups search the segments largest first; new segments are
/// merged into larger ones as they accumulate (at most about log4(chunks) segments remain), so
/// the cost of a lookup stays a handful of binary searches in mapped memory.
final class ChunkIndex: @unchecked Sendable {
    private let directory: StoreDirectory
    private(set) var segments: [IndexSegment] = []
    /// Segments that failed to map or verify, with why; their chunks are unreachable until
    /// `rebuild-index`.
    private(set) var damaged: [(name: String, error: StoreError)] = []

    init(directory: StoreDirectory) throws(StoreError) {
        self.directory = directory
        try refresh()
    }

    /// Picks up segments written or removed by other processes since the last look.
    func refresh() throws(StoreError) {
        let names = try directory.names(in: directory.index, dirName: "index", suffix: "idx")
        var known: [ChunkID: IndexSegment] = [:]
        for segment in segments { known[segment.id] = segment }
        var fresh: [IndexSegment] = []
        var damaged: [(String, StoreError)] = []
        for name in names {
            guard let id = ChunkID(hex: name) else { continue }
            if let segment = known[id] { fresh.append(segment); continue }
            do {
                fresh.append(try IndexSegment(id: id, in: directory))
            } catch .system(let errno, _, _) where errno == .noSuchFile {
                continue  // merged away by another process between the listing and the open
            } catch {
                damaged.append((IndexFormat.fileName(id), error))
            }
        }
        segments = fresh.sorted { $0.count > $1.count }
        self.damaged = damaged
    }

    var entryCount: Int { segments.reduce(0) { $0 + $1.count } }

    func lookup(_ id: ChunkID) -> ChunkLocation? {
        for segment in segments {
            if let location = segment.lookup(id) { return location }
        }
        return nil
    }

    /// Writes one new segment holding `chunks` (any order; each names its pack by its place in
    /// `packs`) and starts using it. The chunks are sorted where they are (no copy of a
    /// generation's worth of them when the caller hands its only reference over; the sort's
    /// own buffer is half their size), and let go once written, before the segment is mapped
    /// and checked.
    @discardableResult
    func add(_ chunks: consuming [PackedChunk], packs: [ChunkID]) throws(StoreError) -> ChunkID? {
        var sorted = consume chunks
        guard !sorted.isEmpty else { return nil }
        sorted.sort { $0.id < $1.id }
        let writer = try IndexSegmentWriter(directory: directory)
        do {
            for chunk in sorted { try writer.add(chunk.id, chunk.location(in: packs)) }
            sorted = []
            let id = try writer.finish()
            let segment = try IndexSegment(id: id, in: directory)
            segments.append(segment)
            segments.sort { $0.count > $1.count }
            return id
        } catch {
            writer.discard()
            throw error
        }
    }

    /// Merges segments while the smallest is at least a quarter of the next: a binary-counter
    /// policy that keeps O(log n) segments and rewrites each entry O(log n) times in all.
    /// The merged segment is published before its sources are removed, so every chunk stays
    /// findable at every instant.
    func compact() throws(StoreError) {
        while segments.count >= 2 {
            let smallest = segments[segments.count - 1]
            let next = segments[segments.count - 2]
            guard smallest.count * 4 >= next.count || segments.count > 24 else { break }
            try merge([next, smallest])
        }
    }

    /// Replaces `sources` with one segment holding all their entries.
    func merge(_ sources: [IndexSegment]) throws(StoreError) {
        let writer = try IndexSegmentWriter(directory: directory)
        do {
            try Self.mergeEntries(sources) { (id, location) throws(StoreError) in try writer.add(id, location) }
            let id = try writer.finish()
            let merged = try IndexSegment(id: id, in: directory)
            for source in sources where source.id != id {
                try directory.remove(IndexFormat.fileName(source.id), in: directory.index, dirName: "index")
            }
            try directory.sync(directory.index, dirName: "index")
            let removed = Set(sources.map(\.id))
            segments.removeAll { removed.contains($0.id) }
            segments.append(merged)
            segments.sort { $0.count > $1.count }
        } catch {
            writer.discard()
            throw error
        }
    }

    /// Visits the entries of `sources` in ascending id order, each id once.
    static func mergeEntries(
        _ sources: [IndexSegment], _ visit: (ChunkID, ChunkLocation) throws(StoreError) -> Void
    ) throws(StoreError) {
        var cursors = [Int](repeating: 0, count: sources.count)
        var last: ChunkID?
        while true {
            var best = -1
            var bestID = ChunkID.none
            for (k, segment) in sources.enumerated() where cursors[k] < segment.count {
                let id = segment.entryID(cursors[k])
                if best < 0 || id < bestID { best = k; bestID = id }
            }
            if best < 0 { return }
            let segment = sources[best]
            guard let location = segment.location(cursors[best]) else {
                throw .malformed(file: segment.file, reason: "entry \(cursors[best]) names a pack outside its table")
            }
            cursors[best] += 1
            if bestID != last { try visit(bestID, location) }
            last = bestID
        }
    }

    /// Replaces every segment with `entries` (GC and rebuild-index): the new segment is
    /// published first, then the old ones are removed.
    func replaceAll(writing produce: (IndexSegmentWriter) throws(StoreError) -> Void) throws(StoreError) {
        let old = try directory.names(in: directory.index, dirName: "index", suffix: "idx")
        let writer = try IndexSegmentWriter(directory: directory)
        let newID: ChunkID
        do {
            try produce(writer)
            newID = try writer.finish()
        } catch {
            writer.discard()
            throw error
        }
        for name in old where name != newID.hex {
            try directory.remove(name + ".idx", in: directory.index, dirName: "index")
        }
        try directory.sync(directory.index, dirName: "index")
        segments = []
        try refresh()
    }
}
