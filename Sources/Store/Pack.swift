import CLZ4
import Dispatch
import Synchronization
import Syscall

/// Where a chunk lives: which pack, which frame in it, which page of that frame.
public struct ChunkLocation: Hashable, Sendable {
    public var pack: ChunkID
    /// Byte offset of the frame's header in the pack file.
    public var frameOffset: UInt32
    /// Header plus payload, in bytes.
    public var frameLength: UInt32
    /// Which page of the frame.
    public var slot: UInt8
}

/// Pack file format (all integers little-endian). A pack is named by the XXH3-128 of its bytes.
///
///     header   "CHPXPACK" u32 version u32 reserved                       16 bytes
///     frames   u32 "FRAM" u8 pages u8 encoding(0 raw, 1 lz4) u16 0 u32 payloadLength, payload
///     trailer  entries: id(16) u32 frameOffset u32 frameLength u8 slot u8[3] 0   28 bytes each
///     footer   u64 entryCount u64 trailerOffset u64 XXH3-64(trailer) "CHPXPEND"  32 bytes
///
/// The trailer makes every pack self-describing: the index can be rebuilt from packs alone.
enum PackFormat {
    static let version: UInt32 = 1
    static let headerSize = 16
    static let frameHeaderSize = 12
    static let frameMagic: UInt32 = 0x4D41_5246  // "FRAM"
    static let trailerEntrySize = 28
    static let footerSize = 32
    static let maxPagesPerFrame = 16
    /// A pack is closed when it reaches this size.
    static let targetSize = 32 << 20
    /// Frames must stay addressable by the index's 32-bit offsets.
    static let maxSize = Int(UInt32.max)
    static let maxFrameLength = frameHeaderSize + Page.bytes(maxPagesPerFrame)

    enum Encoding: UInt8 {
        case raw = 0
        case lz4 = 1
    }

    static func fileName(_ id: ChunkID) -> String { "\(id.hex).pack" }
}

/// A chunk a packer stored: a trailer entry and its pack, by its place in a list of packs.
struct PackedChunk {
    var id: ChunkID
    var pack: UInt32
    var frameOffset: UInt32
    var frameLength: UInt32
    var slot: UInt8

    func location(in packs: [ChunkID]) -> ChunkLocation {
        ChunkLocation(pack: packs[Int(pack)], frameOffset: frameOffset, frameLength: frameLength, slot: slot)
    }
}

/// One entry of a pack's trailer.
struct PackEntry: Hashable, Sendable {
    var id: ChunkID
    var frameOffset: UInt32
    var frameLength: UInt32
    var slot: UInt8
}

/// Writes one pack: frames appended as runs of new pages arrive, then the trailer; published
/// into packs/ under its content hash when finished.
final class PackWriter {
    private let file: StagedFile
    private(set) var entries: [PackEntry] = []
    /// Bytes of page data in, and frame bytes out, for statistics.
    private(set) var logicalBytes = 0
    private(set) var storedBytes = 0
    private let directory: StoreDirectory

    init(directory: StoreDirectory) throws(StoreError) {
        self.directory = directory
        file = try StagedFile("pack", in: directory)
        var header = BinaryWriter()
        header.append(magic: "CHPXPACK")
        header.append(PackFormat.version)
        header.append(UInt32(0))
        try file.append(header.bytes)
    }

    var isEmpty: Bool { entries.isEmpty }
    var isFull: Bool { file.size >= PackFormat.targetSize }

    /// Room for the LZ4 of one frame's pages (`compress`'s output).
    static let compressedCapacity = Int(LZ4_compressBound(Int32(Page.bytes(PackFormat.maxPagesPerFrame))))

