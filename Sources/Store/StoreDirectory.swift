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
///     STORE/chains/<name>.touched  pages a lazy restart saw touched first (TouchOrder, a hint)
///     STORE/snapshots/<id>.map   rebuilt page maps of some generations (a cache)
///     STORE/locks/               flock files: store.lock (writers shared, GC exclusive), chains
///                                (<name>.chain.lock: one writer's run, its pid inside)
///     STORE/tmp/                 files being written; renamed into place when complete (what a
///                                killed writer left goes with the next writer or GC)
///
/// A store is written only by its owner. Root may open another user's store to read it
/// (`readOnly`): to inspect it or restart its images, which then become no more than `owner`.
final class StoreDirectory: @unchecked Sendable {
    let path: String
    /// Whose store it is: the owner of its directories, the one user who can have written it.
    let owner: UInt32
    /// The group of its root directory.
    let ownerGroup: UInt32
    /// Another user's, opened to read: every write is refused (`requireWritable`).
    let readOnly: Bool
    /// `path` without symlinks (`StorePath`).
    let resolvedPath: String
    /// The directories this open created, outermost first (the store's own last, if it did).
    let createdDirectories: [String]
    /// Whether this open made the store (wrote its marker).
    private(set) var initialized = false
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
    /// `reading`: to read it; the caller's own store opens as usual, and root may open another
    /// user's, read-only.
    init(path: String, create: Bool, reading: Bool = false) throws(StoreError) {
        precondition(!(create && reading), "a store opened to read is never created")
        self.path = path
        let walked = try StorePath(opening: path, create: create)
        let root = walked.directory
        resolvedPath = walked.resolved
        createdDirectories = walked.created
        self.root = root
        let owner = try Self.checkOwnership(root, path: path, reading: reading)
        self.owner = owner
        readOnly = owner != CurrentProcess.effectiveUserID
        ownerGroup = (try? root.status().group) ?? owner

        var names: [String]
        do { names = try root.entries() } catch { throw error.store("list", path) }
        if !names.contains(Self.markerName) {
            guard create, names.isEmpty || Self.interruptedCreation(root, names) else {
                throw .notAStore(
                    path: path,
                    reason: names.isEmpty ? "not initialized" : "it holds other files and no \(Self.markerName) marker")
            }
            try Self.initialize(root, path: path)
            initialized = true
            names = Self.subdirectories + [Self.markerName]
        }
        try Self.checkMarker(root, path: path)

        var opened: [FileDescriptor] = []
        for name in Self.subdirectories {
            let sub = "\(path)/\(name)"
            do {
                if !names.contains(name) {
                    guard !readOnly else { throw StoreError.notAStore(path: path, reason: "it has no \(name)/") }
                    try root.makeDirectory(name, permissions: 0o700)
                }
                if try root.status(of: name).isSymlink {
                    throw StoreError.unsafe(path: sub, reason: "it is a symlink; a store never follows symlinks")
                }
                let fd = try FileDescriptor.open(name, in: root, [.readOnly, .directory, .noFollow])
                opened.append(fd)
                _ = try Self.checkOwnership(fd, path: sub, owner: owner)
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

    /// Takes back a store this open made when nothing was stored in it (a command that failed
    /// before its first generation): its files, its directories, and the parents the open made;
    /// a directory that was there before stays. Returns whether it removed the store.
    @discardableResult
    func removeIfUnused() -> Bool {
        guard initialized, !readOnly else { return false }
        for directory in [packs, index, manifests, chains, snapshots] {
            guard (try? directory.entries())?.isEmpty == true else { return false }
        }
        for directory in [locks, tmp] {
            for name in (try? directory.entries()) ?? [] { try? directory.removeFile(name) }
        }
        for name in Self.subdirectories { try? root.removeDirectory(name) }
        try? root.removeFile(Self.markerName)
        for directory in createdDirectories.reversed() {
            // An empty directory is all rmdir removes: one someone filled meanwhile stays.
            guard (try? FileDescriptor.currentDirectory.removeDirectory(directory)) != nil else { break }
        }
        return true
    }

    /// Checks the store's root directory; returns its owner. Its owner must be the caller, or,
    /// opened for `reading` by root, anyone.
    private static func checkOwnership(
        _ fd: FileDescriptor, path: String, reading: Bool
    ) throws(StoreError) -> UInt32 {
        let me = CurrentProcess.effectiveUserID
        let owner: UInt32
        do { owner = try fd.status().owner } catch { throw error.store("stat", path) }
        return try checkOwnership(fd, path: path, owner: reading && me == 0 ? owner : me)
    }

    /// Checks that a directory of the store is `owner`'s and closed to others; returns `owner`.
    private static func checkOwnership(_ fd: FileDescriptor, path: String, owner: UInt32) throws(StoreError) -> UInt32 {
        let status: FileDescriptor.Status
        do { status = try fd.status() } catch { throw error.store("stat", path) }
        guard status.owner == owner else {
            let me = CurrentProcess.effectiveUserID
            throw .unsafe(
                path: path,
                reason: owner == me
                    ? "it is owned by uid \(status.owner), not by you (uid \(me)); "
                        + "a store holds memory images and is only written by its owner"
                    : "it is owned by uid \(status.owner), and the store by uid \(owner); "
                        + "a store is one user's, every directory in it"
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
        return owner
    }

    /// Throws unless the store was opened to write (`what` is said in the message).
    func requireWritable(_ what: String) throws(StoreError) {
        guard readOnly else { return }
        let me = CurrentProcess.effectiveUserID
        throw .unsafe(
            path: path,
            reason: owner == me
                ? "opened read-only; cannot \(what)"
                : "it is uid \(owner)'s store, opened read-only; only its owner may \(what) (run it as uid \(owner))")
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

    /// Whether `names`, what a directory without a marker holds, is what an interrupted
    /// `initialize` leaves: some of the store's own folders, all empty but for the marker's
    /// temporary copy in tmp/ (removed here). Anything else is someone's files: never taken.
    private static func interruptedCreation(_ root: FileDescriptor, _ names: [String]) -> Bool {
        guard names.allSatisfy({ subdirectories.contains($0) }) else { return false }
        for name in names {
            guard (try? root.status(of: name))?.isSymlink == false,
                let directory = try? FileDescriptor.open(name, in: root, [.readOnly, .directory, .noFollow])
            else { return false }
            defer { directory.close() }
            guard let entries = try? directory.entries() else { return false }
            if name == "tmp" {
                guard entries.allSatisfy({ $0.hasPrefix(markerName + ".") }) else { return false }
                for entry in entries { try? directory.removeFile(entry) }
            } else if !entries.isEmpty {
                return false
            }
        }
        return true
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
        try requireWritable("write \(dirName)/\(name)")
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
        try requireWritable("remove \(dirName)/\(name)")
        do { try directory.removeFile(name) } catch  where error == .noSuchFile {
        } catch { throw error.store("remove", "\(path)/\(dirName)/\(name)") }
    }

    func sync(_ directory: FileDescriptor, dirName: String) throws(StoreError) {
        do { try directory.sync() } catch { throw error.store("fsync", "\(path)/\(dirName)") }
    }
}
