import Tracee

/// Sorted, disjoint, coalesced byte ranges [start, end), page-aligned: the set algebra the
/// trackers combine their observations with.
public struct AddressRuns: Sendable, Equatable {
    public private(set) var runs: [PageRun]

    public init() { runs = [] }

    /// From ranges in any order; overlapping or touching ranges merge.
    public init(_ ranges: [PageRun]) {
        let sorted = ranges.filter { $0.end > $0.start }.sorted { $0.start < $1.start }
        var merged: [PageRun] = []
        merged.reserveCapacity(sorted.count)
        for range in sorted {
            if let last = merged.last, range.start <= last.end {
                merged[merged.count - 1].end = max(last.end, range.end)
            } else {
                merged.append(PageRun(start: range.start, end: range.end))
            }
        }
        runs = merged
    }

    public var pageCount: UInt64 { runs.reduce(0) { $0 + $1.pageCount } }
    public var isEmpty: Bool { runs.isEmpty }

    public func union(_ other: AddressRuns) -> AddressRuns { AddressRuns(runs + other.runs) }

    public func intersection(_ other: AddressRuns) -> AddressRuns {
        var result: [PageRun] = []
        var i = 0, j = 0
        while i < runs.count && j < other.runs.count {
            let start = max(runs[i].start, other.runs[j].start)
            let end = min(runs[i].end, other.runs[j].end)
            if start < end { result.append(PageRun(start: start, end: end)) }
            if runs[i].end < other.runs[j].end { i += 1 } else { j += 1 }
        }
        return AddressRuns(result)
    }

    public func subtracting(_ other: AddressRuns) -> AddressRuns {
        var result: [PageRun] = []
        var j = 0
        for run in runs {
            var start = run.start
            while j < other.runs.count && other.runs[j].end <= start { j += 1 }
            var k = j
            while k < other.runs.count && other.runs[k].start < run.end {
                if other.runs[k].start > start { result.append(PageRun(start: start, end: other.runs[k].start)) }
                start = max(start, other.runs[k].end)
                k += 1
            }
            if start < run.end { result.append(PageRun(start: start, end: run.end)) }
        }
        return AddressRuns(result)
    }

    /// The runs inside `range`, found by binary search: a walk over a process's mappings that
    /// takes each one's share this way stays linear in the runs (tens of thousands of mappings
    /// made it quadratic with `intersection`).
    public func clipped(to range: PageRun) -> AddressRuns {
        guard range.end > range.start else { return AddressRuns() }
        var low = 0, high = runs.count
        while low < high {
            let middle = (low + high) / 2
            if runs[middle].end <= range.start { low = middle + 1 } else { high = middle }
        }
        var result: [PageRun] = []
        var k = low
        while k < runs.count && runs[k].start < range.end {
            result.append(PageRun(start: max(runs[k].start, range.start), end: min(runs[k].end, range.end)))
            k += 1
        }
        var clipped = AddressRuns()
        clipped.runs = result
        return clipped
    }

    public func contains(page address: UInt64) -> Bool {
        var low = 0, high = runs.count
        while low < high {
            let middle = (low + high) / 2
            if runs[middle].end <= address {
                low = middle + 1
            } else if runs[middle].start > address {
                high = middle
            } else {
                return true
            }
        }
        return false
    }
}
