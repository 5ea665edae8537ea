import Foundation
import Store
import StoreTestSupport
import Syscall
import Testing

/// Files as content-defined chunks, one a page: the cuts follow the content (an insertion
/// changes only the chunks around it), every chunk reads back exactly, and GC and rebase keep
/// the chunks the generations they keep need.
@Suite struct FileChunkTests {
    static func random(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    @Test func chunksAreWithinTheirBoundsAndReadBack() {
        let bytes = Self.random(300_000, seed: 1)
        let ends = bytes.withUnsafeBytes { FileChunks.boundaries($0) }
        var start = 0
        for (k, end) in ends.enumerated() {
            #expect(end - start <= FileChunks.maximum)
            if k < ends.count - 1 { #expect(end - start >= FileChunks.minimum) }
            start = end
        }
        #expect(start == bytes.count)
        let average = bytes.count / ends.count
        #expect(average > 1500 && average < 2600, "average chunk \(average)")
        let (pages, ids, _) = bytes.withUnsafeBytes { FileChunks.pages(of: $0) }
        #expect(ids.count == ends.count)
        var back: [UInt8] = []
        pages.withUnsafeBytes { raw in
            for k in 0..<ids.count {
                let page = UnsafeRawBufferPointer(rebasing: raw[k * Page.size..<(k + 1) * Page.size])
                back += FileChunks.decode(page).map(Array.init) ?? []
            }
        }
        #expect(back == bytes)
    }

    @Test func anInsertionChangesOnlyTheChunksAroundIt() {
        let bytes = Self.random(400_000, seed: 2)
        var inserted = bytes
        inserted.insert(contentsOf: Self.random(100, seed: 3), at: 200_000)
        let before = Set(bytes.withUnsafeBytes { FileChunks.pages(of: $0).ids })
        let after = inserted.withUnsafeBytes { FileChunks.pages(of: $0).ids }
        let new = after.filter { !before.contains($0) }
        #expect(new.count <= 4, "\(new.count) of \(after.count) chunks changed")
    }

    /// Blocks: a file rewritten in place changes only the blocks its writes touch (at most two
    /// for a write of 4 KiB at any offset), and a file whose size is no multiple of a page reads
    /// back exactly, its last block's padding cut.
    @Test func blocksChangeOnlyWhereWrittenAndReadBack() {
        let bytes = Self.random(300_123, seed: 5)
        let (pages, ids, numbers) = bytes.withUnsafeBytes { FileChunks.pages(of: $0, .blocks) }
        #expect(ids.count == (bytes.count + Page.size - 1) / Page.size)
        #expect(numbers == (0..<UInt64(ids.count)).map { $0 })
        var back: [UInt8] = []
        pages.withUnsafeBytes { raw in
            for k in 0..<ids.count {
                let page = UnsafeRawBufferPointer(rebasing: raw[k * Page.size..<(k + 1) * Page.size])
                back += FileChunks.payload(page, .blocks).map(Array.init) ?? []
            }
        }
        #expect(Array(back.prefix(bytes.count)) == bytes)
        #expect(back[bytes.count...].allSatisfy { $0 == 0 })
        for offset in [0, 1, 4095, 77_777, 296_000] {
            var written = bytes
            let end = min(offset + 4096, written.count)
            written.replaceSubrange(offset..<end, with: Self.random(end - offset, seed: UInt64(offset) + 9))
            let after = written.withUnsafeBytes { FileChunks.pages(of: $0, .blocks).ids }
            let changed = zip(ids, after).filter { $0 != $1 }.count
            #expect(changed >= 1 && changed <= 2, "a 4 KiB write at \(offset) changed \(changed) blocks")
        }
    }

    /// A file in a slot of the page map, written over generations, cut either way: GC down to
    /// the last one and a rebase keep every chunk it needs.
    @Test(arguments: [FileChunks.Chunking.content, .blocks])
    func garbageCollectionAndRebaseKeepFileChunks(chunking: FileChunks.Chunking) throws {
        let temporary = TemporaryStore("file-gc-\(chunking.rawValue)")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        var file = Self.random(200_000, seed: 4)
        var versions: [[UInt8]] = []
        var previous: [UInt64: ChunkID] = [:]
        let first = FileChunks.range(ofSlot: 3).first
        for round in 0..<6 {
            if round > 0 {
                let patch = Self.random(3000, seed: UInt64(10 + round))
                file.replaceSubrange(round * 20_000..<round * 20_000 + 3000, with: patch)
            }
            let writer = try store.beginGeneration(chain: "f")
            let (pages, ids, numbers) = file.withUnsafeBytes { FileChunks.pages(of: $0, chunking) }
            for stale in Set(previous.keys).subtracting(numbers) {
                writer.unmap(PageRange(first: first + stale, count: 1))
            }
            try pages.withUnsafeBytes { raw in
                for k in ids.indices where previous[numbers[k]] != ids[k] {
                    try writer.put(
                        firstPage: first + numbers[k],
                        contents: UnsafeRawBufferPointer(rebasing: raw[k * Page.size..<(k + 1) * Page.size]))
                }
            }
            let manifest = try writer.commit()
            // Rewritten in place: the delta holds the chunks that changed, not every later one.
            if round > 0 { #expect(manifest.deltaEntries < 12, "round \(round): \(manifest.deltaEntries) entries") }
            previous = Dictionary(uniqueKeysWithValues: zip(numbers, ids))
            versions.append(file)
        }
        for (g, version) in versions.enumerated() {
            let map = try store.pageMap(chain: "f", generation: UInt64(g))
            let contents = try FileChunks.contents(
                ofSlot: 3, in: map, reader: store.reader(), chunking: chunking, size: Int64(version.count))
            #expect(contents == version)
        }
        _ = try store.rebase(chain: "f", generation: 4)
        _ = try store.collectGarbage(RetentionPolicy(keepLast: 1))
        #expect(try store.verify(deep: true).isClean)
        let map = try store.pageMap(chain: "f", generation: 5)
        let last = try FileChunks.contents(
            ofSlot: 3, in: map, reader: store.reader(), chunking: chunking, size: Int64(versions[5].count))
        #expect(last == versions[5])
    }
}
