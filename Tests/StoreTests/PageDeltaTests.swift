import Store
import StoreTestSupport
import Testing

/// Deltas held against a plain dictionary model of a page map.
@Suite struct PageDeltaTests {
    typealias Model = [UInt64: ChunkID]

    static func randomDelta(_ rng: inout SplitMix) -> (PageDelta, [PageRange], [PageEntry]) {
        var ranges: [PageRange] = []
        for _ in 0..<(rng.next() % 3) { ranges.append(PageRange(first: rng.next() % 200, count: 1 + rng.next() % 20)) }
        var entries: [PageEntry] = []
        for _ in 0..<(rng.next() % 30) {
            entries.append(PageEntry(page: rng.next() % 220, chunk: ChunkID(high: rng.next() % 5, low: rng.next() % 5)))
        }
        return (PageDelta(unmapped: ranges, pages: entries), ranges, entries)
    }

    static func apply(_ ranges: [PageRange], _ entries: [PageEntry], to model: inout Model) {
        for range in ranges { for page in range.first..<range.end { model[page] = nil } }
        for entry in entries { model[entry.page] = entry.chunk }
    }

    static func map(_ model: Model) -> PageMap {
        PageMap(pages: model.keys.sorted().map { PageEntry(page: $0, chunk: model[$0]!) })
    }

    @Test func applyMatchesModel() {
        var rng = SplitMix(1)
        for _ in 0..<500 {
            var model: Model = [:]
            var map = PageMap.empty
            for _ in 0..<6 {
                let (delta, ranges, entries) = Self.randomDelta(&rng)
                Self.apply(ranges, entries, to: &model)
                map = delta.applied(to: map)
                #expect(map == Self.map(model))
            }
        }
    }

    @Test func composeEqualsSequentialApplication() {
        var rng = SplitMix(2)
        for _ in 0..<300 {
            let count = 1 + Int(rng.next() % 12)
            var deltas: [PageDelta] = []
            var model: Model = [:]
            for _ in 0..<count {
                let (delta, ranges, entries) = Self.randomDelta(&rng)
                deltas.append(delta)
                Self.apply(ranges, entries, to: &model)
            }
            #expect(PageDelta.compose(deltas).applied(to: .empty) == Self.map(model))
            // Composition is associative: a pairwise fold agrees with the balanced tree.
            let folded = deltas.dropFirst().reduce(deltas[0]) { PageDelta.compose($0, $1) }
            #expect(folded == PageDelta.compose(deltas))
        }
    }

    @Test func laterEntryForSamePageWins() {
        let a = ChunkID(high: 1, low: 1), b = ChunkID(high: 2, low: 2)
        let delta = PageDelta(unmapped: [], pages: [PageEntry(page: 5, chunk: a), PageEntry(page: 5, chunk: b)])
        #expect(delta.pages == [PageEntry(page: 5, chunk: b)])
    }

    /// Entries sorted and made unique where they are (a checkpoint's rounds put a page again
    /// and again): against the model, with many entries per page, and with entries that
    /// already ascend (kept as they are).
    @Test func manyEntriesPerPageLastWins() {
        var rng = SplitMix(3)
        for _ in 0..<200 {
            var model: Model = [:]
            var entries: [PageEntry] = []
            for _ in 0..<(1 + rng.next() % 300) {
                let entry = PageEntry(page: rng.next() % 16, chunk: ChunkID(high: rng.next() % 7, low: rng.next()))
                entries.append(entry)
                model[entry.page] = entry.chunk
            }
            #expect(PageDelta(unmapped: [], pages: entries).pages == Self.map(model).pages)
            let ascending = Self.map(model).pages
            #expect(PageDelta(unmapped: [], pages: ascending).pages == ascending)
        }
    }
}
