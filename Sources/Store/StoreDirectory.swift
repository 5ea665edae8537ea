#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Syscall

/// The store's directory tree, opened once. Every file is reached with *at(2) calls relative to
/// these directory descriptors, each opened with O_NOFOLLOW, so nothing inside the store is ever
/// resolved through a symlink. Directories are 0700 and files 0600: memory images hold secrets.
///
///     STORE/chpox-store          marker: format version
///     STORE/packs/<id>.pack      LZ4 frames of new pages, trailer listing their chunks
///     STORE/index/<id>.idx       sorted, memory-mapped index segments (chunk -> pack, frame)
///     STORE/manifests/<id>.gen   generation manifests, named by the hash of their bytes
///     STORE/chains/<name>.chain  a chain: generation number -> manifest id (the commit point)
///     STORE/chains/<name>.lineage  the processes that may extend the chain (Lineage)
///     STORE/snapshots/<id>.map   rebuilt page maps of some generations (a cache)
///     STORE/locks/               flock files: store.lock (writers shared, GC exclusive), chains
///                                (<name>.chain.lock: one writer's run, its pid inside)
///     STORE/tmp/                 files being written; renamed into place when complete (what a
///                                killed writer left goes with the next writer or GC)
final class StoreDirectory: @unchecked Sendable {
    let path: String
    let root: FileDescriptor
    let packs: FileDescriptor
    let index: FileDescriptor
    let manifests: FileDescriptor
    let chains: FileDescriptor
    let snapshots: FileDescriptor
    let locks: FileDescriptor
    let tmp: FileDescriptor

    static let markerName = "chpox-store"
    /// The most the marker is read for: it holds a magic and a version, so anything longer is
    /// not a chpox marker (a read limit, not a page).
    static let markerLimit = 4096
    static let subdirectories = ["packs", "index", "manifests", "chains", "snapshots", "locks", "tmp"]
    static let formatVersion: UInt32 = 1

    /// Opens the store at `path`, creating it (and missing parents, 0700) when `create` is set.
    init(path: String, create: Bool) throws(StoreError) {
        self.path = path
        if create { try Self.makeDirectories(path) }
        if (try? FileDescriptor.currentDirectory.status(of: path))?.isSymlink == true {
            throw .unsafe(path: path, reason: "it is a symlink; give the real directory")
        }
        let root: FileDescriptor
        do {
            root = try FileDescriptor.open(path, [.readOnly, .directory, .noFollow])
        } catch .tooManySymlinks {
            throw .unsafe(path: path, reason: "it is a symlink; give the real directory")
        } catch .noSuchFile {
            throw .notAStore(path: path, reason: "no such directory")
        } catch .notDirectory {
            throw .notAStore(path: path, reason: "not a directory")
        } catch {
            throw error.store("open", path)
        }
        self.root = root
        try Self.checkOwnership(root, path: path)

        var names: [String]
        do { names = try root.entries() } catch { throw error.store("list", path) }
        if !names.contains(Self.markerName) {
            guard create, names.isEmpty else {
                throw .notAStore(
                    path: path,
                    reason: names.isEmpty ? "not initialized" : "it holds other files and no \(Self.markerName) marker")
            }
            try Self.initialize(root, path: path)
            names = Self.subdirectories + [Self.markerName]
        }
        try Self.checkMarker(root, path: path)

        var opened: [FileDescriptor] = []
        for name in Self.subdirectories {
            let sub = "\(path)/\(name)"
            do {
                if !names.contains(name) { try root.makeDirectory(name, permissions: 0o700) }
                if try root.status(of: name).isSymlink {
                    throw StoreError.unsafe(path: sub, reason: "it is a symlink; a store never follows symlinks")
                }
                let fd = try FileDescriptor.open(name, in: root, [.readOnly, .directory, .noFollow])
                opened.append(fd)
                try Self.checkOwnership(fd, path: sub)
            } catch let error as StoreError {
                throw error
            } catch let error as Errno {
                if error == .tooManySymlinks {
                    throw .unsafe(path: sub, reason: "it is a symlink; a store never follows symlinks")
                }
                throw error.store("open", sub)
            } catch {
                throw .invalidArgument("\(error)")
            }
        }
        packs = opened[0]; index = opened[1]; manifests = opened[2]; chains = opened[3]
        snapshots = opened[4]; locks = opened[5]; tmp = opened[6]
    }

    deinit {
        for fd in [root, packs, index, manifests, chains, snapshots, locks, tmp] { fd.close() }
    }

