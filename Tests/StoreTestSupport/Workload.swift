import Store

/// A deterministic stand-in for a process's memory, for tests, the crash-test writer and the
/// demo: pages described by small specs, evolved round by round by a seeded generator, so the
/// exact memory of round N can be recomputed anywhere from (seed, N).
public struct SyntheticMemory: Sendable {
    public enum Content: Hashable, Sendable {
        case zero
        /// Incompressible bytes from a seed.
        case random(UInt64)
        /// Text-like bytes that LZ4 shrinks several times.
        case compressible(UInt64)
    }

    public let seed: UInt64
    public private(set) var round = 0
    /// Page number -> content.
    public private(set) var pages: [UInt64: Content] = [:]
    /// Pages per round that change, roughly.
    public var dirtyPerRound: Int

    /// What one round changed, in the order a writer records it.
    public struct Change: Sendable {
        public var unmapped: [PageRange] = []
        public var written: [UInt64] = []
    }

    public init(seed: UInt64, pages count: Int = 512, dirtyPerRound: Int = 24) {
        self.seed = seed
        self.dirtyPerRound = dirtyPerRound
        var rng = SplitMix(seed)
        let base: UInt64 = 0x7f00_0000 + (seed % 64) * 0x10000
        for k in 0..<UInt64(count) { pages[base + k] = Self.randomContent(&rng) }
    }

    /// The initial memory, then `rounds` rounds applied.
    public init(seed: UInt64, rounds: Int, pages count: Int = 512, dirtyPerRound: Int = 24) {
        self.init(seed: seed, pages: count, dirtyPerRound: dirtyPerRound)
        for _ in 0..<rounds { _ = advance() }
    }

    static func randomContent(_ rng: inout SplitMix) -> Content {
        switch rng.next() % 10 {
        case 0, 1: .zero
        case 2, 3, 4: .random(rng.next())
        case 5, 6, 7, 8: .compressible(rng.next())
        // A small shared pool: duplicates within and across chains.
        default: .compressible(rng.next() % 16)
        }
    }

    /// One round: writes to random pages, sometimes an unmap, sometimes a new mapping.
    public mutating func advance() -> Change {
        round += 1
        var rng = SplitMix(seed &* 0x9E37_79B9 &+ UInt64(round))
        var change = Change()
        let sorted = pages.keys.sorted()
        if rng.next() % 4 == 0, sorted.count > 64 {
            let start = sorted[Int(rng.next() % UInt64(sorted.count))]
            let range = PageRange(first: start, count: 1 + rng.next() % 8)
            for page in range.first..<range.end { pages[page] = nil }
            change.unmapped.append(range)
        }
        if rng.next() % 5 == 0 {
            let first = 0x6000_0000 + (rng.next() % 4096) * 16
            for page in first..<(first + 1 + rng.next() % 12) {
                pages[page] = Self.randomContent(&rng)
                change.written.append(page)
            }
        }
        let keys = pages.keys.sorted()
        for _ in 0..<dirtyPerRound where !keys.isEmpty {
            let page = keys[Int(rng.next() % UInt64(keys.count))]
            pages[page] = Self.randomContent(&rng)
            change.written.append(page)
        }
        return change
    }

    /// The bytes of a page with `content`.
    public static func fill(_ content: Content, _ buffer: UnsafeMutableRawBufferPointer) {
        switch content {
        case .zero:
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
        case .random(let seed):
            var rng = SplitMix(seed)
            for k in stride(from: 0, to: buffer.count, by: 8) {
                buffer.storeBytes(of: rng.next(), toByteOffset: k, as: UInt64.self)
            }
        case .compressible(let seed):
            let words = ["chpox ", "page ", "checkpoint ", "delta ", "store ", "\(seed) "]
            var rng = SplitMix(seed)
            var k = 0
            while k < buffer.count {
                for byte in words[Int(rng.next() % 6)].utf8 where k < buffer.count {
                    buffer[k] = byte
                    k += 1
                }
            }
        }
    }

    public func bytes(of page: UInt64) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: pageSize)
        result.withUnsafeMutableBytes { Self.fill(pages[page]!, $0) }
        return result
    }

    /// The page map a store should rebuild for this memory.
    public func expectedMap() -> PageMap {
        PageMap(
            pages: pages.keys.sorted().map { page in
                bytes(of: page).withUnsafeBytes { PageEntry(page: page, chunk: ChunkID(hashing: $0)) }
            })
    }

    /// Writes all pages (a full generation) or `change` (a delta) into `writer`.
    public func record(_ change: Change?, into writer: GenerationWriter) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: pageSize)
        defer { buffer.deallocate() }
        if let change, writer.kind == .delta {
            for range in change.unmapped { writer.unmap(range) }
            for page in change.written where pages[page] != nil {
                Self.fill(pages[page]!, buffer)
                try writer.put(firstPage: page, contents: UnsafeRawBufferPointer(buffer))
            }
        } else {
            for page in pages.keys.sorted() {
                Self.fill(pages[page]!, buffer)
                try writer.put(firstPage: page, contents: UnsafeRawBufferPointer(buffer))
            }
        }
    }
}

/// SplitMix64: tiny, fast, good enough for test data.
public struct SplitMix: Sendable {
    private var state: UInt64
    public init(_ seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Rebuilds `generation` and checks every page's bytes against `memory`; returns a failure
/// description or nil.
public func mismatch(
    _ store: Store, chain: String, generation: UInt64, expected memory: SyntheticMemory
) throws -> String? {
    let map = try store.pageMap(chain: chain, generation: generation)
    let expected = memory.expectedMap()
    guard map == expected else {
        let first = zip(map.pages, expected.pages).first { $0 != $1 }.map { "\($0.0.page)" } ?? "end"
        return
            "generation \(generation): \(map.pages.count) pages rebuilt, \(expected.pages.count) expected; "
            + "first difference at \(first)"
    }
    var bad: String?
    try store.reader().readPages(map) { entry, bytes in
        if bad == nil && !bytes.elementsEqual(memory.bytes(of: entry.page)) {
            bad = "generation \(generation): page \(entry.page) differs"
        }
    }
    return bad
}
