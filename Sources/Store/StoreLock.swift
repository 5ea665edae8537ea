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
/// - `<chain>.chain.lock`, exclusive, not waiting: one writer per chain at a time.
final class StoreLock {
    private let fd: FileDescriptor

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

    /// Takes the lock, waiting for it unless `wait` is false; nil when not waiting and held.
    init?(_ name: Name, _ kind: FileDescriptor.LockKind, in directory: StoreDirectory, wait: Bool = true) throws(StoreError) {
        let file = "\(directory.path)/locks/\(name.fileName)"
        do {
            fd = try FileDescriptor.open(name.fileName, in: directory.locks, [.readWrite, .create, .noFollow], permissions: 0o600)
        } catch { throw error.store("open lock", file) }
        do {
            guard try fd.lock(kind, wait: wait) else {
                fd.close()
                return nil
            }
        } catch {
            fd.close()
            throw error.store("lock", file)
        }
    }

    deinit { fd.close() }
}