    /// LZ4 of `pages` (1...16 whole pages) into `output` (`compressedCapacity` bytes): its length
    /// when that is shorter than the pages (the frame is stored LZ4), nil when it is not (stored
    /// raw). Touches nothing but its arguments: frames are compressed on any thread, many at once.
    static func compress(_ pages: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
        precondition(!pages.isEmpty && pages.count <= Page.bytes(PackFormat.maxPagesPerFrame))
        precondition(output.count >= compressedCapacity)
        let compressed = LZ4_compress_default(
            pages.baseAddress!.assumingMemoryBound(to: CChar.self),
            output.baseAddress!.assumingMemoryBound(to: CChar.self),
            Int32(pages.count), Int32(output.count))
        return compressed > 0 && Int(compressed) < pages.count ? Int(compressed) : nil
    }

    /// Appends one frame holding `pages` (1...16 whole pages) whose ids are `ids`: stored as
    /// `compressed` (what `compress` made of these pages, nil when it could not shrink them).
    func appendFrame(
        _ pages: UnsafeRawBufferPointer, ids: ArraySlice<ChunkID>, compressed: UnsafeRawBufferPointer?
    ) throws(StoreError) {
        let count = pages.pageCount
        precondition(
            count >= 1 && count <= PackFormat.maxPagesPerFrame && count == ids.count && Page.isAligned(pages.count))
        guard file.size + PackFormat.maxFrameLength <= PackFormat.maxSize else {
            throw .invalidArgument("pack exceeds 4 GiB")
        }
        let payload = compressed ?? pages
        let frameOffset = UInt32(file.size)
        var header = BinaryWriter(capacity: PackFormat.frameHeaderSize)
        header.append(PackFormat.frameMagic)
        header.append(UInt8(count))
        header.append((compressed != nil ? PackFormat.Encoding.lz4 : .raw).rawValue)
        header.append(UInt16(0))
        header.append(UInt32(payload.count))
        try file.append(header.bytes)
        try file.append(payload)
        let frameLength = UInt32(PackFormat.frameHeaderSize + payload.count)
        logicalBytes += pages.count
        storedBytes += Int(frameLength)
        for (slot, id) in ids.enumerated() {
            entries.append(PackEntry(id: id, frameOffset: frameOffset, frameLength: frameLength, slot: UInt8(slot)))
        }
    }

    /// Writes the trailer and ends the pack; returns its id. `publish` puts it in packs/.
    func seal() throws(StoreError) -> ChunkID {
        var trailer = BinaryWriter(capacity: entries.count * PackFormat.trailerEntrySize + PackFormat.footerSize)
        let trailerOffset = file.size
        for entry in entries {
            trailer.append(entry.id)
            trailer.append(entry.frameOffset)
            trailer.append(entry.frameLength)
            trailer.append(entry.slot)
            trailer.append(bytes: [0, 0, 0])
        }
        trailer.append(UInt64(entries.count))
        trailer.append(UInt64(trailerOffset))
        let sum = trailer.bytes.withUnsafeBytes { checksum64($0) }
        trailer.append(sum)
        trailer.append(magic: "CHPXPEND")
        try file.append(trailer.bytes)
        return try file.seal()
    }

    /// Syncs the sealed pack and renames it into packs/, on any thread (one at a time). The
    /// caller fsyncs packs/ before anything refers to the pack.
    func publish() throws(StoreError) {
        _ = try file.publish(in: directory.packs, dirName: "packs", name: PackFormat.fileName)
    }

    /// Drops a pack that is not published.
    func discard() { file.discard() }
}

