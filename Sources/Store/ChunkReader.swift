import Dispatch
import Syscall
#if canImport(Glibc)
import Glibc
#endif

/// Reads chunks back: index lookup, frame read and decode, and a rehash of every page against
/// its id, so a damaged pack is reported, never restored. Keeps packs mapped between calls.
public final class ChunkReader {
    private let store: Store
    /// Packs are immutable once published: they are read through read-only mappings.
    private var packs: [ChunkID: MappedFile] = [:]

    static let openPacks = 64

    struct FrameKey: Hashable {
        var pack: ChunkID
        var offset: UInt32
    }

    init(store: Store) { self.store = store }

    /// Visits every page of `map` in order with its bytes (valid during the call only).
    public func readPages(_ map: PageMap, _ visit: (PageEntry, UnsafeRawBufferPointer) throws -> Void) throws {
        try readPageWindows(map) { window in
            for k in 0..<window.count {
                let (entry, bytes) = window[k]
                try visit(entry, bytes)
            }
        }
    }

    /// Visits every page of `map` in order, a window of pages at a time, each page with its
    /// bytes (valid during that window's visit only): for a visitor that writes many pages
    /// with one call.
    ///
    /// Pages are taken in windows of up to `windowFrames` distinct frames: each frame of a
    /// window is read and decoded once, and its pages rehashed, in parallel on every core;
    /// then the visitor gets pointers into the decoded frames, in page order, without a copy.
    /// Two windows take turns: the next is decoded while the visitor has the current one.
    public func readPageWindows(_ map: PageMap, _ visit: (PageWindow) throws -> Void) throws {
        try store.prefetchPacks(for: map)
        let zero = UnsafeMutableRawBufferPointer.allocate(pages: 1)
        zero.initializeMemory(as: UInt8.self, repeating: 0)
        let windows = [
            FrameWindow(frames: Self.windowFrames, store: store.path),
            FrameWindow(frames: Self.windowFrames, store: store.path),
        ]
        let locations = LocationBlock(capacity: Self.lookupBlock)
        defer {
            for window in windows { window.waitForDecoding() }  // a visitor that threw leaves one decoding
            zero.deallocate()
            for window in windows { window.deallocate() }
            locations.deallocate()
        }
        var placements: [[Int]] = [[], []]  // per page of a window: frame index * 16 + slot, or -1 for zero
        for k in placements.indices { placements[k].reserveCapacity(PackFormat.maxPagesPerFrame * Self.windowFrames) }
        var pending: PageWindow?  // decoded, not yet visited
        var next = 0  // the window planned next
        var blockStart = 0
        while blockStart < map.pages.count {
            // Index lookups for a block of pages, spread over every core.
            let block = map.pages[blockStart..<min(blockStart + Self.lookupBlock, map.pages.count)]
            locations.lookUp(block, in: store.index)
            var start = 0
            while start < block.count {
                let window = windows[next]
                window.reset()
                placements[next].removeAll(keepingCapacity: true)
                var frameOfKey: [FrameKey: Int] = [:]
                var lastKey: FrameKey?
                var lastFrame = 0
                var end = start
                while end < block.count {
                    let entry = block[block.startIndex + end]
                    if entry.chunk == .zeroPage {
                        placements[next].append(-1)
                        end += 1
                        continue
                    }
                    guard let location = locations[end] else {
                        throw StoreError.missingChunk(entry.chunk, context: "page \(entry.page)")
                    }
                    let key = FrameKey(pack: location.pack, offset: location.frameOffset)
                    var frame: Int
                    if key == lastKey {
                        frame = lastFrame  // neighbouring pages mostly share a frame
                    } else if let known = frameOfKey[key] {
                        frame = known
                    } else {
                        guard window.count < Self.windowFrames else { break }
                        frame = window.add(location, pack: try pack(location.pack))
                        frameOfKey[key] = frame
                    }
                    lastKey = key
                    lastFrame = frame
                    window.expect(entry.chunk, slot: Int(location.slot), inFrame: frame)
                    placements[next].append(frame * PackFormat.maxPagesPerFrame + Int(location.slot))
                    end += 1
                }
                window.startDecoding()
                if let pending { try visit(pending) }
                try window.finishDecoding()
                let pages = block[(block.startIndex + start)..<(block.startIndex + end)]
                pending = PageWindow(entries: pages, placement: placements[next], frames: window, zero: zero)
                next = 1 - next
                start = end
            }
            blockStart += block.count
        }
        if let pending { try visit(pending) }
    }

