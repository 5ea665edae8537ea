import Syscall

/// A file being written under `tmp/`: buffered appends, the XXH3-128 of everything appended
/// (store files are named by the hash of their bytes), and publication by fsync and rename.
/// Until it is published nothing outside `tmp/` refers to it, so a crash leaves only garbage.
///
/// Each buffer written out is handed to the kernel's writeback at once (`.write`, which does
/// not wait): the device works while the file is still being written, and `publish`'s fsync
/// finds little left to do. `seal` ends the appends; a sealed file may be published on
/// another thread.
final class StagedFile {
    private let directory: StoreDirectory
    private let temporaryName: String
    private let fd: FileDescriptor
    private let hash = StreamingHash()
    private var buffer: [UInt8] = []
    private(set) var size = 0
    /// Bytes already written to the file (the rest of `size` is in `buffer`).
    private var written = 0
    private var sealed: ChunkID?
    private var closed = false

    static let flushSize = 1 << 20

    init(_ kind: String, in directory: StoreDirectory) throws(StoreError) {
        try directory.requireWritable("write a \(kind)")
        self.directory = directory
        temporaryName = StoreDirectory.temporaryName(for: kind)
        do {
            fd = try FileDescriptor.open(
                temporaryName, in: directory.tmp, [.writeOnly, .create, .exclusive, .noFollow], permissions: 0o600)
        } catch { throw error.store("create", "\(directory.path)/tmp/\(temporaryName)") }
        buffer.reserveCapacity(Self.flushSize + (64 << 10))
    }

    deinit { discard() }

    private var path: String { "\(directory.path)/tmp/\(temporaryName)" }

    func append(_ bytes: UnsafeRawBufferPointer) throws(StoreError) {
        precondition(sealed == nil, "append to a sealed file")
        hash.update(bytes)
        buffer.append(contentsOf: bytes)
        size += bytes.count
        if buffer.count >= Self.flushSize { try flush() }
    }

    func append(_ bytes: [UInt8]) throws(StoreError) {
        try bytes.withRawBytes { (raw) throws(StoreError) in try append(raw) }
    }

    /// Writes out what is buffered and ends the appends; returns the hash of the file's bytes.
    func seal() throws(StoreError) -> ChunkID {
        if let sealed { return sealed }
        try flush()
        let id = hash.digest()
        sealed = id
        return id
    }

    /// Seals, fsyncs and renames the file into `target` as `name(hash)`; returns the hash.
    /// The caller fsyncs `target` (once for many files, where it publishes several).
    func publish(in target: FileDescriptor, dirName: String, name: (ChunkID) -> String) throws(StoreError) -> ChunkID {
        let id = try seal()
        do { try fd.sync() } catch { throw error.store("fsync", path) }
        fd.close()
        closed = true
        do { try directory.tmp.rename(temporaryName, to: name(id), in: target) } catch {
            try? directory.tmp.removeFile(temporaryName)
            throw error.store("publish", "\(directory.path)/\(dirName)/\(name(id))")
        }
        return id
    }

    /// Drops the file unless it was published.
    func discard() {
        guard !closed else { return }
        closed = true
        fd.close()
        try? directory.tmp.removeFile(temporaryName)
    }

    private func flush() throws(StoreError) {
        guard !buffer.isEmpty else { return }
        do {
            try buffer.withRawBytes { (raw) throws(Errno) in try fd.writeAll(raw) }
        } catch { throw error.store("write", path) }
        // Only a head start for the device: durability is `publish`'s fsync, which also reports
        // any error in writing these pages back, so a failure here changes nothing.
        try? fd.syncRange(offset: Int64(written), count: Int64(buffer.count), .write)
        written += buffer.count
        buffer.removeAll(keepingCapacity: true)
    }
}