/// Gathers new chunks into frames of up to 16 pages and frames into packs of about 32 MiB:
/// how every new chunk, from a writer or from GC's repack, reaches the disk.
///
/// A pipeline, so that the caller, the compression and the disk all work at once:
/// 1. the caller's thread gathers pages into a batch (`framesPerBatch` frames, 4 MiB of pages
///    by default);
/// 2. full batches are compressed one after the other in the order they filled, each on every
///    core, each frame into an output buffer of its own;
/// 3. one thread appends each compressed batch's frames, in that order, to the open pack and
///    seals the pack when it is full; a sealed pack is published (fsync, rename into packs/) on
///    a thread of its own while the next one is written.
/// At most `batchesInFlight` batches exist: a caller that gets ahead waits for one to be
/// appended. Pack boundaries are where they would be one frame at a time, so the packs' bytes,
/// and their names, depend only on the chunks added and their order, never on the number of
/// cores or on which thread finished first.
///
/// A write or a publish that fails stops the appends: the failure is thrown by the caller's
/// next `add` or by `finish`, once nothing is in flight any more; the packs that were published
/// all the same are in `finished` (the caller removes them, see `GenerationWriter.abandon`), the
/// rest is garbage in tmp/. No pack holds part of a batch. `finish` returns once every pack is
/// published and packs/ is synced: nothing may refer to a pack before.
final class ChunkPacker {
    /// Frames compressed at once: enough for every core to take a few (a frame is 64 KiB, about
    /// 100 us of LZ4), few enough that a batch stays within the caches' reach.
    static let defaultFramesPerBatch = 64

    /// Batches in the pipeline at most: one filling, one compressing, one being appended, and
    /// one so that the caller seldom waits (about 33 MiB of buffers in all, reused).
    static let batchesInFlight = 4

    private let directory: StoreDirectory
    private let framesPerBatch: Int
    private let pipeline: Pipeline
    /// The batch the caller fills; nil once finished.
    private var filling: Batch?

    /// `framesPerBatch` 1 compresses and appends each frame alone (the same bytes out).
    init(directory: StoreDirectory, framesPerBatch: Int = ChunkPacker.defaultFramesPerBatch) {
        precondition(framesPerBatch >= 1)
        self.directory = directory
        self.framesPerBatch = framesPerBatch
        pipeline = Pipeline(directory: directory, framesPerBatch: framesPerBatch, batches: Self.batchesInFlight)
        filling = pipeline.takeBatch()
    }

    deinit { pipeline.discard() }

    /// Adds chunk `id` whose bytes are `page`.
    func add(_ id: ChunkID, page: UnsafeRawBufferPointer) throws(StoreError) {
        guard let batch = filling else { preconditionFailure("chunk added after the packer finished") }
        batch.pages.page(at: batch.ids.count).copyMemory(from: page)
        batch.ids.append(id)
        guard batch.ids.count == framesPerBatch * PackFormat.maxPagesPerFrame else { return }
        pipeline.submit(batch)
        filling = pipeline.takeBatch()
        if let failure = pipeline.failure {
            pipeline.drain()
            throw failure
        }
    }

    /// Appends and publishes what is pending and fsyncs packs/; returns every published pack.
    /// The batches' buffers (about 33 MiB) are let go: nothing more is added.
    func finish() throws(StoreError) -> [ChunkID] {
        if let batch = filling, !batch.ids.isEmpty { pipeline.submit(batch) }
        filling = nil
        pipeline.closePack()
        pipeline.drain()
        pipeline.releaseBatches()
        if let failure = pipeline.failure { throw failure }
        let packs = finished
        if !packs.isEmpty { try directory.sync(directory.packs, dirName: "packs") }
        return packs
    }

    /// The packs published so far, in the order they were written.
    var finished: [ChunkID] { pipeline.published.map(\.pack) }

    var chunks: Int { pipeline.published.reduce(0) { $0 + $1.chunks } }
    var storedBytes: Int { pipeline.published.reduce(0) { $0 + $1.storedBytes } }
    var logicalBytes: Int { pipeline.published.reduce(0) { $0 + $1.logicalBytes } }

