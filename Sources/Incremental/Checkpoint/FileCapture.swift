#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Syscall

/// The regular files a tree writes, kept with each generation: read while the tree is frozen
/// (one instant of the files and of the processes), cut into chunks and stored once it runs
/// again, each file in a slot of its own (`FileChunks`). A file whose size, times
/// and inode are those of the previous generation is not read again; of one that changed, only
/// the chunks the store does not have are written.
final class FileCapture {
    struct Options: Sendable {
        /// Larger files are recorded as `tooLarge` (their contents are not kept).
        var limit: Int64
        /// Globs (fnmatch) of paths recorded as `excluded`.
        var exclude: [String]
    }

    /// A file read at the freeze, stored after it.
    struct Pending {
        var record: ProcessImage.RecordedFile
        /// Its bytes; nil when it is not recorded or unchanged since the previous generation.
        var bytes: [UInt8]?
    }

    /// What a generation recorded of one file, for the next.
    private struct Known {
        var record: ProcessImage.RecordedFile
        /// Its chunks by page of its slot.
        var ids: [UInt64: ChunkID]
        /// CLOCK_REALTIME when it was read.
        var readAt: Int64
    }

    let options: Options
    private var known: [String: Known] = [:]
    /// What `store` found, made `known` once its generation is committed (`committed`).
    private var staged: [String: Known]?
    private var nextSlot: UInt64 = 0

    init(options: Options) { self.options = options }

    /// A run continuing a chain starts from its newest generation's files.
    func continuing(_ image: ProcessImage, map: PageMap, createdNanoseconds: Int64) {
        for record in image.files ?? [] {
            guard record.state == .recorded, let slot = record.slot else { continue }
            let ids = Dictionary(
                FileChunks.chunks(ofSlot: slot, in: map).pages.map { ($0.page, $0.chunk) },
                uniquingKeysWith: { a, _ in a })
            known[record.path] = Known(record: record, ids: ids, readAt: createdNanoseconds)
            nextSlot = max(nextSlot, slot + 1)
        }
    }

    /// A regular file held for writing: its path and how cpx opens it.
    struct Held {
        var path: String
        var open: String
        var heldBy: [String]
        /// The inode it must be (a mapping's); nil for a descriptor, opened through /proc.
        var inode: UInt64?
        /// A descriptor of the tree open for reading and writing on it, read through a copy of
        /// it (pidfd_getfd) rather than by opening the file: an open would break a lease on it
        /// (and wait for the frozen holder to give it up).
        var readable: (pid: Int32, fd: Int32)?
        /// A process of the tree holds a lease on it.
        var leased = false
        /// Written in place: held for reading and writing without O_APPEND, or mapped shared and
        /// writable (a database, a file updated at its offsets): kept in blocks, else in content
        /// chunks (`FileChunks.Chunking`).
        var inPlace = false

        var chunking: FileChunks.Chunking { inPlace ? .blocks : .content }
    }

    /// The files `images` hold open for writing (O_WRONLY, O_RDWR) or map shared and writable,
    /// each once, by path. Not descriptors 0-2: the standard streams a tree inherits from what
    /// started it (a log its launcher appends to) are the launcher's, which a restart of an old
    /// generation must not roll back.
    static func held(_ images: [ProcessImage]) -> [Held] {
        var byPath: [String: Held] = [:]
        var order: [String] = []
        func add(_ path: String, open: String, by: String, inode: UInt64?) {
            if byPath[path] == nil {
                order.append(path)
                byPath[path] = Held(path: path, open: open, heldBy: [], inode: inode)
            }
            byPath[path]?.heldBy.append(by)
        }
        for image in images {
            for descriptor in image.descriptors
            where descriptor.fd > 2 && descriptor.kind == .file && descriptor.flags & O_ACCMODE != O_RDONLY
                && descriptor.target.hasPrefix("/") && !descriptor.target.hasSuffix(" (deleted)")
            {
                add(
                    descriptor.target, open: "/proc/\(image.pid)/fd/\(descriptor.fd)",
                    by: "process \(image.pid) fd \(descriptor.fd)", inode: nil)
                if descriptor.flags & O_ACCMODE == O_RDWR {
                    if byPath[descriptor.target]?.readable == nil {
                        byPath[descriptor.target]?.readable = (image.pid, descriptor.fd)
                    }
                    if descriptor.flags & O_APPEND == 0 { byPath[descriptor.target]?.inPlace = true }
                }
            }
            for mapping in image.mappings
            where mapping.backing == .sharedFile && mapping.protection.contains(.write)
                && mapping.path.hasPrefix("/") && !mapping.path.hasSuffix(" (deleted)")
            {
                add(
                    mapping.path, open: mapping.path,
                    by: "process \(image.pid) mapping 0x\(String(mapping.start, radix: 16))", inode: mapping.inode)
                byPath[mapping.path]?.inPlace = true
            }
        }
        for image in images {
            for descriptor in image.descriptors where descriptor.lease != nil {
                byPath[descriptor.target]?.leased = true
            }
        }
        return order.compactMap { byPath[$0] }
    }

