#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Syscall
import Tracee

/// The regular files a tree writes, kept with each generation: read while the tree is frozen
/// (one instant of the files and of the processes), cut into chunks and stored once it runs
/// again, each file in a slot of its own (`FileChunks`). A file whose size, times
/// and inode are those of the previous generation is not read again; of one that changed, only
/// the chunks the store does not have are written.
final class FileCapture {
    struct Options: Sendable {
        /// Larger files are recorded as `tooLarge` (their contents are not kept).
        var limit: Int64
        /// The most bytes of files one generation keeps (what cpx holds in memory between the
        /// read and the store): files past it, in the order the tree holds them, are `tooLarge`.
        var total: Int64 = 4 << 30
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

    /// A file read while the tree ran (`prefetch`): its bytes, its status before the read, and
    /// cpx's own watch on it, whose IN_MODIFY says something wrote it since.
    private struct Early {
        var status: FileDescriptor.Status
        var bytes: [UInt8]
        var watch: Int32
    }

    let options: Options
    private var known: [String: Known] = [:]
    /// The files the last frozen read found the tree holding.
    private var lastHeld: [Held] = []
    /// What `prefetch` read, and the watches that tell whether it still holds.
    private var early: [String: Early] = [:]
    private var watcher: Inotify?
    /// Whether `prefetch` looked at the running tree (`heldNow`) already.
    private var lookedNow = false
    /// What `store` found, made `known` once its generation is committed (`committed`).
    private var staged: [String: Known]?
    private var nextSlot: UInt64 = 0

    init(options: Options) { self.options = options }

    deinit { watcher?.close() }