    /// Every chunk in the published packs (after `finish`), in an array of exactly their number,
    /// each naming its pack by its place in `packs` (the published packs, in order): read back
    /// from the packs' trailers, as the packer keeps no entry of its own. A full base of a large
    /// process stores one chunk per page: held from the first pack to the commit, the entries
    /// were 32 bytes a chunk (90 MB of a 16 GiB base's peak; Benchmarks/README.md, "Scale"),
    /// where the trailers are in the page cache, just written. 32 bytes a chunk here too, where
    /// a pack's id in each (`ChunkLocation`) took 48.
    func takeChunks() throws(StoreError) -> (chunks: [PackedChunk], packs: [ChunkID]) {
        let published = pipeline.published
        var chunks: [PackedChunk] = []
        chunks.reserveCapacity(published.reduce(0) { $0 + $1.chunks })
        for (ordinal, sealed) in published.enumerated() {
            let name = PackFormat.fileName(sealed.pack)
            let file = "\(directory.path)/packs/\(name)"
            let fd: FileDescriptor
            do { fd = try FileDescriptor.open(name, in: directory.packs, [.readOnly, .noFollow]) } catch {
                throw error.store("open", file)
            }
            defer { fd.close() }
            let entries = try PackReader.readTrailer(fd, file: file)
            guard entries.count == sealed.chunks else {
                throw .malformed(
                    file: file, reason: "its trailer lists \(entries.count) chunks where \(sealed.chunks) were written")
            }
            for entry in entries {
                chunks.append(
                    PackedChunk(
                        id: entry.id, pack: UInt32(ordinal), frameOffset: entry.frameOffset,
                        frameLength: entry.frameLength, slot: entry.slot))
            }
        }
        return (chunks, published.map(\.pack))
    }

    /// `takeChunks`, each with its location.
    func takeLocations() throws(StoreError) -> [(ChunkID, ChunkLocation)] {
        let (chunks, packs) = try takeChunks()
        return chunks.map { ($0.id, $0.location(in: packs)) }
    }

    /// Waits for what is in flight and drops the pack being written; published packs stay (see
    /// `finished`).
    func discard() {
        pipeline.discard()
        filling?.ids.removeAll()
    }

    /// Pages gathered, and where their frames are compressed to. One stage at a time has it:
    /// the caller fills it, then the compression, then the appends, then it is filled again.
    fileprivate final class Batch: @unchecked Sendable {
        /// Frame k is pages 16k..<16k+16.
        let pages: UnsafeMutableRawBufferPointer
        /// Frame k's LZ4 output, at k * `PackWriter.compressedCapacity`.
        let compressed: UnsafeMutableRawBufferPointer
        /// Frame k's LZ4 length, or -1 where LZ4 cannot shrink it (stored raw).
        let lengths: UnsafeMutableBufferPointer<Int>
        var ids: [ChunkID] = []

        init(frames: Int) {
            pages = .allocate(pages: frames * PackFormat.maxPagesPerFrame)
            compressed = .allocate(
                byteCount: frames * PackWriter.compressedCapacity, alignment: MemoryLayout<UInt64>.alignment)
            lengths = .allocate(capacity: frames)
            ids.reserveCapacity(frames * PackFormat.maxPagesPerFrame)
        }

        deinit {
            pages.deallocate()
            compressed.deallocate()
            lengths.deallocate()
        }

        var frameCount: Int { (ids.count + PackFormat.maxPagesPerFrame - 1) / PackFormat.maxPagesPerFrame }

        func frame(_ k: Int) -> UnsafeRawBufferPointer {
            let first = k * PackFormat.maxPagesPerFrame
            return UnsafeRawBufferPointer(pages.pages(first..<min(first + PackFormat.maxPagesPerFrame, ids.count)))
        }

        func output(_ k: Int) -> UnsafeMutableRawBufferPointer {
            let start = k * PackWriter.compressedCapacity
            return UnsafeMutableRawBufferPointer(rebasing: compressed[start..<(start + PackWriter.compressedCapacity)])
        }

        /// Compresses every frame on every core; touches only this batch's buffers.
        func compress() {
            Parallel.forEach(frameCount) { k in
                lengths[k] = PackWriter.compress(frame(k), into: output(k)) ?? -1
            }
        }
    }