    /// Reads the files while the tree is frozen. `full`: the generation is a full one (every
    /// file's chunks are put, none is skipped).
    func read(_ images: [ProcessImage], full: Bool) -> (pending: [Pending], refused: [String]) {
        var pending: [Pending] = []
        var refused: [String] = []
        for held in Self.held(images) {
            // Leased and open for writing only: opening it would break the lease. Kept without
            // its contents (stat does not break it), as an excluded file is.
            if held.leased && held.readable == nil {
                guard let status = try? FileDescriptor.currentDirectory.status(of: held.path, followingSymlinks: true)
                else { continue }
                var record = Self.record(held, status)
                record.state = .excluded
                record.reason = "a lease is held on it, which opening it to read it would break"
                pending.append(Pending(record: record, bytes: nil))
                continue
            }
            let file: FileDescriptor
            do {
                if let (pid, fd) = held.readable {
                    let process = try ProcessDescriptor.open(pid)
                    defer { process.close() }
                    file = try process.copyDescriptor(fd)
                } else {
                    file = try FileDescriptor.open(held.open, [.readOnly, .closeOnExec])
                }
            } catch {
                refused.append(
                    "\(held.path), written by \(held.heldBy.joined(separator: ", ")): cpx cannot read it "
                        + "(\(error)) to keep it with the generation; exclude it with --exclude-file to restart it as "
                        + "it is then")
                continue
            }
            defer { file.close() }
            guard let status = try? file.status(), status.isRegularFile else { continue }
            if let inode = held.inode, inode != status.inode { continue }  // renamed over since it was mapped
            var record = Self.record(held, status)
            if let glob = options.exclude.first(where: { fnmatch($0, held.path, 0) == 0 }) {
                record.state = .excluded
                record.reason = "--exclude-file \(glob)"
                pending.append(Pending(record: record, bytes: nil))
                continue
            }
            if status.size > min(options.limit, FileChunks.largestFile) {
                record.state = .tooLarge
                record.reason = "\(status.size) bytes, over --file-limit \(min(options.limit, FileChunks.largestFile))"
                pending.append(Pending(record: record, bytes: nil))
                continue
            }
            if !full, let previous = known[held.path], previous.record.state == .recorded,
                Self.unchanged(previous.record, record, readAt: previous.readAt)
            {
                var same = previous.record
                same.heldBy = held.heldBy
                pending.append(Pending(record: same, bytes: nil))
                continue
            }
            var bytes = [UInt8](repeating: 0, count: Int(status.size))
            do {
                let got = try bytes.withUnsafeMutableBytes { (raw) throws(Errno) -> Int in
                    try file.readFully(into: raw, at: 0)
                }
                if got < bytes.count { bytes.removeLast(bytes.count - got) }  // cut short meanwhile by another
            } catch {
                refused.append("\(held.path): cannot read it (\(error))")
                continue
            }
            record.size = Int64(bytes.count)
            pending.append(Pending(record: record, bytes: bytes))
        }
        return (pending, refused)
    }

    static func record(_ held: Held, _ status: FileDescriptor.Status) -> ProcessImage.RecordedFile {
        var record = ProcessImage.RecordedFile(
            path: held.path, state: .recorded, device: status.device, inode: status.inode, size: status.size,
            permissions: status.permissions, owner: status.owner, group: status.group,
            modified: [Int64(status.modified.tv_sec), Int64(status.modified.tv_nsec)],
            changed: [Int64(status.changed.tv_sec), Int64(status.changed.tv_nsec)], heldBy: held.heldBy)
        record.chunking = held.chunking == .content ? nil : held.chunking
        return record
    }

