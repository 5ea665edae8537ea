import CXXHash
import Syscall

/// Index segment format: a sorted table mapped into memory and binary-searched, never loaded
/// into a dictionary. 28 bytes per chunk, plus a fan-out table of at most half a byte per chunk.
///
///     entries  id(16, big-endian) u32 pack u32 frameOffset u24 frameLength u8 slot   28 bytes
///     fanout   (1 << bits) x u32: entries whose id's top `bits` bits are <= i (cumulative)
///     packs    packCount x 16-byte pack ids (an entry's `pack` is an ordinal in this table)
///     footer   u64 entryCount u32 packCount u32 bits u32 version u32 0 "CHPXIDX1" u64 XXH3-64
///
/// The footer is last so a segment can be written in one pass; it is named by its XXH3-128.
enum IndexFormat {
    static let version: UInt32 = 1
    static let entrySize = 28
    static let footerSize = 40
    static let maxFanoutBits = 16

    /// At least 8 entries per fan-out bucket on average: the table costs <= 0.5 byte per chunk.
    static func fanoutBits(for count: Int) -> Int {
        var bits = 0
        while bits < maxFanoutBits && (count >> (bits + 1)) >= 8 { bits += 1 }
        return bits
    }

    static func fileName(_ id: ChunkID) -> String { "\(id.hex).idx" }
}

/// One mapped, verified index segment.
final class IndexSegment: @unchecked Sendable {
    let id: ChunkID
    let file: String
    let count: Int
    private let map: MappedFile
    private let bits: Int
    private let fanoutOffset: Int
    /// The packs its entries name (an entry holds an ordinal in this table).
    let packs: [ChunkID]

    /// Maps and verifies the segment (checksum, bounds, fan-out monotonic).
    init(id: ChunkID, in directory: StoreDirectory) throws(StoreError) {
        self.id = id
        let name = IndexFormat.fileName(id)
        file = "\(directory.path)/index/\(name)"
        do {
            let fd = try FileDescriptor.open(name, in: directory.index, [.readOnly, .noFollow])
            defer { fd.close() }
            map = try MappedFile(fd)
        } catch { throw error.store("open", file) }
        let bytes = map.bytes
        guard bytes.count >= IndexFormat.footerSize else {
            throw .malformed(file: file, reason: "too short for an index segment")
        }
        var footer = BinaryReader(
            UnsafeRawBufferPointer(rebasing: bytes[(bytes.count - IndexFormat.footerSize)...]), file: file)
        let count: UInt64 = try footer.read()
        let packCount: UInt32 = try footer.read()
        let bits: UInt32 = try footer.read()
        let version: UInt32 = try footer.read()
        try footer.skip(4)
        try footer.expect(magic: "CHPXIDX1")
        let stored: UInt64 = try footer.read()
        guard version == IndexFormat.version else {
            throw .malformed(file: file, reason: "index format \(version) is unknown")
        }
        guard bits <= UInt32(IndexFormat.maxFanoutBits), count <= UInt64(bytes.count / IndexFormat.entrySize) else {
            throw .malformed(file: file, reason: "impossible footer")
        }
        let fanoutOffset = Int(count) * IndexFormat.entrySize
        let packsOffset = fanoutOffset + (4 << Int(bits))
        guard UInt64(packsOffset) + UInt64(packCount) * 16 + UInt64(IndexFormat.footerSize) == UInt64(bytes.count)
        else {
            throw .malformed(file: file, reason: "sizes in the footer do not match the file size")
        }
        guard checksum64(UnsafeRawBufferPointer(rebasing: bytes[..<(bytes.count - 8)])) == stored else {
            throw .malformed(file: file, reason: "checksum mismatch (run `cpx rebuild-index`)")
        }
        self.count = Int(count)
        self.bits = Int(bits)
        self.fanoutOffset = fanoutOffset
        var packs: [ChunkID] = []
        packs.reserveCapacity(Int(packCount))
        for i in 0..<Int(packCount) { packs.append(loadID(bytes, at: packsOffset + 16 * i)) }
        self.packs = packs
        var previous: UInt32 = 0
        for bucket in 0..<(1 << self.bits) {
            let end = fanout(bucket)
            guard end >= previous, end <= UInt32(count) else {
                throw .malformed(file: file, reason: "fan-out table is not monotonic")
            }
            previous = end
        }
        guard previous == UInt32(count) else {
            throw .malformed(file: file, reason: "fan-out table does not cover every entry")
        }
        // The checksum read every page; a lookup reads a few. The rest stays in the page cache,
        // not in this process's memory (a 16 GiB base's segment is 78 MB).
        map.releasePages()
    }

    @inline(__always)
    private func fanout(_ bucket: Int) -> UInt32 {
        UInt32(littleEndian: map.bytes.loadUnaligned(fromByteOffset: fanoutOffset + 4 * bucket, as: UInt32.self))
    }

    @inline(__always)
    func entryID(_ i: Int) -> ChunkID { loadID(map.bytes, at: i * IndexFormat.entrySize) }

