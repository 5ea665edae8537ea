import Foundation
@testable import Store
import StoreTestSupport
import Syscall
import Testing

/// A seeded mutator against every parser: flipped bits, overwritten bytes, boundary integers,
/// truncation and extension, half of them with the checksum fixed up so the parser proper is
/// reached. Each input must parse or throw a StoreError: never crash, hang or over-allocate.
@Suite struct FuzzTests {
    static let iterations = 1500

    static func mutate(_ input: [UInt8], _ rng: inout SplitMix, fixChecksum: Bool) -> [UInt8] {
        var bytes = input
        for _ in 0..<(1 + rng.next() % 4) {
            guard !bytes.isEmpty else { break }
            let at = Int(rng.next() % UInt64(bytes.count))
            switch rng.next() % 6 {
            case 0: bytes[at] ^= UInt8(1 << (rng.next() % 8))
            case 1: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
            case 2:
                let value: UInt64 = [0, 1, 0x7f, 0xff, 0xffff, 0xffff_ffff, UInt64.max, UInt64.max / 2][
                    Int(rng.next() % 8)]
                for k in 0..<min(8, bytes.count - at) {
                    bytes[at + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k)))
                }
            case 3: bytes.removeLast(Int(rng.next() % UInt64(bytes.count)))
            case 4: bytes += (0..<(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            default: bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: at)
            }
        }
        if fixChecksum && bytes.count > 8 {
            let sum = bytes.withUnsafeBytes { checksum64(UnsafeRawBufferPointer(rebasing: $0[0..<(bytes.count - 8)])) }
            withUnsafeBytes(of: sum.littleEndian) { bytes.replaceSubrange((bytes.count - 8)..., with: $0) }
        }
        return bytes
    }

    /// Runs one parse of a damaged input: it parses (the value) or throws a StoreError (nil);
    /// any other error is a failure. A crash or a hang ends the run.
    static func parsesOrRefuses<T>(_ what: String, _ parse: () throws -> T) -> T? {
        do {
            return try parse()
        } catch is StoreError {
            return nil
        } catch {
            Issue.record("\(what): threw \(type(of: error)), not a StoreError: \(error)")
            return nil
        }
    }

    static func sample() throws -> (TemporaryStore, Store) {
        let temporary = TemporaryStore("fuzz")
        let store = try temporary.open()
        try writeChain(store, chain: "f", seed: 5, rounds: 3, pages: 40, dirty: 8)
        return (temporary, store)
    }

    @Test(.timeLimit(.minutes(2))) func manifestsAndChains() throws {
        let (temporary, store) = try Self.sample()
        defer { temporary.cleanup() }
        let manifest = try store.manifest(try store.chain("f").entries[1].manifest).encoded()
        let chain = try store.chain("f").encoded()
        var rng = SplitMix(100)
        var accepted = 0
        for i in 0..<Self.iterations {
            let m = Self.mutate(manifest, &rng, fixChecksum: i % 2 == 0)
            if Self.parsesOrRefuses(
                "manifest \(i)", { try m.withUnsafeBytes { try GenerationManifest(decoding: $0, file: "fuzz.gen") } })
                != nil
            {
                accepted += 1
            }
            let c = Self.mutate(chain, &rng, fixChecksum: i % 2 == 0)
            _ = Self.parsesOrRefuses(
                "chain \(i)", { try c.withUnsafeBytes { try Chain(decoding: $0, file: "fuzz.chain") } })
        }
        // Mutations that keep the structure valid do exist; most are refused.
        #expect(accepted < Self.iterations)
    }

    @Test(.timeLimit(.minutes(3))) func indexSegmentsPacksAndSnapshots() throws {
        let (temporary, store) = try Self.sample()
        defer { temporary.cleanup() }
        let segment = try temporary.files(in: "index", suffix: ".idx")[0]
        let pack = try temporary.files(in: "packs", suffix: ".pack")[0]
        let segmentBytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(temporary.path)/index/\(segment)")))
        let packBytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(temporary.path)/packs/\(pack)")))
        let map = try store.pageMap(chain: "f", generation: 2)
        var rng = SplitMix(200)
        var opened = 0, refused = 0
        for i in 0..<(Self.iterations / 4) {
            let damagedSegment = Self.mutate(segmentBytes, &rng, fixChecksum: i % 2 == 0)
            try Data(damagedSegment).write(to: URL(fileURLWithPath: "\(temporary.path)/index/\(segment)"))
            // The pack trailer's checksum is not at the very end; mutate it plainly.
            let damagedPack = Self.mutate(packBytes, &rng, fixChecksum: false)
            try Data(damagedPack).write(to: URL(fileURLWithPath: "\(temporary.path)/packs/\(pack)"))
            guard let reopened = Self.parsesOrRefuses("store \(i)", { try Store(at: temporary.path) }) else {
                refused += 1
                continue
            }
            opened += 1
            // verify reports damage rather than throwing it.
            _ = try reopened.verify(deep: true)
            _ = Self.parsesOrRefuses("pages \(i)", { try reopened.reader().readPages(map) { _, _ in } })
        }
        var snapshot = BinaryWriter()
        snapshot.append(magic: "CHPXSNAP")
        snapshot.append(Snapshot.version)
        snapshot.append(ChunkID(high: 1, low: 2))
        PageDelta(full: map).encode(into: &snapshot)
        snapshot.appendChecksum()
        // Some damaged stores still open (and are read or refused page by page above).
        #expect(opened > 0, "\(refused) of \(Self.iterations / 4) refused")
        var snapshotsRead = 0, snapshotsRefused = 0
        for i in 0..<Self.iterations {
            let bytes = Self.mutate(snapshot.bytes, &rng, fixChecksum: i % 2 == 0)
            try Data(bytes).write(
                to: URL(fileURLWithPath: "\(temporary.path)/snapshots/\(ChunkID(high: 1, low: 2).hex).map"))
            if Self.parsesOrRefuses(
                "snapshot \(i)", { try Snapshot.read(ChunkID(high: 1, low: 2), in: store.directory) }) != nil
            {
                snapshotsRead += 1
            } else {
                snapshotsRefused += 1
            }
        }
        // Half the inputs keep a bad checksum: those at least are refused.
        #expect(snapshotsRefused >= Self.iterations / 2)
        #expect(snapshotsRead + snapshotsRefused == Self.iterations)
    }
}
