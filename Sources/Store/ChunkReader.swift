import Syscall

/// Reads chunks back: index lookup, frame read and decode, and a rehash of every page against
/// its id, so a damaged pack is reported, never restored. Keeps a few decoded frames and open
/// packs, since neighbouring pages usually share a frame.
public final class ChunkReader {
    private let store: Store
    private var packs: [ChunkID: FileDescriptor] = [:]
    /// Decoded frames and how many pages each holds.
    private var frames: [FrameKey: (pages: UnsafeMutableRawBufferPointer, count: Int)] = [:]
    private var frameOrder: [FrameKey] = []
    private var raw: [UInt8] = [UInt8](repeating: 0, count: PackFormat.maxFrameLength)

    static let cachedFrames = 8
    static let openPacks = 64

    private struct FrameKey: Hashable {
        var pack: ChunkID
        var offset: UInt32
    }

    init(store: Store) { self.store = store }

    deinit {
        for fd in packs.values { fd.close() }
        for frame in frames.values { frame.pages.deallocate() }
    }

    /// Copies chunk `id` (one page) into `page`; the zero page needs no lookup.
    public func read(_ id: ChunkID, into page: UnsafeMutableRawBufferPointer) throws(StoreError) {
        precondition(page.count == pageSize)
        if id == .zeroPage {
            page.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        guard let location = store.index.lookup(id) else { throw .missingChunk(id, context: "a read") }
        let decoded = try frame(at: location, for: id)
        let slot = Int(location.slot)
        guard slot < decoded.count else {
            throw .corruptChunk(id, pack: PackFormat.fileName(location.pack), reason: "its frame has no page \(slot)")
        }
        page.copyMemory(from: UnsafeRawBufferPointer(rebasing: decoded.pages[(slot * pageSize)..<((slot + 1) * pageSize)]))
        guard ChunkID(hashing: UnsafeRawBufferPointer(page)) == id else {
            throw .corruptChunk(id, pack: PackFormat.fileName(location.pack), reason: "its bytes do not hash to its id")
        }
    }

    /// Visits every page of `map` in order with its bytes.
    public func readPages(_ map: PageMap, _ visit: (PageEntry, UnsafeRawBufferPointer) throws -> Void) throws {
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: pageSize)
        defer { page.deallocate() }
        for entry in map.pages {
            try read(entry.chunk, into: page)
            try visit(entry, UnsafeRawBufferPointer(page))
        }
    }

    private func frame(at location: ChunkLocation, for id: ChunkID) throws(StoreError) -> (pages: UnsafeMutableRawBufferPointer, count: Int) {
        let key = FrameKey(pack: location.pack, offset: location.frameOffset)
        if let cached = frames[key] { return cached }
        let name = PackFormat.fileName(location.pack)
        let file = "\(store.path)/packs/\(name)"
        let fd = try pack(location.pack, name: name, file: file)
        let length = Int(location.frameLength)
        guard length <= raw.count else { throw .corruptChunk(id, pack: name, reason: "the index gives an impossible frame length") }
        let got: Int
        do {
            got = try raw.withMutableRawBytes { (buffer) throws(Errno) -> Int in
                try fd.readFully(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]), at: Int64(location.frameOffset))
            }
        } catch { throw error.store("read", file) }
        guard got == length else { throw .corruptChunk(id, pack: name, reason: "the pack is truncated") }

        let buffer: UnsafeMutableRawBufferPointer
        if frames.count >= Self.cachedFrames {
            let oldest = frameOrder.removeFirst()
            buffer = frames.removeValue(forKey: oldest)!.pages
        } else {
            buffer = .allocate(byteCount: PackFormat.maxPagesPerFrame * pageSize, alignment: pageSize)
        }
        let count: Int
        do {
            count = try raw.withRawBytes { (bytes) throws(StoreError) -> Int in
                try PackReader.decodeFrame(UnsafeRawBufferPointer(rebasing: bytes[0..<length]), into: buffer, file: file, offset: location.frameOffset)
            }
        } catch {
            buffer.deallocate()
            throw .corruptChunk(id, pack: name, reason: "\(error)")
        }
        frames[key] = (buffer, count)
        frameOrder.append(key)
        return (buffer, count)
    }

    private func pack(_ id: ChunkID, name: String, file: String) throws(StoreError) -> FileDescriptor {
        if let fd = packs[id] { return fd }
        if packs.count >= Self.openPacks, let victim = packs.keys.first { packs.removeValue(forKey: victim)?.close() }
        do {
            let fd = try FileDescriptor.open(name, in: store.directory.packs, [.readOnly, .noFollow])
            packs[id] = fd
            return fd
        } catch { throw error.store("open", file) }
    }

    /// Forgets cached frames and descriptors (after GC replaced packs).
    func reset() {
        for fd in packs.values { fd.close() }
        packs = [:]
        for frame in frames.values { frame.pages.deallocate() }
        frames = [:]
        frameOrder = []
    }
}
