import Store
import Syscall

/// The memory of one lazily restarted address space that is not in yet: its userfaultfd, and
/// the stored pages of its registered mappings not yet filled, by page number. Everything else
/// in those mappings reads as zero (never stored, or zero when stored).
///
/// It follows what the process does to its layout while it is being filled, as the kernel
/// reports it (`Userfaultfd.Message`): pages moved by mremap move here too, pages emptied
/// (MADV_DONTNEED) or unmapped are dropped (they must read as zero, or are gone), and a fork
/// makes a copy for the child, whose missing pages are exactly the parent's at that moment.
final class LazySpace {
    let userfaultfd: Userfaultfd
    /// The restarted process it is the memory of; nil for a child forked while it was filled.
    let pid: Int32?
    /// A pidfd of `pid`: readable once the process has ended.
    let process: ProcessDescriptor?
    /// Stored pages, ascending, and their chunks.
    private(set) var pages: [UInt64]
    private(set) var chunks: [ChunkID]
    /// Filled (or dropped) already, by index.
    private var done: [Bool]
    private(set) var remaining: Int
    /// The process is gone (its userfaultfd answers ESRCH): nothing more to fill.
    var gone = false
    /// Indexes to fill first, in order (the pages the previous run touched first).
    private var first: [Int] = []
    private var firstCursor = 0
    /// The next index in ascending order to look at once `first` is used up.
    private var cursor = 0

    init(userfaultfd: Userfaultfd, pid: Int32?, process: ProcessDescriptor?, entries: [PageEntry]) {
        self.userfaultfd = userfaultfd
        self.pid = pid
        self.process = process
        pages = entries.map(\.page)
        chunks = entries.map(\.chunk)
        done = [Bool](repeating: false, count: entries.count)
        remaining = entries.count
    }

    private init(copying other: LazySpace, userfaultfd: Userfaultfd) {
        self.userfaultfd = userfaultfd
        pid = nil
        process = nil
        pages = other.pages
        chunks = other.chunks
        done = other.done
        remaining = other.remaining
    }

    /// The child's copy after a fork (its missing pages are this one's now).
    func forked(userfaultfd: Userfaultfd) -> LazySpace { LazySpace(copying: self, userfaultfd: userfaultfd) }

    var finished: Bool { remaining == 0 || gone }

    /// The index of `page` where it is still to be filled.
    func pending(_ page: UInt64) -> Int? {
        var low = 0
        var high = pages.count
        while low < high {
            let middle = (low + high) / 2
            if pages[middle] < page { low = middle + 1 } else { high = middle }
        }
        guard low < pages.count, pages[low] == page, !done[low] else { return nil }
        return low
    }

    func entry(_ index: Int) -> PageEntry { PageEntry(page: pages[index], chunk: chunks[index]) }

    /// Marks the page at `index` filled (or no longer to be filled).
    func markDone(_ index: Int) {
        guard !done[index] else { return }
        done[index] = true
        remaining -= 1
    }

    /// Pages `range` (page numbers) emptied or unmapped: none of them is filled any more.
    func drop(_ range: Range<UInt64>) {
        for k in indexes(in: range) { markDone(k) }
    }

    /// Pages `from..<from + count` moved to `to..<to + count` (mremap).
    func move(from: UInt64, to: UInt64, count: UInt64) {
        let moved = indexes(in: from..<(from + count)).filter { !done[$0] }
        guard !moved.isEmpty else { return }
        var entries: [(page: UInt64, chunk: ChunkID, done: Bool)] = []
        entries.reserveCapacity(pages.count)
        let movedSet = Set(moved)
        for k in pages.indices where !movedSet.contains(k) {
            // Whatever was at the destination was unmapped first (an unmap event came before).
            if pages[k] >= to && pages[k] < to + count { continue }
            entries.append((pages[k], chunks[k], done[k]))
        }
        for k in moved { entries.append((pages[k] - from + to, chunks[k], false)) }
        entries.sort { $0.page < $1.page }
        pages = entries.map(\.page)
        chunks = entries.map(\.chunk)
        done = entries.map(\.done)
        remaining = done.lazy.filter { !$0 }.count
        first = []  // indexes changed: the rest in ascending order
        firstCursor = 0
        cursor = 0
    }

    /// Fill `order` (page numbers) first, where still to be filled.
    func fillFirst(_ order: [UInt64]) {
        first = order.compactMap { pending($0) }
        firstCursor = 0
    }

    /// Up to `limit` indexes to fill next: those of `fillFirst`, then ascending.
    func next(_ limit: Int) -> [Int] {
        var picked: [Int] = []
        while picked.count < limit && firstCursor < first.count {
            if !done[first[firstCursor]] { picked.append(first[firstCursor]) }
            firstCursor += 1
        }
        var seen = Set(picked)
        while picked.count < limit && cursor < pages.count {
            if !done[cursor] && !seen.contains(cursor) { picked.append(cursor) }
            cursor += 1
        }
        if picked.count < limit && cursor >= pages.count && remaining > picked.count {
            // Indexes passed over while `first` held them may still be open: once more from the start.
            cursor = 0
            seen = Set(picked)
            while picked.count < limit && cursor < pages.count {
                if !done[cursor] && !seen.contains(cursor) { picked.append(cursor) }
                cursor += 1
            }
        }
        return picked
    }

    private func indexes(in range: Range<UInt64>) -> Range<Int> {
        func lowerBound(_ page: UInt64) -> Int {
            var low = 0
            var high = pages.count
            while low < high {
                let middle = (low + high) / 2
                if pages[middle] < page { low = middle + 1 } else { high = middle }
            }
            return low
        }
        return lowerBound(range.lowerBound)..<lowerBound(range.upperBound)
    }
}
