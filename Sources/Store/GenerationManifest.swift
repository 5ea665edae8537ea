import Syscall

/// One generation of a chain, as stored in `manifests/<id>.gen`. Its id is the XXH3-128 of its
/// bytes, which include the parent's id: a chain is tamper-evident, like a chain of commits.
///
///     "CHPXGEN1" u32 version
///     u64 generation  i64 createdNanoseconds (Unix)  parent id(16, zeros for none)  u8 kind  u8[7] 0
///     chain name (u16 length, UTF-8)
///     statistics: 6 x u64 (see Statistics)
///     u32 metadataLength, metadata (opaque to the store: the engine's process state)
///     page delta (see PageDelta.encode)
///     u64 XXH3-64 of everything above
public struct GenerationManifest: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        /// The delta is the whole page map; rebuilding stops here.
        case full = 0
        /// The delta applies on top of the parent's page map.
        case delta = 1
    }

    /// Figures about how the generation was written, for `dumpinfo`.
    public struct Statistics: Sendable, Equatable {
        /// Pages the writer was given (dirty or, for a full generation, all present pages).
        public var pagesWritten: UInt64 = 0
        /// Of those, pages that were zero.
        public var zeroPages: UInt64 = 0
        /// Chunks this generation added to the store (not found in it before).
        public var newChunks: UInt64 = 0
        /// Bytes those new chunks take in packs (compressed, with frame headers).
        public var storedBytes: UInt64 = 0
        /// Uncompressed bytes of those new chunks.
        public var newLogicalBytes: UInt64 = 0
        /// Pages unmapped by this generation.
        public var unmappedPages: UInt64 = 0

        public init() {}

        static func + (a: Statistics, b: Statistics) -> Statistics {
            var sum = Statistics()
            sum.pagesWritten = a.pagesWritten + b.pagesWritten
            sum.zeroPages = a.zeroPages + b.zeroPages
            sum.newChunks = a.newChunks + b.newChunks
            sum.storedBytes = a.storedBytes + b.storedBytes
            sum.newLogicalBytes = a.newLogicalBytes + b.newLogicalBytes
            sum.unmappedPages = a.unmappedPages + b.unmappedPages
            return sum
        }
    }

    public var generation: UInt64
    public var createdNanoseconds: Int64
    public var parent: ChunkID?
    public var kind: Kind
    public var chain: String
    public var statistics: Statistics
    public var metadata: [UInt8]
    public var delta: PageDelta

    static let version: UInt32 = 1
    /// A manifest larger than this is refused before it is read (a 64 GiB process is ~400 MiB).
    static let maxSize = 1 << 32

    static func fileName(_ id: ChunkID) -> String { "\(id.hex).gen" }

    public init(
        generation: UInt64, createdNanoseconds: Int64, parent: ChunkID?, kind: Kind, chain: String,
        statistics: Statistics, metadata: [UInt8], delta: PageDelta
    ) {
        self.generation = generation
        self.createdNanoseconds = createdNanoseconds
        self.parent = parent
        self.kind = kind
        self.chain = chain
        self.statistics = statistics
        self.metadata = metadata
        self.delta = delta
    }

    public func encoded() -> [UInt8] {
        // Exactly (but for the chain's name): a guess short of a large base's page list made
        // the bytes grow by a copy, both held at once.
        var writer = BinaryWriter(capacity: 256 + chain.utf8.count + metadata.count + delta.encodedSize)
        writer.append(magic: "CHPXGEN1")
        writer.append(Self.version)
        writer.append(generation)
        writer.append(createdNanoseconds)
        writer.append(parent ?? .none)
        writer.append(kind.rawValue)
        writer.append(bytes: [UInt8](repeating: 0, count: 7))
        writer.append(string: chain)
        for value in [
            statistics.pagesWritten, statistics.zeroPages, statistics.newChunks,
            statistics.storedBytes, statistics.newLogicalBytes, statistics.unmappedPages,
        ] {
            writer.append(value)
        }
        writer.append(UInt32(metadata.count))
        writer.append(bytes: metadata)
        delta.encode(into: &writer)
        writer.appendChecksum()
        return writer.bytes
    }

    /// Parses a manifest; `file` names it in errors.
    public init(decoding bytes: UnsafeRawBufferPointer, file: String) throws(StoreError) {
        var reader = BinaryReader(bytes, file: file)
        try reader.expect(magic: "CHPXGEN1")
        let version: UInt32 = try reader.read()
        guard version == Self.version else {
            throw .malformed(file: file, reason: "manifest format \(version) is unknown")
        }
        generation = try reader.read()
        createdNanoseconds = try reader.read()
        let parent = try reader.readID()
        self.parent = parent == .none ? nil : parent
        guard let kind = Kind(rawValue: try reader.read()) else { throw reader.fail("unknown generation kind") }
        self.kind = kind
        try reader.skip(7)
        chain = try reader.readString()
        var statistics = Statistics()
        statistics.pagesWritten = try reader.read()
        statistics.zeroPages = try reader.read()
        statistics.newChunks = try reader.read()
        statistics.storedBytes = try reader.read()
        statistics.newLogicalBytes = try reader.read()
        statistics.unmappedPages = try reader.read()
        self.statistics = statistics
        let metadataLength = Int(try reader.read(UInt32.self))
        metadata = try reader.readBytes(metadataLength)
        delta = try PageDelta.decode(from: &reader)
        try reader.verifyChecksum()
    }
}
