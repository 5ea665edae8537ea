import Foundation
@testable import Incremental
import SoftDirty
import Testing
import Tracee

/// `CopiedPages.stream` cuts the pages to copy into batches it makes one at a time (keeping only
/// where each begins): the batches must hand on every page once, in address order, none over the
/// limit; checked against a model (the pages listed one by one) and against this process's own
/// memory read back through the stream.
@Suite struct CopiedPagesTests {
    static let page = UInt64(4096)

    /// Runs of `lengths` pages from `base`, each after a hole of `holes[k]` pages.
    static func runs(base: UInt64, lengths: [Int], holes: [Int]) -> [PageRun] {
        var runs: [PageRun] = []
        var at = base
        for (length, hole) in zip(lengths, holes) {
            at += UInt64(hole) * page
            runs.append(PageRun(start: at, end: at + UInt64(length) * page))
            at += UInt64(length) * page
        }
        return runs
    }

    /// The pages of `runs`, one address each, in order.
    static func pages(_ runs: [PageRun]) -> [UInt64] {
        runs.flatMap { run in stride(from: run.start, to: run.end, by: Int(page)).map { $0 } }
    }

    @Test(arguments: [1, 3, 7, 16, 1000])
    func batchesHandOnEveryPageOnceInOrder(maximumPages: Int) {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            let count = Int.random(in: 0..<40, using: &generator)
            let runs = Self.runs(
                base: 0x7f00_0000_0000, lengths: (0..<count).map { _ in Int.random(in: 1..<30, using: &generator) },
                holes: (0..<count).map { _ in Int.random(in: 1..<5, using: &generator) })
            let batches = CopiedPages.Batches(runs, maximumPages: maximumPages)
            let cut = (0..<batches.count).map { batches.runs($0) }
            let sizes = cut.map { Self.pages($0).count }
            #expect(cut.flatMap { Self.pages($0) } == Self.pages(runs))
            #expect(sizes.allSatisfy { $0 > 0 && $0 <= maximumPages })
            #expect(sizes.dropLast().allSatisfy { $0 == maximumPages })
            #expect(batches.largest == (sizes.max() ?? 0))
        }
    }

    @Test func streamReadsThisProcessPagesInOrder() throws {
        let total = 64
        let memory = try #require(
            mmap(nil, total * Int(Self.page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        try #require(memory != MAP_FAILED)
        defer { munmap(memory, total * Int(Self.page)) }
        for k in 0..<total {
            memory.storeBytes(of: UInt64(k * 7919 + 1), toByteOffset: k * Int(Self.page), as: UInt64.self)
        }
        let base = UInt64(UInt(bitPattern: memory))
        // Runs of 5, 1, 9 and 12 pages with holes between them, all inside the mapping.
        let runs = Self.runs(base: base, lengths: [5, 1, 9, 12], holes: [0, 2, 3, 1])
        var seen: [UInt64] = []
        var mismatches = 0
        let read = try CopiedPages.stream(AddressRuns(runs), from: getpid(), maximumPages: 4) { slice in
            for k in 0..<Int(slice.count) {
                let address = (slice.firstPage + UInt64(k)) * Self.page
                seen.append(address)
                let word = slice.bytes.load(fromByteOffset: k * Int(Self.page), as: UInt64.self)
                if word != UInt64(Int(address - base) / Int(Self.page) * 7919 + 1) { mismatches += 1 }
            }
        }
        #expect(read == 27)
        #expect(seen == Self.pages(runs))
        #expect(mismatches == 0)
    }
}