    /// The same file, untouched since it was read: same inode, size, modification and change
    /// times, and its modification time more than a second before the previous read (a write in
    /// the same clock tick as that read leaves the times as they were: such a file is read again).
    static func unchanged(_ old: ProcessImage.RecordedFile, _ new: ProcessImage.RecordedFile, readAt: Int64) -> Bool {
        let modifiedAt = new.modified[0] * 1_000_000_000 + new.modified[1]
        return old.device == new.device && old.inode == new.inode && old.size == new.size
            && old.modified == new.modified && old.changed == new.changed && modifiedAt < readAt - 1_000_000_000
    }

    /// Stores what `read` found into `writer` (run once the tree runs again); returns the
    /// records for the image.
    func store(
        _ pending: [Pending], into writer: GenerationWriter, readAt: Int64
    ) throws(StoreError) -> [ProcessImage.RecordedFile] {
        var records: [ProcessImage.RecordedFile] = []
        var now: [String: Known] = [:]
        let full = writer.kind == .full
        for item in pending {
            var record = item.record
            let previous = known[record.path]
            guard record.state == .recorded else {
                if let previous, let slot = previous.record.slot, !full {
                    writer.unmap(FileChunks.range(ofSlot: slot))
                }
                records.append(record)
                continue
            }
            guard let bytes = item.bytes else {  // unchanged
                if let previous { now[record.path] = previous }
                records.append(record)
                continue
            }
            let slot: UInt64
            if let old = previous?.record.slot {
                slot = old
            } else {
                slot = try freeSlot(
                    taken: Set(known.values.compactMap(\.record.slot) + now.values.compactMap(\.record.slot)))
            }
            // One chunk at a time through one page: a file costs its bytes in memory, not twice
            // that. Pages of the old chunks no chunk starts at now go first.
            let old = full ? [:] : (previous?.ids ?? [:])
            let first = FileChunks.range(ofSlot: slot).first
            let chunking = record.chunking ?? .content
            let ends = bytes.withUnsafeBytes { FileChunks.boundaries($0, chunking) }
            let starts = [0] + ends.dropLast()
            let present = Set(starts.map { FileChunks.page(ofChunkAt: $0, chunking) })
            let stale = old.keys.filter { !present.contains($0) }.sorted()
            var k = 0
            while k < stale.count {
                var end = k + 1
                while end < stale.count && stale[end] == stale[end - 1] + 1 { end += 1 }
                writer.unmap(PageRange(first: first + stale[k], count: UInt64(end - k)))
                k = end
            }
            var ids: [UInt64: ChunkID] = [:]
            ids.reserveCapacity(ends.count)
            let page = UnsafeMutableRawBufferPointer.allocate(byteCount: Page.size, alignment: Page.size)
            defer { page.deallocate() }
            try bytes.withRawBytes { (raw) throws(StoreError) in
                for (start, end) in zip(starts, ends) {
                    FileChunks.encode(UnsafeRawBufferPointer(rebasing: raw[start..<end]), into: page, chunking)
                    let id = ChunkID(hashing: UnsafeRawBufferPointer(page))
                    let number = FileChunks.page(ofChunkAt: start, chunking)
                    ids[number] = id
                    if old[number] != id {
                        try writer.put(firstPage: first + number, contents: UnsafeRawBufferPointer(page))
                    }
                }
            }
            record.slot = slot
            record.chunks = ids.count
            record.digest = bytes.withUnsafeBytes { ChunkID(hashing: $0) }.hex
            now[record.path] = Known(record: record, ids: ids, readAt: readAt)
            records.append(record)
        }
        // Files no longer written: their spaces go.
        if !full {
            for (path, gone) in known where now[path] == nil && !records.contains(where: { $0.path == path }) {
                if let slot = gone.record.slot { writer.unmap(FileChunks.range(ofSlot: slot)) }
            }
        }
        staged = now
        return records
    }

    /// A slot no file has.
    private func freeSlot(taken: Set<UInt64>) throws(StoreError) -> UInt64 {
        for offset in 0..<FileChunks.slots {
            let slot = (nextSlot + offset) % FileChunks.slots
            if !taken.contains(slot) {
                nextSlot = slot + 1
                return slot
            }
        }
        throw .invalidArgument("the tree writes more than \(FileChunks.slots) files: their contents cannot be kept")
    }

    /// The generation `store` wrote was committed: the next one compares with it.
    func committed() {
        if let staged { known = staged }
        staged = nil
    }
}
