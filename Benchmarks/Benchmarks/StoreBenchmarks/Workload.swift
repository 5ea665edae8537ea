#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import Store
import TargetProcess

/// The data and stores the benchmarks share: a 256 MiB data set of text-like pages, three
/// generations of changes to it, and a store holding the data set as chain "base". Everything
/// is made on first use and lives under one scratch directory, removed when the process exits.
enum Workload {
    /// 65536 pages of 4 KiB: 256 MiB, enough to leave the caches, small enough for a 2-core box.
    static let pageCount = 65536
    /// Pages each delta generation rewrites (a quarter of the data set, chosen at random).
    static let deltaPageCount = pageCount / 4
    static let deltaGenerations = 3
    /// Pages per `put` call: 1 MiB runs, as a checkpointer's dirty runs arrive.
    static let pagesPerPut = 256

    static let base = PageSet(numbers: (0..<UInt64(pageCount)).map { $0 }, version: 0)

    /// Generation g (1...deltaGenerations): a random quarter of the pages, rewritten.
    static let deltas: [PageSet] = (1...deltaGenerations).map { generation in
        var random = SplitMix64(seed: 0xD317A + UInt64(generation))
        var chosen = Set<UInt64>()
        while chosen.count < deltaPageCount { chosen.insert(random.next() % UInt64(pageCount)) }
        return PageSet(numbers: chosen.sorted(), version: UInt64(generation))
    }

    /// A store holding `base` as generation 0 of chain "base".
    static let baseStore: Store = {
        do {
            let store = try Scratch.freshStore("base")
            let writer = try store.beginGeneration(chain: "base")
            try put(base, into: writer)
            try writer.commit()
            return store
        } catch {
            fatalError("cannot build the base store: \(error)")
        }
    }()

    /// Puts every page of `pages`: runs of consecutive page numbers in one call of up to
    /// `pagesPerPut` pages.
    static func put(_ pages: PageSet, into writer: GenerationWriter) throws {
        var start = 0
        while start < pages.count {
            var end = start + 1
            while end < pages.count, end - start < pagesPerPut, pages.numbers[end] == pages.numbers[end - 1] + 1 {
                end += 1
            }
            try writer.put(
                firstPage: pages.numbers[start],
                contents: UnsafeRawBufferPointer(rebasing: pages.bytes[(start * pageSize)..<(end * pageSize)]))
            start = end
        }
    }

    /// Total size of the files in `directory` whose names end in `suffix`.
    static func bytes(in directory: String, suffix: String) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(suffix) }.reduce(0) {
            total, name in
            var info = stat()
            guard stat("\(directory)/\(name)", &info) == 0 else { return total }
            return total + Int(info.st_size)
        }
    }
}

/// Seconds on the monotonic clock, for the phases timed inside one benchmark iteration.
func seconds(_ work: () throws -> Void) rethrows -> Double {
    let start = ContinuousClock.now
    try work()
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
}

/// Bytes per second in MB/s (10^6 bytes), as the integer a custom metric holds.
func megabytesPerSecond(_ bytes: Int, _ seconds: Double) -> Int {
    Int((Double(bytes) / seconds / 1e6).rounded())
}
