import Foundation
import Store
import StoreTestSupport
import Syscall
import TestTools
import Testing

@Suite(.serialized) struct GarbageCollectionTests {
    @Test func randomRetentionKeepsEveryKeptGenerationExact() throws {
        var rng = SplitMix(31)
        for trial in 0..<6 {
            let temporary = TemporaryStore("gc\(trial)")
            defer { temporary.cleanup() }
            let store = try temporary.open()
            let rounds = 20 + Int(rng.next() % 30)
            let states = try writeChain(
                store, chain: "g", seed: 40 + UInt64(trial), rounds: rounds, pages: 128, dirty: 16)
            let other = try writeChain(store, chain: "h", seed: 90, rounds: 5, pages: 64)
            var kept = Set<UInt64>()
            var policy = RetentionPolicy(chains: ["g"])
            switch trial % 3 {
            case 0: policy.keepLast = 1 + Int(rng.next() % 5)
            case 1: for _ in 0..<4 { policy.keep.insert(rng.next() % UInt64(rounds)) }
            default:
                policy.keepLast = 2
                for _ in 0..<3 { policy.keep.insert(rng.next() % UInt64(rounds)) }
            }
            let before = try store.chain("g")
            let dry = try store.collectGarbage(policy, dryRun: true)
            #expect(try store.chain("g") == before, "a dry run changes nothing")
            let report = try store.collectGarbage(policy)
            #expect(report.dropped == dry.dropped)
            let after = try store.chain("g")
            kept = Set(after.entries.map(\.generation))
            #expect(kept.contains(UInt64(rounds - 1)), "the head is always kept")
            #expect(after.nextGeneration == UInt64(rounds), "numbering is stable")
            #expect(report.dropped.count + kept.count == rounds)
            for generation in kept {
                #expect(
                    try mismatch(store, chain: "g", generation: generation, expected: states[Int(generation)]) == nil)
            }
            #expect(try mismatch(store, chain: "h", generation: 4, expected: other[4]) == nil)
            let verify = try store.verify(deep: true)
            #expect(
                verify.isClean,
                "\(verify.problems.prefix(3)) \(verify.damaged.prefix(2)) garbage \(verify.garbagePacks)")
            #expect(
                verify.garbagePacks == 0,
                "\(verify.problems.prefix(3)) \(verify.damaged.prefix(2)) garbage \(verify.garbagePacks)")
            // Dropping generations freed chunks only they used.
            #expect(report.deadChunks > 0 || report.dropped.isEmpty)
            // The chain keeps growing after GC with the same numbering.
            let writer = try store.beginGeneration(chain: "g")
            #expect(writer.generation == UInt64(rounds))
            writer.abandon()
        }
    }

    @Test func keepLastBoundsDiskUse() throws {
        let temporary = TemporaryStore("bounded")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        var memory = SyntheticMemory(seed: 77, pages: 128, dirtyPerRound: 40)
        var sizes: [Int] = []
        for round in 0..<60 {
            let writer = try store.beginGeneration(chain: "b")
            let change = round == 0 ? nil : memory.advance()
            try memory.record(change, into: writer)
            try writer.commit()
            if round % 10 == 9 {
                let report = try store.collectGarbage(RetentionPolicy(keepLast: 3))
                sizes.append(Int(report.packBytesAfter))
            }
        }
        // Live data is a few generations' worth; it must not grow with the chain's length.
        #expect(sizes.last! < sizes.first! * 2, "pack bytes after GC: \(sizes)")
        #expect(try store.chain("b").entries.count == 3)
        let failure = try mismatch(store, chain: "b", generation: 59, expected: memory);
        #expect(failure == nil, "\(failure ?? "")")
    }

    @Test func rebaseMakesAGenerationFullWithoutChangingAnyMap() throws {
        let temporary = TemporaryStore("rebase")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        let states = try writeChain(store, chain: "r", seed: 8, rounds: 10, pages: 96)
        let entry = try store.rebase(chain: "r", generation: 6)
        #expect(entry.kind == .full)
        for g in 0..<10 { #expect(try mismatch(store, chain: "r", generation: UInt64(g), expected: states[g]) == nil) }
        #expect(try store.verify().isClean)
        // Now dropping everything before 6 needs nothing older.
        _ = try store.collectGarbage(RetentionPolicy(keepLast: 4))
        #expect(try store.chain("r").entries.map(\.generation) == [6, 7, 8, 9])
        for g in 6..<10 { #expect(try mismatch(store, chain: "r", generation: UInt64(g), expected: states[g]) == nil) }
    }

    /// A generation GC merged others into reports the pages its new delta holds: a merged full
    /// one every page it rebuilds (not the sum of what the merged generations wrote), a merged
    /// delta the pages of its composed delta; generations GC only relinked keep their figures.
    @Test func mergedGenerationsReportThePagesTheyHold() throws {
        let temporary = TemporaryStore("gc-pages")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        try writeChain(store, chain: "p", seed: 12, rounds: 10, pages: 128, dirty: 20)
        let before = try store.chain("p").entries.map { try store.manifest($0.manifest).statistics }
        _ = try store.collectGarbage(RetentionPolicy(keepLast: 4, keep: [2]))
        let chain = try store.chain("p")
        #expect(chain.entries.map(\.generation) == [2, 6, 7, 8, 9])

        let base = try store.manifest(chain.entries[0].manifest)
        #expect(base.kind == .full)
        let map = try store.pageMap(chain: "p", generation: 2)
        #expect(base.statistics.pagesWritten == UInt64(map.pages.count), "generation 2 rebuilds \(map.pages.count)")
        #expect(base.statistics.zeroPages == UInt64(map.pages.count { $0.chunk == .zeroPage }))
        #expect(base.statistics.unmappedPages == 0)

        let merged = try store.manifest(chain.entries[1].manifest)
        #expect(merged.kind == .delta)
        #expect(merged.statistics.pagesWritten == UInt64(merged.delta.pages.count))
        #expect(merged.statistics.unmappedPages == merged.delta.unmappedPageCount)
        // What the merged generations added to the store stays summed.
        #expect(merged.statistics.newChunks == before[3...6].reduce(0) { $0 + $1.newChunks })

        for position in 2..<5 {
            let entry = chain.entries[position]
            #expect(try store.manifest(entry.manifest).statistics == before[Int(entry.generation)])
        }
    }

    /// GC in this process while a child keeps committing generations to the same store.
    @Test(.timeLimit(.minutes(5))) func concurrentWriterAndGCLoseNothing() throws {
        let temporary = TemporaryStore("concurrent")
        defer { temporary.cleanup() }
        let seed: UInt64 = 123, pages = 128
        let store = try temporary.open()
        let child = try ChildProcess.spawn(
            TestTools.path("chpox-store-writer"), [temporary.path, "live", "\(seed)", "\(pages)", "80"],
            stdout: try FileDescriptor.open("/dev/null", [.writeOnly]))
        var collections = 0
        var done = false
        while !done {
            usleep(60_000)
            _ = try store.collectGarbage(RetentionPolicy(keepLast: 3))
            collections += 1
            done = (try? store.chain("live"))?.nextGeneration == 80
        }
        #expect(try child.wait() == .exited(0))
        _ = try store.collectGarbage(RetentionPolicy(keepLast: 3))
        let chain = try store.chain("live")
        #expect(chain.entries.map(\.generation) == [77, 78, 79])
        let memory = SyntheticMemory(seed: seed, rounds: 79, pages: pages)
        #expect(try mismatch(store, chain: "live", generation: 79, expected: memory) == nil)
        #expect(
            try mismatch(
                store, chain: "live", generation: 77, expected: SyntheticMemory(seed: seed, rounds: 77, pages: pages))
                == nil)
        #expect(try store.verify(deep: true).isClean)
        #expect(collections > 5)
    }
}

@Suite struct PackCoalescingTests {
    @Test func smallPacksOfManyGenerationsAreMerged() throws {
        let temporary = TemporaryStore("coalesce")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        let states = try writeChain(store, chain: "c", seed: 61, rounds: 24, pages: 64, dirty: 8)
        let before = try temporary.files(in: "packs", suffix: ".pack").count
        #expect(before >= 20, "one small pack per generation")
        let report = try store.collectGarbage(RetentionPolicy())
        let after = try temporary.files(in: "packs", suffix: ".pack").count
        #expect(after == 1, "\(before) packs became \(after)")
        #expect(report.packsRepacked == before)
        for (g, memory) in states.enumerated() {
            #expect(try mismatch(store, chain: "c", generation: UInt64(g), expected: memory) == nil)
        }
        #expect(try store.verify(deep: true).isClean)
        // A second GC finds nothing left to merge.
        #expect(try store.collectGarbage(RetentionPolicy()).packsRepacked == 0)
    }
}
