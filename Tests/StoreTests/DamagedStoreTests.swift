import Foundation
import Store
import StoreTestSupport
import Testing

/// GC on a damaged store changes nothing, names the damage and what repairs it, and its dry
/// run refuses exactly as the real run does; verify reports a lost pack as one problem, not
/// one per chunk.
@Suite struct DamagedStoreTests {
    /// What `body` throws, as text (nil when it throws nothing).
    static func refusal(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// GC with `policy` and its dry run both refuse, with the same message, and change nothing.
    static func expectRefusedAlike(
        _ fixture: DamagedStoreFixture, _ policy: RetentionPolicy, sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> String {
        let before = fixture.listing()
        let chain = try fixture.store.chain(fixture.chain)
        let dry = refusal { _ = try fixture.store.collectGarbage(policy, dryRun: true) }
        let real = refusal { _ = try fixture.store.collectGarbage(policy) }
        #expect(real != nil, "gc must refuse a damaged store", sourceLocation: sourceLocation)
        #expect(dry == real, "the dry run predicts the real run", sourceLocation: sourceLocation)
        #expect(fixture.listing() == before, "a refused gc changes no file", sourceLocation: sourceLocation)
        #expect(try fixture.store.chain(fixture.chain) == chain, sourceLocation: sourceLocation)
        return real ?? ""
    }

    @Test func gcRefusesWhenAPackOfAGenerationItWouldMergeIsMissing() throws {
        let fixture = try DamagedStoreFixture("gc-lost-pack")
        defer { fixture.cleanup() }
        let pack = try #require(fixture.packsOf[5].first)
        let users = try fixture.generations(using: try fixture.chunks(inPack: pack))
        try fixture.deletePack(pack)
        let message = try Self.expectRefusedAlike(fixture, RetentionPolicy(keepLast: 3))
        #expect(message.contains("packs/\(pack): missing"), "\(message)")
        #expect(message.contains(describeGenerations(users, chain: "d")), "\(message)")
        #expect(message.contains("`dumpinfo --verify` lists the generations"), "\(message)")
        // The intact generations are all still there and rebuild.
        for generation in 0..<5 {
            let failure = try mismatch(
                fixture.store, chain: "d", generation: UInt64(generation), expected: fixture.states[generation])
            #expect(failure == nil, "\(failure ?? "")")
        }
    }

    @Test func gcAndItsDryRunRefuseAlikeWhenAPackIsTruncated() throws {
        let fixture = try DamagedStoreFixture("gc-cut-pack")
        defer { fixture.cleanup() }
        let pack = try #require(fixture.packsOf[5].first)
        try fixture.truncatePack(pack, to: try fixture.size(ofPack: pack) / 2)
        let message = try Self.expectRefusedAlike(fixture, RetentionPolicy(keepLast: 3))
        #expect(message.contains("packs/\(pack): truncated"), "\(message)")
        // Sweeping alone repacks the small packs, so it reads the truncated one: refused too.
        _ = try Self.expectRefusedAlike(fixture, RetentionPolicy())
    }

    @Test func gcRefusesWhenTheIndexLostChunksAndRebuildIndexRepairsIt() throws {
        let fixture = try DamagedStoreFixture("gc-lost-index")
        defer { fixture.cleanup() }
        let segments = try fixture.temporary.files(in: "index", suffix: ".idx")
        #expect(segments.count >= 2)
        // The smallest segment: the newest generations' chunks.
        let sizes = try segments.map {
            (try FileManager.default.attributesOfItem(atPath: "\(fixture.temporary.path)/index/\($0)")[.size] as? Int)
                ?? 0
        }
        let victim = segments[sizes.indices.min { sizes[$0] < sizes[$1] }!]
        try FileManager.default.removeItem(atPath: "\(fixture.temporary.path)/index/\(victim)")
        let store = fixture.store
        let message = try Self.expectRefusedAlike(fixture, RetentionPolicy(keepLast: 3))
        #expect(message.contains("index: "), "\(message)")
        #expect(message.contains("`cpx rebuild-index`"), "\(message)")
        // What the message says to run repairs it; then gc goes ahead and loses nothing.
        let rebuilt = try store.rebuildIndex()
        #expect(rebuilt.skipped.isEmpty)
        let report = try store.collectGarbage(RetentionPolicy(keepLast: 3))
        #expect(report.dropped.map(\.generation) == [0, 1, 2, 3, 4])
        for generation in 5..<8 {
            let failure = try mismatch(
                store, chain: "d", generation: UInt64(generation), expected: fixture.states[generation])
            #expect(failure == nil, "\(failure ?? "")")
        }
        #expect(try store.verify(deep: true).isClean)
    }

    @Test func aMissingPackIsOneProblemNamingItsChunksAndGenerations() throws {
        let fixture = try DamagedStoreFixture("verify-lost-pack", rounds: 6, pages: 256)
        defer { fixture.cleanup() }
        let pack = try #require(fixture.packsOf[0].first)
        let chunks = try fixture.chunks(inPack: pack)
        let users = try fixture.generations(using: chunks)
        #expect(chunks.count > 100)
        try fixture.deletePack(pack)
        let report = try fixture.store.verify()
        #expect(!report.isClean)
        let short = String(pack.prefix(8))
        let aboutPack = report.problems.filter { $0.file.contains(short) || $0.message.contains(short) }
        #expect(aboutPack.count == 1, "one problem for the pack, not one per chunk: \(aboutPack.count)")
        let message = aboutPack.first?.message ?? ""
        #expect(message.contains("missing: \(chunks.count) chunks"), "\(message)")
        #expect(message.contains(describeGenerations(users, chain: "d")), "\(message)")
        #expect(report.problems.count < 5, "\(report.problems.count) problems")
        // Every generation using the pack directly is named damaged, as before.
        #expect(Set(report.damaged.keys.map(\.generation)) == Set(users))
    }
}
