import Foundation
import Store

/// A chain written with a record of which pack each generation added, and the damage people do
/// to stores (a pack deleted, a pack cut short, an index segment lost), measured from the files.
public struct DamagedStoreFixture {
    public let temporary: TemporaryStore
    public let store: Store
    public let chain: String
    public let states: [SyntheticMemory]
    /// The pack files (names) each generation added.
    public let packsOf: [[String]]

    /// Writes `rounds` generations of `chain`; each adds exactly one pack.
    public init(
        _ label: String, chain: String = "d", rounds: Int = 8, pages: Int = 128, dirty: Int = 20
    ) throws {
        temporary = TemporaryStore(label)
        store = try temporary.open()
        self.chain = chain
        var memory = SyntheticMemory(seed: 5, pages: pages, dirtyPerRound: dirty)
        var states: [SyntheticMemory] = []
        var packsOf: [[String]] = []
        var known = Set<String>()
        for round in 0..<rounds {
            let writer = try store.beginGeneration(chain: chain)
            let change = round == 0 ? nil : memory.advance()
            try memory.record(change, into: writer)
            try writer.commit()
            states.append(memory)
            let now = Set(try temporary.files(in: "packs", suffix: ".pack"))
            packsOf.append(now.subtracting(known).sorted())
            known = now
        }
        self.states = states
        self.packsOf = packsOf
    }

    public func path(ofPack name: String) -> String { "\(temporary.path)/packs/\(name)" }

    /// Every chunk `pack`'s trailer lists (read before it is damaged).
    public func chunks(inPack name: String) throws -> [ChunkID] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(ofPack: name)))
        return data.withUnsafeBytes { raw in
            let count = Int(raw.loadUnaligned(fromByteOffset: raw.count - 32, as: UInt64.self))
            let trailer = Int(raw.loadUnaligned(fromByteOffset: raw.count - 24, as: UInt64.self))
            return (0..<count).map { k in
                let base = trailer + 28 * k
                return ChunkID(
                    high: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: base, as: UInt64.self)),
                    low: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: base + 8, as: UInt64.self)))
            }
        }
    }

    /// Generations of the chain whose own delta references any of `chunks`.
    public func generations(using chunks: some Sequence<ChunkID>) throws -> [UInt64] {
        let wanted = Set(chunks)
        return try store.chain(chain).entries.filter { entry in
            try store.manifest(entry.manifest).delta.pages.contains { wanted.contains($0.chunk) }
        }.map(\.generation)
    }

    /// Every file of the store and its size (lock files aside: taking a lock creates one):
    /// equal before and after means nothing changed.
    public func listing() -> [String: Int] {
        var files: [String: Int] = [:]
        for name in FileManager.default.enumerator(atPath: temporary.path)?.allObjects as? [String] ?? []
        where !name.hasPrefix("locks") {
            let attributes = try? FileManager.default.attributesOfItem(atPath: "\(temporary.path)/\(name)")
            files[name] = (attributes?[.size] as? Int) ?? -1
        }
        return files
    }

    public func deletePack(_ name: String) throws { try FileManager.default.removeItem(atPath: path(ofPack: name)) }

    public func truncatePack(_ name: String, to size: Int) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path(ofPack: name)))
        try handle.truncate(atOffset: UInt64(size))
        try handle.close()
    }

    public func size(ofPack name: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path(ofPack: name))[.size] as? Int) ?? 0
    }

    public func cleanup() { temporary.cleanup() }
}

/// "generation 5 of chain d", "generations 0-3, 7 of chain d": how messages name generations.
public func describeGenerations(_ numbers: [UInt64], chain: String) -> String {
    let sorted = Array(Set(numbers)).sorted()
    var runs: [String] = []
    var k = 0
    while k < sorted.count {
        var end = k
        while end + 1 < sorted.count && sorted[end + 1] == sorted[end] + 1 { end += 1 }
        runs.append(k == end ? "\(sorted[k])" : "\(sorted[k])-\(sorted[end])")
        k = end + 1
    }
    return (sorted.count == 1 ? "generation " : "generations ") + runs.joined(separator: ", ") + " of chain \(chain)"
}

/// Damage done to a pack file in place, read from its own trailer.
public enum PackDamage {
    /// Flips a byte in the middle of every frame of the pack at `path`: whatever chunk of it a
    /// reader decodes no longer hashes to its id (a byte at a fixed place may fall in a frame
    /// nothing reads, or between frames).
    public static func flipEveryFrame(atPath path: String) throws {
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let (count, trailer) = bytes.withUnsafeBytes { raw in
            (
                Int(raw.loadUnaligned(fromByteOffset: raw.count - 32, as: UInt64.self)),
                Int(raw.loadUnaligned(fromByteOffset: raw.count - 24, as: UInt64.self))
            )
        }
        // Entries of one frame (a run of pages, told apart by slot) share its offset.
        var frames: [Int: Int] = [:]
        for k in 0..<count {
            bytes.withUnsafeBytes { raw in
                let offset = Int(raw.loadUnaligned(fromByteOffset: trailer + 28 * k + 16, as: UInt32.self))
                frames[offset] = Int(raw.loadUnaligned(fromByteOffset: trailer + 28 * k + 20, as: UInt32.self))
            }
        }
        for (offset, length) in frames { bytes[offset + length / 2] ^= 0x55 }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// `flipEveryFrame` on every pack of the store at `store`.
    public static func flipEveryFrame(inStore store: String) throws {
        for name in try FileManager.default.contentsOfDirectory(atPath: store + "/packs") {
            try flipEveryFrame(atPath: store + "/packs/" + name)
        }
    }
}