    /// A pack sealed by the appends; `published` once it is synced and renamed into packs/.
    /// Its entries are in its trailer (`takeLocations`).
    fileprivate struct SealedPack {
        var pack: ChunkID
        var storedBytes: Int
        var logicalBytes: Int
        var chunks: Int
        var published = false
    }

    /// The stages behind the caller. Who touches what: `pack` belongs to `appending` (and to the
    /// caller once `drain` returned); `state` is shared under its lock; a batch belongs to one
    /// stage at a time, handed on through the queues.
    private final class Pipeline: @unchecked Sendable {
        private let directory: StoreDirectory
        private let framesPerBatch: Int
        /// Compresses one batch at a time, in submission order, then hands it to `appending`.
        private let compressing = DispatchQueue(label: "chpox.packer.compress")
        private let appending = DispatchQueue(label: "chpox.packer.append")
        private let publishing = DispatchQueue(label: "chpox.packer.publish")
        /// Every batch submitted and not yet appended, every pack sealed and not yet published.
        private let inFlight = DispatchGroup()
        /// Batches the caller may still take (free, or not allocated yet).
        private let available: DispatchSemaphore
        private let state = Mutex(State())
        private var pack: PackWriter?

        private struct State {
            var free: [Batch] = []
            var failure: StoreError?
            /// In the order they were sealed.
            var sealed: [SealedPack] = []
        }

        init(directory: StoreDirectory, framesPerBatch: Int, batches: Int) {
            self.directory = directory
            self.framesPerBatch = framesPerBatch
            // Made at 0 and raised: libdispatch traps on freeing a semaphore whose count is
            // below the one it was made with, and the caller keeps the batch it fills.
            available = DispatchSemaphore(value: 0)
            for _ in 0..<batches { available.signal() }
        }

        var failure: StoreError? { state.withLock { $0.failure } }
        var published: [SealedPack] { state.withLock { $0.sealed.filter(\.published) } }

        /// A batch to fill: a free one, or a new one while fewer than `batches` exist; waits
        /// for one to be appended otherwise.
        func takeBatch() -> Batch {
            available.wait()
            return state.withLock { $0.free.popLast() } ?? Batch(frames: framesPerBatch)
        }

        /// Compresses `batch` and appends it after the batches submitted before it.
        func submit(_ batch: Batch) {
            inFlight.enter()
            compressing.async { [self] in
                if failure == nil { batch.compress() }
                appending.async { [self] in
                    if failure == nil {
                        do throws(StoreError) { try append(batch) } catch { failAppending(error) }
                    }
                    batch.ids.removeAll(keepingCapacity: true)
                    state.withLock { $0.free.append(batch) }
                    available.signal()
                    inFlight.leave()
                }
            }
        }

        /// Seals the open pack after the batches submitted (which reach `appending` through
        /// `compressing`, and so must this), and publishes it.
        func closePack() {
            inFlight.enter()
            compressing.async { [self] in
                appending.async { [self] in
                    if failure == nil {
                        do throws(StoreError) { try sealPack() } catch { failAppending(error) }
                    }
                    inFlight.leave()
                }
            }
        }

        /// Frees the batches once nothing is in flight and none will be taken again.
        func releaseBatches() { state.withLock { $0.free = [] } }

        /// Returns once nothing is in flight.
        func drain() { inFlight.wait() }

        /// Waits for what is in flight, then drops the open pack.
        func discard() {
            drain()
            pack?.discard()
            pack = nil
        }

        /// Appends a compressed batch's frames in order, sealing packs as they fill (on
        /// `appending`).
        private func append(_ batch: Batch) throws(StoreError) {
            for k in 0..<batch.frameCount {
                if pack == nil { pack = try PackWriter(directory: directory) }
                let first = k * PackFormat.maxPagesPerFrame
                let ids = batch.ids[first..<min(first + PackFormat.maxPagesPerFrame, batch.ids.count)]
                let length = batch.lengths[k]
                let payload = length < 0 ? nil : UnsafeRawBufferPointer(rebasing: batch.output(k)[0..<length])
                try pack!.appendFrame(batch.frame(k), ids: ids, compressed: payload)
                if pack!.isFull { try sealPack() }
            }
        }