    /// A run continuing a chain starts from its newest generation's files (and reads early the
    /// ones it held, as a run does after its own generations).
    func continuing(_ image: ProcessImage, map: PageMap, createdNanoseconds: Int64) {
        lastHeld = Self.held(image.processes)
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
        /// Mapped shared and writable by a process of the tree: written without any write call
        /// (and without IN_MODIFY), so never taken from a read made while the tree ran.
        var mapped = false
        /// The events an inotify of the tree watches it, or its directory, for (`IN_*`).
        var watched: UInt32 = 0

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
                byPath[mapping.path]?.mapped = true
            }
        }
        for image in images {
            for descriptor in image.descriptors where descriptor.lease != nil {
                byPath[descriptor.target]?.leased = true
            }
        }
        // What the tree's inotify descriptors watch, each watch by its path and inode.
        let watches = images.flatMap { image in
            image.descriptors.flatMap { descriptor -> [ProcessImage.InotifyWatch] in
                if case .inotify(let watches) = descriptor.event { return watches }
                return []
            }
        }.map { watch in
            let status = try? FileDescriptor.currentDirectory.status(of: watch.path, followingSymlinks: true)
            return Watch(path: watch.path, device: status?.device, inode: status?.inode, mask: watch.mask)
        }
        if !watches.isEmpty {
            for path in order {
                let status = try? FileDescriptor.currentDirectory.status(of: path, followingSymlinks: true)
                byPath[path]?.watched = Self.watchedMask(of: path, status, watches)
            }
        }
        return order.compactMap { byPath[$0] }
    }

    /// The files `pids` hold open for reading and writing now, looked up while they run (for a
    /// chain's first generation, which has no earlier one to go by): each with the events the
    /// tree's inotify descriptors watch it or its directory for (by inode), and `mapped` when a
    /// process maps it shared and writable.
    static func heldNow(_ pids: [Int32]) -> [Held] {
        var byPath: [String: Held] = [:]
        var order: [String] = []
        var watched: [Watch] = []
        var mapped: Set<UInt64> = []
        for pid in pids {
            for fd in (try? ProcFS.descriptors(pid)) ?? [] {
                guard let target = ProcFS.descriptorTarget(pid, fd) else { continue }
                if target == "anon_inode:inotify" {
                    watched += InotifyCapture.watchedInodes(pid, fd).map {
                        Watch(path: nil, device: nil, inode: $0.inode, mask: $0.mask)
                    }
                    continue
                }
                guard fd > 2, target.hasPrefix("/"), !target.hasSuffix(" (deleted)"),
                    let flags = (try? ProcFS.descriptorInfo(pid, fd))?["flags"].flatMap({ Int32($0, radix: 8) }),
                    flags & O_ACCMODE == O_RDWR
                else { continue }
                if byPath[target] == nil {
                    order.append(target)
                    byPath[target] = Held(
                        path: target, open: "/proc/\(pid)/fd/\(fd)", heldBy: [], inode: nil, readable: (pid, fd))
                }
                byPath[target]?.heldBy.append("process \(pid) fd \(fd)")
            }
            for region in (try? MemoryRegion.of(pid)) ?? [] where region.shared && region.writable {
                mapped.insert(region.inode)
            }
        }
        for path in order {
            guard let status = try? FileDescriptor.currentDirectory.status(of: path, followingSymlinks: true) else {
                continue
            }
            byPath[path]?.watched = Self.watchedMask(of: path, status, watched)
            if mapped.contains(status.inode) { byPath[path]?.mapped = true }
        }
        return order.compactMap { byPath[$0] }
    }

    /// A watch of an inotify of the tree: its path when known (from an image), the inode it is
    /// on (and its device, when known: fdinfo's is the kernel's encoding, not stat's) and its
    /// events.
    struct Watch {
        var path: String?
        var device: UInt64?
        var inode: UInt64?
        var mask: UInt32
    }

    /// The events `watches` watch the file at `path` (whose status is `status`) for: a watch on
    /// the file, or on its directory (which reports the events of the files in it), by path or
    /// by inode (another name of either).
    static func watchedMask(of path: String, _ status: FileDescriptor.Status?, _ watches: [Watch]) -> UInt32 {
        guard !watches.isEmpty else { return 0 }
        let directory = RestoredFiles.parent(of: path)
        let parent = try? FileDescriptor.currentDirectory.status(of: directory, followingSymlinks: true)
        var mask: UInt32 = 0
        for watch in watches {
            let byPath = watch.path == path || watch.path == directory
            let byInode = [status, parent].contains { status in
                guard let status, let inode = watch.inode else { return false }
                return inode == status.inode && (watch.device ?? status.device) == status.device
            }
            if byPath || byInode { mask |= watch.mask }
        }
        return mask
    }

    /// Events reading a file queues for an inotify watching it: opening it (IN_OPEN), closing
    /// what was opened (IN_CLOSE_NOWRITE), reading it (IN_ACCESS; not through a mapping).
    static let readEvents = UInt32(IN_OPEN | IN_CLOSE_NOWRITE | IN_ACCESS)

    /// Reads, while the tree runs, the files the last generation found it holding for reading
    /// and writing (a chain's first: those `pids` hold now) that changed since then, each through a copy of the tree's own descriptor
    /// (nothing is opened), after putting a watch of cpx's own on it: the freeze takes those
    /// bytes as they are when nothing modified the file since the watch was set (IN_MODIFY,
    /// which every write, truncate and fallocate raises once done) and its size and times are
    /// the same, and reads it again otherwise. So a file that changed between generations is
    /// read while the tree runs, not in its pause. Not read early: files mapped shared (written
    /// with no call, no IN_MODIFY), files an inotify of the tree watches for reads, files held
    /// for writing only (reading them means opening them).
    func prefetch(full: Bool, pids: [Int32]) {
        watcher?.close()
        watcher = nil
        early = [:]
        // The live look is for a run's first generation only: later ones go by the last freeze
        // (a tree that writes no file would be looked at again at every generation otherwise).
        let candidates = (lastHeld.isEmpty && !lookedNow ? Self.heldNow(pids) : lastHeld).filter { held in
            !held.mapped && !held.leased && held.readable != nil && held.watched & Self.readEvents == 0
                && !options.exclude.contains(where: { fnmatch($0, held.path, 0) == 0 })
        }
        lookedNow = true
        guard !candidates.isEmpty, let watcher = try? Inotify() else { return }
        self.watcher = watcher
        var read: Int64 = 0
        for held in candidates {
            guard let (pid, fd) = held.readable, let process = try? ProcessDescriptor.open(pid) else { continue }
            defer { process.close() }
            guard let file = try? process.copyDescriptor(fd) else { continue }
            defer { file.close() }
            guard let wd = try? watcher.watch("/proc/self/fd/\(file.rawValue)", mask: UInt32(IN_MODIFY)),
                let status = try? file.status(), status.isRegularFile,
                status.size <= min(options.limit, FileChunks.largestFile), read + status.size <= options.total
            else { continue }
            if !full, let previous = known[held.path], previous.record.state == .recorded,
                Self.unchanged(previous.record, Self.record(held, status), readAt: previous.readAt)
            {
                continue
            }
            var bytes = [UInt8](repeating: 0, count: Int(status.size))
            guard
                let got = try? bytes.withUnsafeMutableBytes({ (raw) throws(Errno) -> Int in
                    try file.readFully(into: raw, at: 0)
                }), got == bytes.count
            else { continue }
            early[held.path] = Early(status: status, bytes: bytes, watch: wd)
            read += status.size
        }
    }

    /// Whether a file read early (`prefetch`) is still as read: no IN_MODIFY since the watch,
    /// no event lost, and the same inode, size and times as before the read.
    private static func stillAsRead(
        _ early: Early, _ status: FileDescriptor.Status, modified: Set<Int32>, overflowed: Bool
    ) -> Bool {
        !overflowed && !modified.contains(early.watch) && early.status.device == status.device
            && early.status.inode == status.inode && early.status.size == status.size
            && early.status.modified.tv_sec == status.modified.tv_sec
            && early.status.modified.tv_nsec == status.modified.tv_nsec
            && early.status.changed.tv_sec == status.changed.tv_sec
            && early.status.changed.tv_nsec == status.changed.tv_nsec
    }

    /// Reads the files while the tree is frozen, taking those `prefetch` read when nothing
    /// changed them since. `full`: the generation is a full one (every file's chunks are put,
    /// none is skipped).
    func read(_ images: [ProcessImage], full: Bool) -> (pending: [Pending], refused: [String], early: Int) {
        var pending: [Pending] = []
        var refused: [String] = []
        var takenEarly = 0
        let (modified, overflowed) = (try? watcher?.drain()) ?? ([], true)
        // The watcher is closed once the tree runs again (`store`): closing an inotify waits for
        // an RCU grace period, tens of milliseconds of the pause.
        defer { early = [:] }
        let allHeld = Self.held(images)
        lastHeld = allHeld
        var kept: Int64 = 0
        for held in allHeld {
            // Reading it means opening it, and an open must not happen: kept without its
            // contents (stat opens nothing), as an excluded file is.
            if held.readable == nil, let reason = Self.unopenable(held) {
                guard let status = try? FileDescriptor.currentDirectory.status(of: held.path, followingSymlinks: true)
                else { continue }
                var record = Self.record(held, status)
                record.state = .excluded
                record.reason = reason
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
            if kept + status.size > options.total {
                record.state = .tooLarge
                record.reason =
                    "\(status.size) bytes, past what a generation keeps of files (--file-limit ...,\(options.total): "
                    + "\(kept) bytes of files before it)"
                pending.append(Pending(record: record, bytes: nil))
                continue
            }
            kept += status.size
            if !full, let previous = known[held.path], previous.record.state == .recorded,
                Self.unchanged(previous.record, record, readAt: previous.readAt)
            {
                var same = previous.record
                same.heldBy = held.heldBy
                pending.append(Pending(record: same, bytes: nil))
                continue
            }
            if let early = early[held.path],
                Self.stillAsRead(early, status, modified: modified, overflowed: overflowed)
            {
                record.size = Int64(early.bytes.count)
                pending.append(Pending(record: record, bytes: early.bytes))
                takenEarly += 1
                continue
            }
            // Into the early read's memory when there was one: already faulted in.
            var bytes = early.removeValue(forKey: held.path)?.bytes ?? []
            bytes.removeAll(keepingCapacity: true)
            bytes.append(contentsOf: repeatElement(0, count: Int(status.size)))
            do {
                if held.watched & UInt32(IN_ACCESS) != 0 {
                    // A read would queue IN_ACCESS for the tree's inotify; a mapping's does not.
                    let mapped = try MappedFile(file)
                    let count = min(mapped.bytes.count, bytes.count)
                    bytes.withUnsafeMutableBytes {
                        $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: mapped.bytes[0..<count]))
                    }
                    if count < bytes.count { bytes.removeLast(bytes.count - count) }
                } else {
                    let got = try bytes.withUnsafeMutableBytes { (raw) throws(Errno) -> Int in
                        try file.readFully(into: raw, at: 0)
                    }
                    if got < bytes.count { bytes.removeLast(bytes.count - got) }  // cut short meanwhile by another
                }
            } catch {
                refused.append("\(held.path): cannot read it (\(error))")
                continue
            }
            record.size = Int64(bytes.count)
            pending.append(Pending(record: record, bytes: bytes))
        }
        return (pending, refused, takenEarly)
    }

    /// Why `held` must not be opened: an open would break a lease the tree holds on it (and
    /// wait for the frozen holder to give it up), or queue an event for an inotify of the tree
    /// watching it (the program would read an open it never made). Nil when it may be.
    static func unopenable(_ held: Held) -> String? {
        if held.leased { return "a lease is held on it, which opening it to read it would break" }
        if held.watched & UInt32(IN_OPEN | IN_CLOSE_NOWRITE) != 0 {
            return "an inotify of the tree watches it for opens, and reading it means opening it: the program "
                + "would read an event it never caused"
        }
        return nil
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
        watcher?.close()
        watcher = nil
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