    /// The location stored in entry `i`; nil when its pack ordinal is out of range.
    func location(_ i: Int) -> ChunkLocation? {
        let base = i * IndexFormat.entrySize + 16
        let bytes = map.bytes
        let pack = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: base, as: UInt32.self)))
        guard pack < packs.count else { return nil }
        let frameOffset = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: base + 4, as: UInt32.self))
        let packed = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: base + 8, as: UInt32.self))
        return ChunkLocation(
            pack: packs[pack], frameOffset: frameOffset, frameLength: packed & 0xFF_FFFF, slot: UInt8(packed >> 24))
    }

    /// Binary search within the id's fan-out bucket.
    func find(_ id: ChunkID) -> Int? {
        let bucket = bits == 0 ? 0 : Int(id.high >> UInt64(64 - bits))
        var low = bucket == 0 ? 0 : Int(fanout(bucket - 1))
        var high = Int(fanout(bucket))
        while low < high {
            let middle = (low + high) >> 1
            let candidate = entryID(middle)
            if candidate == id { return middle }
            if candidate < id { low = middle + 1 } else { high = middle }
        }
        return nil
    }

    func lookup(_ id: ChunkID) -> ChunkLocation? {
        guard let i = find(id) else { return nil }
        return location(i)
    }
}

/// Writes a segment from entries given in ascending id order, in one pass.
final class IndexSegmentWriter {
    private let directory: StoreDirectory
    private let file: StagedFile
    private let checksum: OpaquePointer
    private var packOrdinals: [ChunkID: UInt32] = [:]
    private var packs: [ChunkID] = []
    /// Entries per top-16-bit bucket, reduced to the final fan-out width at the end.
    private var histogram = [UInt32](repeating: 0, count: 1 << IndexFormat.maxFanoutBits)
    private(set) var count = 0
    private var last: ChunkID?
    /// Entries not yet appended to the file: appended (hashed, buffered) some 64 KiB at a time
    /// rather than 28 bytes at a time, which cost most of a large segment's writing.
    private var pending = BinaryWriter(capacity: IndexSegmentWriter.pendingBytes + IndexFormat.entrySize)
    static let pendingBytes = 64 << 10

    init(directory: StoreDirectory) throws(StoreError) {
        self.directory = directory
        file = try StagedFile("index", in: directory)
        checksum = XXH3_createState()
        XXH3_64bits_reset(checksum)
    }

    deinit { XXH3_freeState(checksum) }

    /// Adds an entry; ids must ascend. A repeated id is skipped (the first location wins).
    func add(_ id: ChunkID, _ location: ChunkLocation) throws(StoreError) {
        if let last {
            precondition(last <= id, "index entries must be added in ascending order")
            if last == id { return }
        }
        last = id
        let ordinal: UInt32
        if let known = packOrdinals[location.pack] {
            ordinal = known
        } else {
            ordinal = UInt32(packs.count)
            packOrdinals[location.pack] = ordinal
            packs.append(location.pack)
        }
        pending.append(id)
        pending.append(ordinal)
        pending.append(location.frameOffset)
        pending.append(location.frameLength & 0xFF_FFFF | UInt32(location.slot) << 24)
        histogram[Int(id.high >> 48)] += 1
        count += 1
        if pending.bytes.count >= Self.pendingBytes { try appendPending() }
    }

    /// Writes fan-out, packs and footer, syncs and publishes; returns the segment id.
    func finish() throws(StoreError) -> ChunkID {
        try appendPending()
        let bits = IndexFormat.fanoutBits(for: count)
        var tail = BinaryWriter(capacity: (4 << bits) + 16 * packs.count + IndexFormat.footerSize)
        var running: UInt32 = 0
        let shift = IndexFormat.maxFanoutBits - bits
        for bucket in 0..<(1 << bits) {
            for fine in (bucket << shift)..<((bucket + 1) << shift) { running += histogram[fine] }
            tail.append(running)
        }
        for pack in packs { tail.append(pack) }
        tail.append(UInt64(count))
        tail.append(UInt32(packs.count))
        tail.append(UInt32(bits))
        tail.append(IndexFormat.version)
        tail.append(UInt32(0))
        tail.append(magic: "CHPXIDX1")
        try append(tail.bytes)
        var closing = BinaryWriter(capacity: 8)
        closing.append(XXH3_64bits_digest(checksum))
        try file.append(closing.bytes)
        let id = try file.publish(in: directory.index, dirName: "index", name: IndexFormat.fileName)
        try directory.sync(directory.index, dirName: "index")
        return id
    }

    func discard() { file.discard() }

    private func appendPending() throws(StoreError) {
        guard !pending.bytes.isEmpty else { return }
        try append(pending.bytes)
        pending = BinaryWriter(capacity: Self.pendingBytes + IndexFormat.entrySize)
    }

    private func append(_ bytes: [UInt8]) throws(StoreError) {
        bytes.withUnsafeBytes { XXH3_64bits_update(checksum, $0.baseAddress, $0.count) }
        try file.append(bytes)
    }
}
