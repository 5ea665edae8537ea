import Foundation
import Store
import StoreTestSupport
import Syscall
import TestTools
import Testing

/// A generation that fails leaves nothing in the store; what a killed writer left (packs it
/// published before its index segment, its files in tmp/) is counted by `dumpinfo --stats` and
/// removed by the next writer or GC.
@Suite(.serialized) struct AbandonedWriteTests {
    /// Pages enough to fill one pack (32 MiB, 8192 pages) with random, incompressible bytes, and
    /// some more: a writer holds up to four batches of 64 frames (4096 pages) before they are
    /// appended (`ChunkPacker.batchesInFlight`: filling, compressing, appending, one spare), so
    /// the first pack is sealed once 12,288 pages are put; it is published (fsync, rename) on a
    /// thread of its own after that: `published` waits for it.
    static let pagesPastOnePack: UInt64 = 13000

    /// Whether packs/ holds more than `count` packs within ten seconds (a sealed pack is
    /// published on the packer's own thread).
    static func published(beyond count: Int, _ temporary: TemporaryStore) throws -> Bool {
        for _ in 0..<1000 {
            if try temporary.files(in: "packs", suffix: ".pack").count > count { return true }
            usleep(10_000)
        }
        return false
    }

    static func putRandom(_ writer: GenerationWriter, pages: UInt64, seed: UInt64) throws {
        var random = SplitMix(seed)
        var page = [UInt64](repeating: 0, count: 512)
        for number in 0..<pages {
            for k in page.indices { page[k] = random.next() }
            try page.withUnsafeBytes { try writer.put(firstPage: number, contents: $0) }
        }
    }

    @Test(.timeLimit(.minutes(2))) func anAbandonedGenerationLeavesNoPack() throws {
        let temporary = TemporaryStore("abandoned")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        let first = try store.beginGeneration(chain: "kept")
        try Self.putRandom(first, pages: 40, seed: 1)
        try first.commit()
        let kept = try temporary.files(in: "packs", suffix: ".pack")

        let writer = try store.beginGeneration(chain: "failing")
        try Self.putRandom(writer, pages: Self.pagesPastOnePack, seed: 2)
        #expect(try Self.published(beyond: kept.count, temporary), "a pack was published")
        writer.abandon()
        #expect(try temporary.files(in: "packs", suffix: ".pack") == kept)
        #expect(try temporary.files(in: "tmp", suffix: "").isEmpty)
        #expect(try store.totals().abandoned?.isEmpty == true)
        let report = try store.verify(deep: true)
        #expect(report.isClean)
        #expect(report.garbagePacks == 0)
    }

    /// Starts chpox-store-writer in `hold` mode and kills it once it has published a pack
    /// mid-generation.
    static func killWriterAfterItPublishes(_ temporary: TemporaryStore, chain: String) throws {
        let (child, said) = try startHeldWriter(
            TestTools.path("chpox-store-writer"), store: temporary.path, chain: chain)
        #expect(said == "published\n")
        try child.send(SIGKILL)
        #expect(try child.wait() == .signalled(SIGKILL))
    }

    @Test(.timeLimit(.minutes(3))) func aKilledWritersPacksAreCountedThenReclaimedByTheNextWriter() throws {
        let temporary = TemporaryStore("killed-writer")
        defer { temporary.cleanup() }
        let tool = TestTools.path("chpox-store-writer")
        #expect(try TestTools.run("chpox-store-writer", [temporary.path, "c", "7", "16", "1"]).status == 0, "\(tool)")
        let committed = try temporary.files(in: "packs", suffix: ".pack")

        try Self.killWriterAfterItPublishes(temporary, chain: "c")
        #expect(try temporary.files(in: "packs", suffix: ".pack").count > committed.count)
        #expect(try !temporary.files(in: "tmp", suffix: "").isEmpty)
        let store = try temporary.open(create: false)
        let abandoned = try #require(try store.totals().abandoned)
        #expect(abandoned.packs >= 1)
        #expect(abandoned.packBytes >= 32 << 20)
        #expect(abandoned.temporaryFiles >= 1)
        let stats = try TestTools.run("dumpinfo", ["--store", temporary.path, "--stats"])
        #expect(stats.status == 0, "\(stats.errors)")
        #expect(
            stats.output.contains("orphans        \(abandoned.packs) packs, \(abandoned.temporaryFiles) tmp files"),
            "\(stats.output)")
        #expect(stats.output.contains("the next `cpx` or `cpx gc` removes them"), "\(stats.output)")

        // The next writer reclaims it before it writes, and loses nothing committed.
        #expect(try TestTools.run("chpox-store-writer", [temporary.path, "c", "7", "16", "1"]).status == 0)
        #expect(try store.totals().abandoned?.isEmpty == true)
        #expect(try Set(temporary.files(in: "packs", suffix: ".pack")).isSuperset(of: committed))
        #expect(try temporary.files(in: "tmp", suffix: "").isEmpty)
        let report = try store.verify(deep: true)
        #expect(report.isClean, "\(report.problems)")
        #expect(report.garbagePacks == 0)
        #expect(try store.chain("c").entries.map(\.generation) == [0, 1])
    }

    @Test(.timeLimit(.minutes(3))) func gcReclaimsWhatAKilledWriterLeft() throws {
        let temporary = TemporaryStore("killed-writer-gc")
        defer { temporary.cleanup() }
        #expect(try TestTools.run("chpox-store-writer", [temporary.path, "c", "7", "16", "1"]).status == 0)
        try Self.killWriterAfterItPublishes(temporary, chain: "c")
        let store = try temporary.open(create: false)
        #expect(try store.totals().abandoned?.packs ?? 0 >= 1)
        _ = try store.collectGarbage(RetentionPolicy())
        #expect(try store.totals().abandoned?.isEmpty == true)
        #expect(try store.verify(deep: true).isClean)
    }

    @Test func aWriterInFlightIsNotTakenForAbandoned() throws {
        let temporary = TemporaryStore("in-flight")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        let writer = try store.beginGeneration(chain: "c")
        try Self.putRandom(writer, pages: Self.pagesPastOnePack, seed: 3)
        // Its published pack is not indexed yet: while it writes, nothing is counted or removed.
        #expect(try store.totals().abandoned == nil)
        #expect(try store.reclaimAbandonedWrites() == nil)
        try writer.commit()
        #expect(try store.totals().abandoned?.isEmpty == true)
        #expect(try store.verify(deep: true).isClean)
    }
}
