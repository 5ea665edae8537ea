import Dispatch
import Syscall
#if canImport(Glibc)
import Glibc
#endif

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

    struct FrameKey: Hashable {
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

    /// Visits every page of `map` in order with its bytes (valid during the call only).
    ///
    /// Pages are taken in windows of up to `windowFrames` distinct frames: each frame of a
    /// window is read and decoded once, and its pages rehashed, in parallel on every core;
    /// then the visitor gets pointers into the decoded frames, in page order, without a copy.
    public func readPages(_ map: PageMap, _ visit: (PageEntry, UnsafeRawBufferPointer) throws -> Void) throws {
        let zero = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: pageSize)
        zero.initializeMemory(as: UInt8.self, repeating: 0)
        let window = FrameWindow(frames: Self.windowFrames)
        defer {
            zero.deallocate()
            window.deallocate()
        }
        var start = 0
        var placement: [Int] = []   // per page of the window: frame index * 16 + slot, or -1 for zero
        placement.reserveCapacity(4 * Self.windowFrames)
        while start < map.pages.count {
            window.reset()
            placement.removeAll(keepingCapacity: true)
            var frameOfKey: [FrameKey: Int] = [:]
            var end = start
            while end < map.pages.count {
                let entry = map.pages[end]
                if entry.chunk == .zeroPage {
                    placement.append(-1)
                    end += 1
                    continue
                }
                guard let location = store.index.lookup(entry.chunk) else {
                    throw StoreError.missingChunk(entry.chunk, context: "page \(entry.page)")
                }
                let key = FrameKey(pack: location.pack, offset: location.frameOffset)
                var frame = frameOfKey[key]
                if frame == nil {
                    guard window.count < Self.windowFrames else { break }
                    let name = PackFormat.fileName(location.pack)
                    let fd = try pack(location.pack, name: name, file: "\(store.path)/packs/\(name)")
                    frame = window.add(location, fd: fd, file: "\(store.path)/packs/\(name)")
                    frameOfKey[key] = frame
                }
                window.expect(entry.chunk, slot: Int(location.slot), inFrame: frame!)
                placement.append(frame! * PackFormat.maxPagesPerFrame + Int(location.slot))
                end += 1
            }
            try window.decodeAll()
            for (offset, place) in placement.enumerated() {
                let bytes = place < 0 ? UnsafeRawBufferPointer(zero) : window.page(place)
                try visit(map.pages[start + offset], bytes)
            }
            start = end
        }
    }

    /// Distinct frames decoded together by `readPages` (16 MiB of decoded pages).
    static let windowFrames = 256

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

/// The frames of one `readPages` window: raw and decoded buffers, and which pages of each
/// frame must hash to which ids. `decodeAll` spreads the frames over every core.
final class FrameWindow: @unchecked Sendable {
    private let raw: UnsafeMutableRawBufferPointer
    private let decoded: UnsafeMutableRawBufferPointer
    private var jobs: [(location: ChunkLocation, fd: FileDescriptor, file: String, checks: [(slot: Int, id: ChunkID)])] = []
    private let capacity: Int
    /// Each frame's failure, written by the worker that decoded it.
    private let failures: UnsafeMutableBufferPointer<StoreError?>

    init(frames: Int) {
        capacity = frames
        failures = .allocate(capacity: frames)
        failures.initialize(repeating: nil)
        raw = .allocate(byteCount: frames * PackFormat.maxFrameLength, alignment: 16)
        decoded = .allocate(byteCount: frames * PackFormat.maxPagesPerFrame * pageSize, alignment: pageSize)
    }

    func deallocate() {
        failures.deallocate()
        raw.deallocate()
        decoded.deallocate()
    }

    var count: Int { jobs.count }

    func reset() { jobs.removeAll(keepingCapacity: true) }

    func add(_ location: ChunkLocation, fd: FileDescriptor, file: String) -> Int {
        precondition(jobs.count < capacity)
        jobs.append((location, fd, file, []))
        return jobs.count - 1
    }

    func expect(_ id: ChunkID, slot: Int, inFrame frame: Int) {
        jobs[frame].checks.append((slot, id))
    }

    /// Page `place` (frame * 16 + slot) of the decoded window.
    func page(_ place: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: decoded[(place * pageSize)..<((place + 1) * pageSize)])
    }

    /// Reads, decodes and verifies every frame; throws the first failure in frame order.
    func decodeAll() throws(StoreError) {
        let cores = max(1, min(jobs.count, ProcessInfoCores.active))
        DispatchQueue.concurrentPerform(iterations: cores) { worker in
            var k = worker
            while k < self.jobs.count {
                self.failures[k] = self.decode(k)
                k += cores
            }
        }
        if let failure = failures[0..<jobs.count].lazy.compactMap({ $0 }).first { throw failure }
    }

    private func decode(_ k: Int) -> StoreError? {
        let job = jobs[k]
        let name = PackFormat.fileName(job.location.pack)
        let length = Int(job.location.frameLength)
        let id = job.checks[0].id
        guard length <= PackFormat.maxFrameLength else {
            return .corruptChunk(id, pack: name, reason: "the index gives an impossible frame length")
        }
        let rawFrame = UnsafeMutableRawBufferPointer(rebasing: raw[(k * PackFormat.maxFrameLength)..<(k * PackFormat.maxFrameLength + length)])
        let pages = UnsafeMutableRawBufferPointer(rebasing: decoded[(k * PackFormat.maxPagesPerFrame * pageSize)..<((k + 1) * PackFormat.maxPagesPerFrame * pageSize)])
        do {
            guard try job.fd.readFully(into: rawFrame, at: Int64(job.location.frameOffset)) == length else {
                return .corruptChunk(id, pack: name, reason: "the pack is truncated")
            }
        } catch {
            return error.store("read", job.file)
        }
        let count: Int
        do {
            count = try PackReader.decodeFrame(UnsafeRawBufferPointer(rawFrame), into: pages, file: job.file, offset: job.location.frameOffset)
        } catch {
            return .corruptChunk(id, pack: name, reason: "\(error)")
        }
        for check in job.checks {
            guard check.slot < count else { return .corruptChunk(check.id, pack: name, reason: "its frame has no page \(check.slot)") }
            let page = UnsafeRawBufferPointer(rebasing: pages[(check.slot * pageSize)..<((check.slot + 1) * pageSize)])
            guard ChunkID(hashing: page) == check.id else {
                return .corruptChunk(check.id, pack: name, reason: "its bytes do not hash to its id")
            }
        }
        return nil
    }
}

/// Cores this process may run on.
enum ProcessInfoCores {
    static let active: Int = {
        let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        return n > 0 ? n : 1
    }()
}
