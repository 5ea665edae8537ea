import Syscall

/// A file being written under `tmp/`: buffered appends, the XXH3-128 of everything appended
/// (store files are named by the hash of their bytes), and publication by fsync and rename.
/// Until it is published nothing outside `tmp/` refers to it, so a crash leaves only garbage.
final class StagedFile {
    private let directory: StoreDirectory
    private let temporaryName: String
    private let fd: FileDescriptor
    private let hash = StreamingHash()
    private var buffer: [UInt8] = []
    private(set) var size = 0
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
        hash.update(bytes)
        buffer.append(contentsOf: bytes)
        size += bytes.count
        if buffer.count >= Self.flushSize { try flush() }
    }

    func append(_ bytes: [UInt8]) throws(StoreError) {
        try bytes.withRawBytes { (raw) throws(StoreError) in try append(raw) }
    }

    /// Writes out, fsyncs and renames the file into `target` as `name(hash)`; returns the hash.
    /// The caller fsyncs `target` (once for many files, where it publishes several).
    func publish(in target: FileDescriptor, dirName: String, name: (ChunkID) -> String) throws(StoreError) -> ChunkID {
        try flush()
        let id = hash.digest()
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
        do {
            try buffer.withRawBytes { (raw) throws(Errno) in try fd.writeAll(raw) }
        } catch { throw error.store("write", path) }
        buffer.removeAll(keepingCapacity: true)
    }
}
