import Foundation
import Store
import StoreTestSupport
import Testing

/// Damage injected into every kind of store file is found by verify, which names the
/// generations it affects, exits unclean, and deletes nothing.
@Suite struct CorruptionTests {
    /// A store with two chains, built once per test into a fresh directory.
    static func build(_ label: String) throws -> (TemporaryStore, Store) {
        let temporary = TemporaryStore(label)
        let store = try temporary.open()
        try writeChain(store, chain: "one", seed: 21, rounds: 6, pages: 128, dirty: 20)
        try writeChain(store, chain: "two", seed: 22, rounds: 4, pages: 96, dirty: 30)
        #expect(try store.verify(deep: true).isClean)
        return (temporary, store)
    }

    static func flipBit(_ path: String, at offset: Int) throws {
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[offset] ^= UInt8(1 << (offset % 8))
        try data.write(to: URL(fileURLWithPath: path))
    }

    static func truncate(_ path: String, to size: Int) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(size))
        try handle.close()
    }

    static func size(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    }

    static func listing(_ path: String) -> [String] {
        (FileManager.default.enumerator(atPath: path)?.allObjects as? [String] ?? []).sorted()
    }

    /// Generations whose own delta references any of `chunks`.
    static func referencing(_ chunks: Set<ChunkID>, in store: Store) throws -> Set<GenerationRef> {
        var result: Set<GenerationRef> = []
        for name in try store.chainNames() {
            for entry in try store.chain(name).entries {
                let manifest = try store.manifest(entry.manifest)
                if manifest.delta.pages.contains(where: { chunks.contains($0.chunk) }) {
                    result.insert(GenerationRef(chain: name, generation: entry.generation))
                }
            }
        }
        return result
    }

    @Test func everyBitFlipInAPackIsFoundByDeepVerify() throws {
        var rng = SplitMix(7)
        for trial in 0..<12 {
            let (temporary, store) = try Self.build("packflip\(trial)")
            defer { temporary.cleanup() }
            let packs = try temporary.files(in: "packs", suffix: ".pack")
            let pack = "\(temporary.path)/packs/\(packs[Int(rng.next() % UInt64(packs.count))])"
            let offset = Int(rng.next() % UInt64(try Self.size(pack)))
            try Self.flipBit(pack, at: offset)
            let before = Self.listing(temporary.path)
            let report = try store.verify(deep: true)
            #expect(!report.isClean, "flip at \(offset) of \(pack) went unnoticed")
            #expect(Self.listing(temporary.path) == before, "verify must not change the store")
        }
    }

    @Test func damagedFrameNamesExactlyTheGenerationsUsingIt() throws {
        let (temporary, store) = try Self.build("frame")
        defer { temporary.cleanup() }
        // Flip a byte in the middle of the first frame's payload of some pack.
        let packName = try temporary.files(in: "packs", suffix: ".pack")[0]
        let pack = "\(temporary.path)/packs/\(packName)"
        let frameStart = 16
        try Self.flipBit(pack, at: frameStart + 12 + 40)
        let report = try store.verify(deep: true)
        #expect(!report.isClean)
        // The chunks of that frame, as the undamaged trailer lists them.
        let frameChunks = try chunks(inFrameAt: UInt32(frameStart), ofPack: pack)
        let expected = try Self.referencing(frameChunks, in: store)
        #expect(!expected.isEmpty)
        #expect(Set(report.damaged.keys) == expected)
        // Everything after a damaged generation up to the next full one depends on it.
        for (dependent, cause) in report.dependents {
            #expect(dependent.chain == cause.chain)
            #expect(dependent.generation > cause.generation)
        }
        // Structural verify does not read pack contents, but a rebuild of a damaged
        // generation refuses the bad chunk.
        if let damaged = expected.first {
            let map = try store.pageMap(chain: damaged.chain, generation: damaged.generation)
            #expect(throws: StoreError.self) { try store.reader().readPages(map) { _, _ in } }
        }
    }

    func chunks(inFrameAt offset: UInt32, ofPack path: String) throws -> Set<ChunkID> {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let footer = data.suffix(32)
        let count = footer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self) }
        let trailerOffset = Int(footer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) })
        var result: Set<ChunkID> = []
        data.withUnsafeBytes { raw in
            for k in 0..<Int(count) {
                let base = trailerOffset + 28 * k
                let high = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: base, as: UInt64.self))
                let low = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: base + 8, as: UInt64.self))
                if raw.loadUnaligned(fromByteOffset: base + 16, as: UInt32.self) == offset {
                    result.insert(ChunkID(high: high, low: low))
                }
            }
        }
        return result
    }

    @Test func truncatedPackIsFoundByStructuralVerify() throws {
        let (temporary, store) = try Self.build("packtrunc")
        defer { temporary.cleanup() }
        let pack = "\(temporary.path)/packs/\(try temporary.files(in: "packs", suffix: ".pack")[0])"
        try Self.truncate(pack, to: try Self.size(pack) / 2)
        let report = try store.verify(deep: false)
        #expect(!report.isClean)
        #expect(!report.damaged.isEmpty, "generations using the lost half must be named")
    }

    @Test func indexDamageIsFoundAndRebuildIndexRepairsIt() throws {
        var rng = SplitMix(8)
        for trial in 0..<8 {
            let (temporary, store) = try Self.build("index\(trial)")
            defer { temporary.cleanup() }
            let segments = try temporary.files(in: "index", suffix: ".idx")
            let segment = "\(temporary.path)/index/\(segments[Int(rng.next() % UInt64(segments.count))])"
            if trial % 2 == 0 {
                try Self.flipBit(segment, at: Int(rng.next() % UInt64(try Self.size(segment))))
            } else {
                try Self.truncate(segment, to: Int(rng.next() % UInt64(try Self.size(segment))))
            }
            let reopened = try temporary.open(create: false)
            let report = try reopened.verify()
            #expect(!report.isClean)
            #expect(report.problems.contains { $0.file.hasPrefix("index/") })
            #expect(throws: StoreError.self) { _ = try reopened.collectGarbage(RetentionPolicy(keepLast: 1)) }
            let rebuilt = try reopened.rebuildIndex()
            #expect(rebuilt.skipped.isEmpty)
            #expect(try reopened.verify(deep: true).isClean)
            _ = store
        }
    }

    @Test func manifestDamageNamesTheGenerationAndItsDependents() throws {
        var rng = SplitMix(9)
        for trial in 0..<8 {
            let (temporary, store) = try Self.build("manifest\(trial)")
            defer { temporary.cleanup() }
            let chain = try store.chain("one")
            let victim = chain.entries[2 + Int(rng.next() % 3)]
            let file = "\(temporary.path)/manifests/\(victim.manifest.hex).gen"
            if trial % 2 == 0 {
                try Self.flipBit(file, at: Int(rng.next() % UInt64(try Self.size(file))))
            } else {
                try Self.truncate(file, to: Int(rng.next() % UInt64(try Self.size(file))))
            }
            let report = try store.verify()
            #expect(!report.isClean)
            let ref = GenerationRef(chain: "one", generation: victim.generation)
            #expect(Set(report.damaged.keys) == [ref])
            let later = chain.entries.filter { $0.generation > victim.generation }.map {
                GenerationRef(chain: "one", generation: $0.generation)
            }
            #expect(Set(report.dependents.keys) == Set(later))
            #expect(report.dependents.values.allSatisfy { $0 == ref })
            #expect(throws: StoreError.self) { _ = try store.pageMap(chain: "one", generation: victim.generation) }
            // The other chain is untouched.
            #expect(!report.damaged.keys.contains { $0.chain == "two" })
        }
    }

    @Test func chainFileDamageIsFound() throws {
        let (temporary, store) = try Self.build("chainfile")
        defer { temporary.cleanup() }
        let file = "\(temporary.path)/chains/two.chain"
        try Self.flipBit(file, at: try Self.size(file) / 2)
        let report = try store.verify()
        #expect(report.problems.contains { $0.file == "chains/two.chain" })
        #expect(throws: StoreError.self) { _ = try store.chain("two") }
    }
}
