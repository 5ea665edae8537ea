import Syscall

/// The store's lock protocol (flock(2) on files in `locks/`; the kernel drops a lock when its
/// holder dies, so a killed `cpx` never leaves a stale one):
///
/// - `store.lock`, shared: held by each generation writer from `beginGeneration` to commit or
///   abandon. Everything a writer decides by looking at the index (which chunks already exist)
///   stays true while it holds the lock.
/// - `store.lock`, exclusive: held by GC, `rebuild-index` and rebase while they rewrite chains,
///   the index, and delete packs. It waits for writers in flight to commit; writers wait at the
///   start of their next generation, never in the middle of one.
/// - `<chain>.chain.lock`, exclusive, not waiting: one writer per chain at a time, held for a
///   writer's whole run (`ChainClaim`), its holder's pid written in the file for messages.
/// - Reclaiming what an abandoned or killed writer left (`reclaimAbandonedWrites`) takes
///   `gc.lock` and `store.lock` exclusively without waiting: only when no writer, GC, rebase or
///   rebuild-index is in flight, whose unindexed packs and tmp/ files it would take for garbage.
///
/// A store opened read-only takes its shared locks on the lock files that exist and creates
/// none; a lock file no writer has made yet has no writer to wait for.
final class StoreLock {
    private let fd: FileDescriptor?

    enum Name {
        case store
        case gc
        case chain(String)
        var fileName: String {
            switch self {
            case .store: "store.lock"
            case .gc: "gc.lock"
            case .chain(let name): "\(name).chain.lock"
            }
        }
    }

    private init(fd: FileDescriptor?) { self.fd = fd }

    /// Takes the lock, waiting for it; it is held until the lock is released (deinit).
    convenience init(_ name: Name, _ kind: FileDescriptor.LockKind, in directory: StoreDirectory) throws(StoreError) {
        let (opened, file) = try Self.open(name, in: directory, kind)
        guard let fd = opened else {
            self.init(fd: nil)
            return
        }
        do { try fd.lock(kind) } catch {
            fd.close()
            throw error.store("lock", file)
        }
        self.init(fd: fd)
    }

    /// Takes the lock if no one holds it; nil if someone does.
    static func ifFree(
        _ name: Name, _ kind: FileDescriptor.LockKind, in directory: StoreDirectory
    ) throws(StoreError) -> StoreLock? {
        let (opened, file) = try open(name, in: directory, kind)
        guard let fd = opened else { return StoreLock(fd: nil) }
        do {
            guard try fd.lock(kind, wait: false) else {
                fd.close()
                return nil
            }
        } catch {
            fd.close()
            throw error.store("lock", file)
        }
        return StoreLock(fd: fd)
    }

    /// Runs `body` holding the lock (waiting for it first); released when `body` returns or throws.
    static func withLock<Result>(
        _ name: Name, _ kind: FileDescriptor.LockKind, in directory: StoreDirectory,
        _ body: () throws(StoreError) -> Result
    ) throws(StoreError) -> Result {
        let lock = try StoreLock(name, kind, in: directory)
        return try withExtendedLifetime(lock) { () throws(StoreError) -> Result in try body() }
    }

    /// Runs `body` as the only maintainer (gc.lock: one GC, rebase or rebuild-index at a time)
    /// with writers held off (store.lock, exclusive).
    static func withMaintenanceLocks<Result>(
        in directory: StoreDirectory, _ body: () throws(StoreError) -> Result
    ) throws(StoreError) -> Result {
        try withLock(.gc, .exclusive, in: directory) { () throws(StoreError) -> Result in
            try withLock(.store, .exclusive, in: directory, body)
        }
    }

    /// Writes this process's pid into the lock file, for the message another process gets while
    /// the lock is held. Best effort: the lock holds without it.
    func recordHolder() {
        guard let fd else { return }
        try? fd.setSize(0)
        try? Array("\(CurrentProcess.id)\n".utf8).withRawBytes { (raw) throws(Errno) in try fd.writeAll(raw, at: 0) }
    }

    /// Clears the pid `recordHolder` wrote, before the lock is released.
    func clearHolder() { try? fd?.setSize(0) }

    /// The pid a holder of lock `name` wrote into it, if any.
    static func holder(_ name: Name, in directory: StoreDirectory) -> Int32? {
        guard let fd = try? FileDescriptor.open(name.fileName, in: directory.locks, [.readOnly, .noFollow]) else {
            return nil
        }
        defer { fd.close() }
        guard let bytes = try? fd.readAll(limit: 32) else { return nil }
        return Int32(String(decoding: bytes, as: UTF8.self).trimmingNewline)
    }

    /// The lock file's descriptor (nil: read-only, and no such lock file yet), and its path.
    private static func open(
        _ name: Name, in directory: StoreDirectory, _ kind: FileDescriptor.LockKind
    ) throws(StoreError) -> (FileDescriptor?, String) {
        let file = "\(directory.path)/locks/\(name.fileName)"
        if directory.readOnly {
            if kind != .shared { try directory.requireWritable("take \(name.fileName)") }
            do {
                return (try FileDescriptor.open(name.fileName, in: directory.locks, [.readOnly, .noFollow]), file)
            } catch  where error == .noSuchFile {
                return (nil, file)
            } catch { throw error.store("open lock", file) }
        }
        do {
            return (
                try FileDescriptor.open(
                    name.fileName, in: directory.locks, [.readWrite, .create, .noFollow], permissions: 0o600), file
            )
        } catch { throw error.store("open lock", file) }
    }

    deinit { fd?.close() }
}

extension String {
    fileprivate var trimmingNewline: Substring { self.prefix { $0 != "\n" } }
}