    /// Visits the pages of `entries` (a few, in any order) with their bytes, valid during the
    /// call only: a frame is read and decoded once for a run of its
    /// pages (neighbours mostly share one), on this thread, and every page rehashed
    /// against its id. For reads of a page and its neighbours on demand (a lazy restart's page
    /// faults), where `readPageWindows`' windows and worker threads cost more than the reading.
    public func readFew(_ entries: [PageEntry], _ visit: (PageEntry, UnsafeRawBufferPointer) throws -> Void) throws {
        if few == nil {
            let buffer = UnsafeMutableRawBufferPointer.allocate(pages: PackFormat.maxPagesPerFrame + 1)
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            few = buffer
        }
        guard let buffer = few else { return }
        let decoded = buffer.pages(0..<PackFormat.maxPagesPerFrame)
        let zero = UnsafeRawBufferPointer(buffer.page(at: PackFormat.maxPagesPerFrame))
        let located = entries.compactMap { entry in
            entry.chunk == .zeroPage ? nil : store.index.lookup(entry.chunk).map { (entry, $0) }
        }
        if let missing = entries.first(where: { $0.chunk != .zeroPage && store.index.lookup($0.chunk) == nil }) {
            throw StoreError.missingChunk(missing.chunk, context: "page \(missing.page)")
        }
        for entry in entries where entry.chunk == .zeroPage { try visit(entry, zero) }
        var current: FrameKey?
        var count = 0
        for (entry, location) in located {
            let key = FrameKey(pack: location.pack, offset: location.frameOffset)
            let name = PackFormat.fileName(location.pack)
            if key != current {
                let mapped = try pack(location.pack)
                let start = Int(location.frameOffset)
                let length = Int(location.frameLength)
                guard length <= PackFormat.maxFrameLength, start + length <= mapped.bytes.count else {
                    throw StoreError.corruptChunk(entry.chunk, pack: name, reason: "the pack is truncated")
                }
                let frame = UnsafeRawBufferPointer(rebasing: mapped.bytes[start..<(start + length)])
                do {
                    count = try PackReader.decodeFrame(
                        frame, into: decoded, file: "\(store.path)/packs/\(name)", offset: location.frameOffset)
                } catch {
                    throw StoreError.corruptChunk(entry.chunk, pack: name, reason: "\(error)")
                }
                current = key
            }
            guard Int(location.slot) < count else {
                throw StoreError.corruptChunk(entry.chunk, pack: name, reason: "its frame has no page \(location.slot)")
            }
            let page = UnsafeRawBufferPointer(decoded.page(at: Int(location.slot)))
            guard ChunkID(hashing: page) == entry.chunk else {
                throw StoreError.corruptChunk(entry.chunk, pack: name, reason: "its bytes do not hash to its id")
            }
            try visit(entry, page)
        }
    }

    /// `readFew`'s frame buffer (16 pages) and a zero page after it, made on first use.
    private var few: UnsafeMutableRawBufferPointer?

    deinit { few?.deallocate() }

    /// Pages whose chunks are looked up together, in parallel.
    static let lookupBlock = 16384

    /// Distinct frames decoded together by `readPages` (16 MiB of decoded pages).
    static let windowFrames = 256

    private func pack(_ id: ChunkID) throws(StoreError) -> MappedFile {
        if let mapped = packs[id] { return mapped }
        let name = PackFormat.fileName(id)
        let file = "\(store.path)/packs/\(name)"
        if packs.count >= Self.openPacks, let victim = packs.keys.first { packs.removeValue(forKey: victim) }
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(name, in: store.directory.packs, [.readOnly, .noFollow])
        } catch .noSuchFile where store.remote != nil {
            // A cache of a remote store: the pack is fetched whole the first time it is needed.
            guard try store.remote!.fetch(.pack, id.hex, into: store) else {
                throw StoreError.system(.noSuchFile, operation: "open", path: store.remotePath(.pack, id.hex))
            }
            do { fd = try FileDescriptor.open(name, in: store.directory.packs, [.readOnly, .noFollow]) } catch {
                throw error.store("open", file)
            }
        } catch { throw error.store("open", file) }
        defer { fd.close() }
        do {
            let mapped = try MappedFile(fd)
            packs[id] = mapped
            return mapped
        } catch { throw error.store("map", file) }
    }

}

/// One window of `ChunkReader.readPageWindows`: pages in order, each with its bytes, valid
/// during the visit of the window only.
public struct PageWindow {
    /// The window's pages, ascending.
    public let entries: ArraySlice<PageEntry>
    fileprivate let placement: [Int]
    fileprivate let frames: FrameWindow
    fileprivate let zero: UnsafeMutableRawBufferPointer

    public var count: Int { entries.count }

    /// The `k`th page of the window (from 0) and its bytes.
    public subscript(_ k: Int) -> (entry: PageEntry, bytes: UnsafeRawBufferPointer) {
        let place = placement[k]
        return (entries[entries.startIndex + k], place < 0 ? UnsafeRawBufferPointer(zero) : frames.page(place))
    }
}