        /// Seals the open pack and hands it to `publishing` (on `appending`).
        private func sealPack() throws(StoreError) {
            guard let current = pack, !current.isEmpty else { return }
            pack = nil
            let id: ChunkID
            do { id = try current.seal() } catch {
                current.discard()
                throw error
            }
            let sealed = SealedPack(
                pack: id, storedBytes: current.storedBytes, logicalBytes: current.logicalBytes,
                chunks: current.entries.count)
            let slot = state.withLock {
                $0.sealed.append(sealed)
                return $0.sealed.count - 1
            }
            let unpublished = UncheckedPack(writer: current)
            inFlight.enter()
            publishing.async { [self] in
                do throws(StoreError) {
                    try unpublished.writer.publish()
                    state.withLock { $0.sealed[slot].published = true }
                } catch {
                    unpublished.writer.discard()
                    fail(error)
                }
                inFlight.leave()
            }
        }

        /// A failure on `appending`: the open pack is dropped, nothing more is appended.
        private func failAppending(_ error: StoreError) {
            pack?.discard()
            pack = nil
            fail(error)
        }

        /// Keeps the first failure.
        private func fail(_ error: StoreError) {
            state.withLock { if $0.failure == nil { $0.failure = error } }
        }
    }

    /// A sealed pack handed to the publishing thread, which alone touches it from then on.
    private struct UncheckedPack: @unchecked Sendable { let writer: PackWriter }
}

/// Reading packs: the trailer, and frames decoded into pages.
enum PackReader {
    /// Parses and checks a pack's footer and trailer (what `rebuild-index` trusts).
    static func readTrailer(_ fd: FileDescriptor, file: String) throws(StoreError) -> [PackEntry] {
        let size: Int64
        do { size = try fd.status().size } catch { throw error.store("stat", file) }
        guard size >= Int64(PackFormat.headerSize + PackFormat.footerSize) else {
            throw .malformed(file: file, reason: "\(size) bytes is too short for a pack")
        }
        var header = [UInt8](repeating: 0, count: PackFormat.headerSize)
        var footer = [UInt8](repeating: 0, count: PackFormat.footerSize)
        try readExactly(fd, into: &header, at: 0, file: file)
        try readExactly(fd, into: &footer, at: size - Int64(PackFormat.footerSize), file: file)
        try header.withRawBytes { (raw) throws(StoreError) in
            var reader = BinaryReader(raw, file: file)
            try reader.expect(magic: "CHPXPACK")
            let version: UInt32 = try reader.read()
            guard version == PackFormat.version else {
                throw StoreError.malformed(file: file, reason: "pack format \(version) is unknown")
            }
        }
        let (count, trailerOffset, sum) = try footer.withRawBytes {
            (raw) throws(StoreError) -> (UInt64, UInt64, UInt64) in
            var reader = BinaryReader(raw, file: file)
            let count: UInt64 = try reader.read()
            let offset: UInt64 = try reader.read()
            let sum: UInt64 = try reader.read()
            try reader.expect(magic: "CHPXPEND")
            return (count, offset, sum)
        }
        let trailerEnd = UInt64(size) - UInt64(PackFormat.footerSize)
        guard trailerOffset >= UInt64(PackFormat.headerSize), trailerOffset <= trailerEnd,
            count == (trailerEnd - trailerOffset) / UInt64(PackFormat.trailerEntrySize),
            (trailerEnd - trailerOffset) % UInt64(PackFormat.trailerEntrySize) == 0
        else { throw .malformed(file: file, reason: "trailer bounds do not match the file size") }
        var trailer = [UInt8](repeating: 0, count: Int(trailerEnd - trailerOffset) + 16)
        try readExactly(fd, into: &trailer, at: Int64(trailerOffset), file: file, count: trailer.count - 16)
        // The checksum covers the entries, the count and the trailer offset.
        trailer.replaceSubrange(trailer.count - 16..<trailer.count, with: footer[0..<16])
        guard trailer.withUnsafeBytes({ checksum64($0) }) == sum else {
            throw .malformed(file: file, reason: "trailer checksum mismatch")
        }
        return try trailer.withRawBytes { (raw) throws(StoreError) -> [PackEntry] in
            var reader = BinaryReader(raw, file: file)
            var entries: [PackEntry] = []
            entries.reserveCapacity(Int(count))
            for _ in 0..<count {
                let id = try reader.readID()
                let frameOffset: UInt32 = try reader.read()
                let frameLength: UInt32 = try reader.read()
                let slot: UInt8 = try reader.read()
                try reader.skip(3)
                guard UInt64(frameOffset) >= UInt64(PackFormat.headerSize),
                    UInt64(frameOffset) + UInt64(frameLength) <= trailerOffset,
                    Int(frameLength) <= PackFormat.maxFrameLength, Int(slot) < PackFormat.maxPagesPerFrame
                else {
                    throw StoreError.malformed(
                        file: file, reason: "trailer entry for chunk \(id.short) points outside the frames")
                }
                entries.append(PackEntry(id: id, frameOffset: frameOffset, frameLength: frameLength, slot: slot))
            }
            return entries
        }
    }

