import SoftDirty
import Testing
import Tracee

/// AddressRuns against the plainest model of it: a set of page numbers.
@Suite struct AddressRunsTests {
    static let page: UInt64 = 4096

    /// The runs a set of pages makes: maximal stretches of consecutive pages, ascending.
    static func runs(_ pages: Set<UInt64>) -> [PageRun] {
        var runs: [PageRun] = []
        for p in pages.sorted() {
            if let last = runs.last, last.end == p * page {
                runs[runs.count - 1].end += page
            } else {
                runs.append(PageRun(start: p * page, end: (p + 1) * page))
            }
        }
        return runs
    }

    static func pages(of ranges: [PageRun]) -> Set<UInt64> {
        Set(ranges.flatMap { $0.end > $0.start ? Array(($0.start / page)..<($0.end / page)) : [] })
    }

    /// Random page-aligned ranges over 64 pages: some empty, some inverted, some touching.
    static func randomRanges(_ state: inout UInt64) -> [PageRun] {
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 33
        }
        return (0..<(next() % 8)).map { _ in
            let start = next() % 64, length = next() % 10
            return next() % 10 == 0
                ? PageRun(start: (start + length) * page, end: start * page)
                : PageRun(start: start * page, end: (start + length) * page)
        }
    }

    @Test func mergesOverlappingAndTouchingRangesAndDropsEmptyOnes() {
        let runs = AddressRuns([
            PageRun(start: 0x3000, end: 0x5000), PageRun(start: 0x1000, end: 0x2000),
            PageRun(start: 0x2000, end: 0x3000),
            PageRun(start: 0x9000, end: 0x9000), PageRun(start: 0xc000, end: 0xa000),
            PageRun(start: 0x7000, end: 0x8000),
            PageRun(start: 0x7000, end: 0x7800 + 0x800),
        ])
        #expect(runs.runs == [PageRun(start: 0x1000, end: 0x5000), PageRun(start: 0x7000, end: 0x8000)])
        #expect(runs.pageCount == 5)
        #expect(AddressRuns([PageRun(start: 0x5000, end: 0x5000)]).isEmpty)
    }

    @Test func setAlgebraMatchesTheModel() {
        var state: UInt64 = 42
        for _ in 0..<2000 {
            let a = Self.randomRanges(&state), b = Self.randomRanges(&state)
            let x = AddressRuns(a), y = AddressRuns(b)
            let pa = Self.pages(of: a), pb = Self.pages(of: b)
            #expect(x.runs == Self.runs(pa), "\(a)")
            #expect(x.pageCount == UInt64(pa.count))
            #expect(x.isEmpty == pa.isEmpty)
            #expect(x.union(y).runs == Self.runs(pa.union(pb)), "\(a) ∪ \(b)")
            #expect(x.intersection(y).runs == Self.runs(pa.intersection(pb)), "\(a) ∩ \(b)")
            #expect(x.subtracting(y).runs == Self.runs(pa.subtracting(pb)), "\(a) − \(b)")
            let first = UInt64(state % 70), length = UInt64((state >> 8) % 20)
            let window = PageRun(start: first * Self.page, end: (first + length) * Self.page)
            let inWindow = Set((first..<(first + length)))
            #expect(x.clipped(to: window).runs == Self.runs(pa.intersection(inWindow)), "\(a) within \(window)")
            for p in UInt64(0)..<80 {
                #expect(x.contains(page: p * Self.page) == pa.contains(p), "page \(p) of \(a)")
                #expect(x.contains(page: p * Self.page + 100) == pa.contains(p), "inside page \(p) of \(a)")
            }
        }
    }
}