/// The frames of one `readPages` window: raw and decoded buffers, and which pages of each
/// frame must hash to which ids. `decodeAll` spreads the frames over every core.
final class FrameWindow: @unchecked Sendable {
    private let decoded: UnsafeMutableRawBufferPointer
    private var jobs: [(location: ChunkLocation, pack: MappedFile, checks: [(slot: Int, id: ChunkID)])] = []
    private let capacity: Int
    private let store: String
    /// Each frame's failure, written by the worker that decoded it.
    private let failures: UnsafeMutableBufferPointer<StoreError?>

    init(frames: Int, store: String) {
        self.store = store
        capacity = frames
        failures = .allocate(capacity: frames)
        failures.initialize(repeating: nil)
        decoded = .allocate(pages: frames * PackFormat.maxPagesPerFrame)
    }

    func deallocate() {
        failures.deallocate()
        decoded.deallocate()
    }

    var count: Int { jobs.count }

    func reset() { jobs.removeAll(keepingCapacity: true) }

    func add(_ location: ChunkLocation, pack: MappedFile) -> Int {
        precondition(jobs.count < capacity)
        jobs.append((location, pack, []))
        return jobs.count - 1
    }

    func expect(_ id: ChunkID, slot: Int, inFrame frame: Int) {
        jobs[frame].checks.append((slot, id))
    }

    /// Page `place` (frame * 16 + slot) of the decoded window.
    func page(_ place: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(decoded.page(at: place))
    }

    private let decoding = DispatchGroup()

    /// Decodes the window on other threads (`decodeAll`); `finishDecoding` waits for it.
    func startDecoding() {
        DispatchQueue.global().async(group: decoding) { self.decodeAll() }
    }

    /// Waits for `startDecoding`'s work; throws the first failure in frame order.
    func finishDecoding() throws(StoreError) {
        waitForDecoding()
        if let failure = failures[0..<jobs.count].lazy.compactMap({ $0 }).first { throw failure }
    }

    func waitForDecoding() { decoding.wait() }

    /// Reads, decodes and verifies every frame, each frame's failure in `failures`.
    private func decodeAll() {
        let cores = max(1, min(jobs.count, ProcessInfoCores.active))
        DispatchQueue.concurrentPerform(iterations: cores) { worker in
            var k = worker
            while k < self.jobs.count {
                self.failures[k] = self.decode(k)
                k += cores
            }
        }
    }

    private func decode(_ k: Int) -> StoreError? {
        let job = jobs[k]
        var name: String { PackFormat.fileName(job.location.pack) }
        var file: String { "\(store)/packs/\(name)" }
        let length = Int(job.location.frameLength)
        let id = job.checks[0].id
        guard length <= PackFormat.maxFrameLength else {
            return .corruptChunk(id, pack: name, reason: "the index gives an impossible frame length")
        }
        let start = Int(job.location.frameOffset)
        guard start + length <= job.pack.bytes.count else {
            return .corruptChunk(id, pack: name, reason: "the pack is truncated")
        }
        let frame = UnsafeRawBufferPointer(rebasing: job.pack.bytes[start..<(start + length)])
        let pages = decoded.pages((k * PackFormat.maxPagesPerFrame)..<((k + 1) * PackFormat.maxPagesPerFrame))
        let count: Int
        do {
            count = try PackReader.decodeFrame(frame, into: pages, file: file, offset: job.location.frameOffset)
        } catch {
            return .corruptChunk(id, pack: name, reason: "\(error)")
        }
        for check in job.checks {
            guard check.slot < count else {
                return .corruptChunk(check.id, pack: name, reason: "its frame has no page \(check.slot)")
            }
            let page = UnsafeRawBufferPointer(pages.page(at: check.slot))
            guard ChunkID(hashing: page) == check.id else {
                return .corruptChunk(check.id, pack: name, reason: "its bytes do not hash to its id")
            }
        }
        return nil
    }
}

/// Cores this process may run on.
enum ProcessInfoCores {
    static let active = Kernel.onlineProcessors
}

/// Index lookups for a block of pages, written by several workers at once.
final class LocationBlock: @unchecked Sendable {
    private let locations: UnsafeMutableBufferPointer<ChunkLocation?>

    init(capacity: Int) {
        locations = .allocate(capacity: capacity)
        locations.initialize(repeating: nil)
    }

    func deallocate() { locations.deallocate() }

    subscript(_ i: Int) -> ChunkLocation? { locations[i] }

    func lookUp(_ pages: ArraySlice<PageEntry>, in index: ChunkIndex) {
        let count = pages.count
        let cores = max(1, min(ProcessInfoCores.active, count / 1024))
        pages.withUnsafeBufferPointer { entries in
            let entries = UnsafeSendable(entries)
            DispatchQueue.concurrentPerform(iterations: cores) { worker in
                for i in stride(from: worker * count / cores, to: (worker + 1) * count / cores, by: 1) {
                    let chunk = entries.value[i].chunk
                    self.locations[i] = chunk == .zeroPage ? nil : index.lookup(chunk)
                }
            }
        }
    }
}

/// Hands a buffer to workers that only read it while its owner waits for them.
struct UnsafeSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