    private static func readExactly(
        _ fd: FileDescriptor, into buffer: inout [UInt8], at offset: Int64, file: String, count: Int? = nil
    ) throws(StoreError) {
        let wanted = count ?? buffer.count
        let got: Int
        do {
            got = try buffer.withMutableRawBytes { (raw) throws(Errno) -> Int in
                try fd.readFully(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<wanted]), at: offset)
            }
        } catch { throw error.store("read", file) }
        guard got == wanted else { throw .malformed(file: file, reason: "truncated") }
    }

    /// Decodes a frame (header and payload, as stored) into `pages`, which must hold 16 pages;
    /// returns how many pages it held.
    static func decodeFrame(
        _ frame: UnsafeRawBufferPointer, into pages: UnsafeMutableRawBufferPointer,
        file fileName: @autoclosure () -> String, offset: UInt32
    ) throws(StoreError) -> Int {
        // Messages are built only on failure: this runs once per frame read.
        var where_: String { "frame at offset \(offset)" }
        guard frame.count >= PackFormat.frameHeaderSize else {
            throw .malformed(file: fileName(), reason: "\(where_) is truncated")
        }
        let magic = UInt32(littleEndian: frame.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let count = Int(frame[4])
        let encodingByte = frame[5]
        let payloadLength = Int(UInt32(littleEndian: frame.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        guard magic == PackFormat.frameMagic else {
            throw .malformed(file: fileName(), reason: "\(where_) has no frame header")
        }
        guard count >= 1, count <= PackFormat.maxPagesPerFrame,
            payloadLength == frame.count - PackFormat.frameHeaderSize,
            let encoding = PackFormat.Encoding(rawValue: encodingByte)
        else { throw .malformed(file: fileName(), reason: "\(where_) has an impossible header") }
        let payload = UnsafeRawBufferPointer(rebasing: frame[PackFormat.frameHeaderSize...])
        let expected = Page.bytes(count)
        switch encoding {
        case .raw:
            guard payloadLength == expected else {
                throw .malformed(
                    file: fileName(), reason: "\(where_): raw payload of \(payloadLength) bytes for \(count) pages")
            }
            pages.copyMemory(from: payload)
        case .lz4:
            let produced = LZ4_decompress_safe(
                payload.baseAddress!.assumingMemoryBound(to: CChar.self),
                pages.baseAddress!.assumingMemoryBound(to: CChar.self),
                Int32(payloadLength), Int32(min(pages.count, expected)))
            guard Int(produced) == expected else {
                throw .malformed(file: fileName(), reason: "\(where_) does not decompress")
            }
        }
        return count
    }
}