    private static func makeDirectories(_ path: String) throws(StoreError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            do { try FileDescriptor.currentDirectory.makeDirectory(prefix) } catch {
                if error != .exists { throw error.store("create directory", prefix) }
            }
        }
    }

    private static func checkOwnership(_ fd: FileDescriptor, path: String) throws(StoreError) {
        let status: FileDescriptor.Status
        do { status = try fd.status() } catch { throw error.store("stat", path) }
        guard status.owner == CurrentProcess.effectiveUserID else {
            throw .unsafe(
                path: path,
                reason:
                    "it is owned by uid \(status.owner), not by you (uid \(CurrentProcess.effectiveUserID)); "
                    + "a store holds memory images and is only opened by its owner"
            )
        }
        guard status.permissions & 0o077 == 0 else {
            throw .unsafe(
                path: path,
                reason:
                    "it is open to other users (mode \(String(status.permissions, radix: 8))); "
                    + "run `chmod -R go-rwx \(path)`"
            )
        }
    }

    private static func initialize(_ root: FileDescriptor, path: String) throws(StoreError) {
        do { try root.setPermissions(0o700) } catch { throw error.store("chmod", path) }
        for name in subdirectories {
            do { try root.makeDirectory(name, permissions: 0o700) } catch  where error == .exists {
            } catch { throw error.store("create directory", "\(path)/\(name)") }
        }
        var marker = BinaryWriter()
        marker.append(magic: "CHPXSTOR")
        marker.append(formatVersion)
        marker.appendChecksum()
        // The marker is published last: a store whose creation was interrupted has no marker,
        // and the next open finishes creating it.
        let tmp: FileDescriptor
        do { tmp = try FileDescriptor.open("tmp", in: root, [.readOnly, .directory, .noFollow]) } catch {
            throw error.store("open", "\(path)/tmp")
        }
        defer { tmp.close() }
        try publish(marker.bytes, as: markerName, in: root, dirPath: path, tmp: tmp)
    }

    private static func checkMarker(_ root: FileDescriptor, path: String) throws(StoreError) {
        let bytes = try readFile(markerName, in: root, dirPath: path, limit: markerLimit)
        try bytes.withRawBytes { (raw) throws(StoreError) in
            var reader = BinaryReader(raw, file: "\(path)/\(markerName)")
            try reader.expect(magic: "CHPXSTOR")
            let version: UInt32 = try reader.read()
            try reader.verifyChecksum()
            guard version == formatVersion else {
                throw .notAStore(
                    path: path, reason: "store format \(version); this chpox reads format \(formatVersion)")
            }
        }
    }

    // MARK: Files

    /// Writes `bytes` to a temporary file, fsyncs it, renames it to `name` in `directory` and
    /// fsyncs the directory: after this returns the file is durable and complete, and a crash at
    /// any point leaves either nothing or the whole file under `name`.
    static func publish(
        _ bytes: [UInt8], as name: String, in directory: FileDescriptor, dirPath: String, tmp: FileDescriptor
    ) throws(StoreError) {
        let temporary = temporaryName(for: name)
        do {
            let fd = try FileDescriptor.open(
                temporary, in: tmp, [.writeOnly, .create, .exclusive, .noFollow], permissions: 0o600)
            defer { fd.close() }
            try bytes.withRawBytes { (raw) throws(Errno) in try fd.writeAll(raw) }
            try fd.sync()
        } catch {
            try? tmp.removeFile(temporary)
            throw error.store("write", "\(dirPath)/\(name)")
        }
        try commitRename(temporary, as: name, in: directory, dirPath: dirPath, tmp: tmp)
    }

    /// Renames a complete, synced temporary file into place and makes the rename durable.
    static func commitRename(
        _ temporary: String, as name: String, in directory: FileDescriptor, dirPath: String, tmp: FileDescriptor
    ) throws(StoreError) {
        do {
            try tmp.rename(temporary, to: name, in: directory)
            try directory.sync()
        } catch {
            try? tmp.removeFile(temporary)
            throw error.store("publish", "\(dirPath)/\(name)")
        }
    }

    static func temporaryName(for name: String) -> String {
        "\(name).\(CurrentProcess.id).\(UInt64.random(in: 0...UInt64.max))"
    }

    static func readFile(
        _ name: String, in directory: FileDescriptor, dirPath: String, limit: Int
    ) throws(StoreError) -> [UInt8] {
        let full = "\(dirPath)/\(name)"
        do {
            let fd = try FileDescriptor.open(name, in: directory, [.readOnly, .noFollow])
            defer { fd.close() }
            let status = try fd.status()
            guard status.isRegularFile else { throw StoreError.malformed(file: full, reason: "not a regular file") }
            guard status.size <= Int64(limit) else {
                throw StoreError.malformed(
                    file: full, reason: "\(status.size) bytes, more than the \(limit) a file of this kind may have")
            }
            return try fd.readAll(limit: limit)
        } catch let error as StoreError {
            throw error
        } catch let error as Errno {
            if error == .tooManySymlinks {
                throw StoreError.unsafe(path: full, reason: "it is a symlink; a store never follows symlinks")
            }
            throw error.store("read", full)
        } catch {
            throw .invalidArgument("\(error)")
        }
    }

    func publish(_ bytes: [UInt8], as name: String, in directory: FileDescriptor, dirName: String) throws(StoreError) {
        try Self.publish(bytes, as: name, in: directory, dirPath: "\(path)/\(dirName)", tmp: tmp)
    }

    func readFile(
        _ name: String, in directory: FileDescriptor, dirName: String, limit: Int
    ) throws(StoreError) -> [UInt8] {
        try Self.readFile(name, in: directory, dirPath: "\(path)/\(dirName)", limit: limit)
    }

    /// Names in `directory` ending in `.suffix`, without the suffix.
    func names(in directory: FileDescriptor, dirName: String, suffix: String) throws(StoreError) -> [String] {
        do {
            return try directory.entries().compactMap { name in
                name.hasSuffix("." + suffix) ? String(name.dropLast(suffix.count + 1)) : nil
            }
        } catch { throw error.store("list", "\(path)/\(dirName)") }
    }

    /// Removes a file; a file already gone is not an error.
    func remove(_ name: String, in directory: FileDescriptor, dirName: String) throws(StoreError) {
        do { try directory.removeFile(name) } catch  where error == .noSuchFile {
        } catch { throw error.store("remove", "\(path)/\(dirName)/\(name)") }
    }

    func sync(_ directory: FileDescriptor, dirName: String) throws(StoreError) {
        do { try directory.sync() } catch { throw error.store("fsync", "\(path)/\(dirName)") }
    }
}
