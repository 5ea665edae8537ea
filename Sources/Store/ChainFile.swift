import Syscall

/// A chain: the generations of one checkpointed process, oldest first. `chains/<name>.chain` is
/// replaced atomically on every commit; publishing it is the commit point of a generation.
///
///     "CHPXCHN1" u32 version, name (u16 length, UTF-8), u64 nextGeneration, u64 count,
///     count x (u64 generation, manifest id(16), i64 createdNanoseconds, u8 kind, u8[7] 0,
///              u64 deltaEntries), u64 XXH3-64
public struct Chain: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var generation: UInt64
        public var manifest: ChunkID
        public var createdNanoseconds: Int64
        public var kind: GenerationManifest.Kind
        /// Pages set plus ranges unmapped by the generation's delta (its rebuild cost).
        public var deltaEntries: UInt64
    }

    public var name: String
    /// Generation numbers are never reused, even when GC drops generations.
    public var nextGeneration: UInt64
    public var entries: [Entry]

    public var head: Entry? { entries.last }

    public func entry(_ generation: UInt64) -> Entry? {
        entries.first { $0.generation == generation }
    }

    static let version: UInt32 = 1
    static let entrySize = 48
    static let maxSize = 64 << 20

    static func fileName(_ name: String) -> String { "\(name).chain" }

    /// 1-64 of [A-Za-z0-9._-], not starting with '.': safe as a file name.
    public static func isValidName(_ name: String) -> Bool {
        guard (1...64).contains(name.utf8.count), !name.hasPrefix(".") else { return false }
        return name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F
                || c == 0x2D
        }
    }

    /// The chain file's bytes.
    public func encoded() -> [UInt8] {
        var writer = BinaryWriter(capacity: 64 + entries.count * Self.entrySize)
        writer.append(magic: "CHPXCHN1")
        writer.append(Self.version)
        writer.append(string: name)
        writer.append(nextGeneration)
        writer.append(UInt64(entries.count))
        for entry in entries {
            writer.append(entry.generation)
            writer.append(entry.manifest)
            writer.append(entry.createdNanoseconds)
            writer.append(entry.kind.rawValue)
            writer.append(bytes: [UInt8](repeating: 0, count: 7))
            writer.append(entry.deltaEntries)
        }
        writer.appendChecksum()
        return writer.bytes
    }

    init(name: String, nextGeneration: UInt64, entries: [Entry]) {
        self.name = name
        self.nextGeneration = nextGeneration
        self.entries = entries
    }

    init(decoding bytes: UnsafeRawBufferPointer, file: String) throws(StoreError) {
        var reader = BinaryReader(bytes, file: file)
        try reader.expect(magic: "CHPXCHN1")
        let version: UInt32 = try reader.read()
        guard version == Self.version else {
            throw .malformed(file: file, reason: "chain format \(version) is unknown")
        }
        name = try reader.readString()
        guard Self.isValidName(name) else { throw reader.fail("invalid chain name") }
        nextGeneration = try reader.read()
        let count: UInt64 = try reader.read()
        try reader.check(count: count, recordSize: Self.entrySize, "generation")
        entries = []
        entries.reserveCapacity(Int(count))
        for _ in 0..<count {
            let generation: UInt64 = try reader.read()
            let manifest = try reader.readID()
            let created: Int64 = try reader.read()
            guard let kind = GenerationManifest.Kind(rawValue: try reader.read()) else {
                throw reader.fail("unknown generation kind")
            }
            try reader.skip(7)
            let deltaEntries: UInt64 = try reader.read()
            guard generation < nextGeneration, entries.last.map({ $0.generation < generation }) ?? true else {
                throw reader.fail("generation numbers out of order")
            }
            entries.append(
                Entry(
                    generation: generation, manifest: manifest, createdNanoseconds: created, kind: kind,
                    deltaEntries: deltaEntries))
        }
        try reader.verifyChecksum()
        guard entries.first.map({ $0.kind == .full }) ?? true else {
            throw .malformed(file: file, reason: "the oldest generation is not a full one")
        }
    }
}
