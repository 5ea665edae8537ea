#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall
import Tracee

/// The process's POSIX record locks (fcntl F_SETLK) and its open files' leases (F_SETLEASE),
/// taken again by the stub itself: a POSIX lock belongs to the process and the file, so any
/// descriptor of the file takes it; a lease belongs to the open file and is taken through its
/// descriptor. Run after every other phase that opens or closes a file, in any process of the
/// tree (closing any descriptor of a file drops the process's POSIX locks on it; an open by
/// anyone may break a lease), after the credentials (a lease needs the file's owner or
/// CAP_LEASE, as it did) and after the I/O signal owners (taking a lease sets one when there is
/// none). Never waits: a lock another process took meanwhile, or an open that a lease forbids,
/// stops the restart.
public struct RecordLockPhase: RestartPhase {
    public struct Lock: Sendable, Equatable {
        public var fd: Int32
        public var path: String
        public var lock: ProcessImage.Descriptor.RangeLock

        public init(fd: Int32, path: String, lock: ProcessImage.Descriptor.RangeLock) {
            (self.fd, self.path, self.lock) = (fd, path, lock)
        }
    }

    public struct Lease: Sendable, Equatable {
        public var fd: Int32
        public var path: String
        public var write: Bool

        public init(fd: Int32, path: String, write: Bool) { (self.fd, self.path, self.write) = (fd, path, write) }
    }

    public var locks: [Lock]
    public var leases: [Lease]

    public var name: String { "POSIX locks and leases" }
    public var steps: [String] {
        locks.map { lock in
            "fd \(lock.fd): POSIX \(lock.lock.exclusive ? "write" : "read") lock on \(lock.path), from byte "
                + "\(lock.lock.start) " + (lock.lock.length == 0 ? "to the end" : "for \(lock.lock.length) bytes")
        } + leases.map { "fd \($0.fd): \($0.write ? "write" : "read") lease on \($0.path)" }
    }

    /// From the whole image: a POSIX lock taken through an open file inherited from another
    /// process of the tree is this process's all the same (that descriptor is in place by now).
    /// A descriptor left out under --skip-unsupported has nothing to take them on.
    public init(image: ProcessImage) {
        locks = image.descriptors.flatMap { descriptor -> [Lock] in
            guard descriptor.duplicateOf == nil, descriptor.kind != .unsupported else { return [] }
            return (descriptor.posixLocks ?? []).map { Lock(fd: descriptor.fd, path: descriptor.target, lock: $0) }
        }
        leases = image.descriptors.compactMap { descriptor in
            guard let lease = descriptor.lease, descriptor.duplicateOf == nil, descriptor.inherited == nil,
                descriptor.kind != .unsupported
            else {
                return nil
            }
            return Lease(fd: descriptor.fd, path: descriptor.target, write: lease == "write")
        }
    }

    public func run(in session: RestartSession) throws {
        for lock in locks { try take(lock, session) }
        for lease in leases { try take(lease, session) }
    }

    /// fcntl(fd, F_SETLK, struct flock): l_type (F_RDLCK 0, F_WRLCK 1) and l_whence (SEEK_SET)
    /// as shorts, l_start and l_len at 8 and 16, l_pid 0 (32 bytes).
    private func take(_ lock: Lock, _ session: RestartSession) throws {
        let calls = session.calls
        var flock = BinaryWriter(capacity: 32)
        flock.append(Int16(lock.lock.exclusive ? F_WRLCK : F_RDLCK))
        flock.append(Int16(SEEK_SET))
        flock.append(Int32(0))
        flock.append(lock.lock.start)
        flock.append(lock.lock.length)
        flock.append(Int64(0))
        let result = try calls.withFrame { () throws(TraceeError) in
            try calls.result(of: .fcntl, lock.fd, F_SETLK, try calls.bytes(flock.bytes, alignment: 8))
        }
        if result == -Int(EAGAIN) || result == -Int(EACCES) {
            throw TraceeError.unsupported(
                pid: session.pid,
                reason: "\(lock.path) (fd \(lock.fd)) is locked by another process now where it held a POSIX lock")
        }
        try calls.check(result, "take the POSIX lock of descriptor \(lock.fd)")
    }

    /// fcntl(fd, F_SETLEASE, F_RDLCK or F_WRLCK); EAGAIN: the file is open where the lease
    /// forbids it (for writing; for a write lease, by any other open file).
    private func take(_ lease: Lease, _ session: RestartSession) throws {
        let type = lease.write ? F_WRLCK : F_RDLCK
        let result = try session.calls.result(of: .fcntl, lease.fd, CHPOX_F_SETLEASE, Int(type))
        if result == -Int(EAGAIN) {
            throw TraceeError.unsupported(
                pid: session.pid,
                reason: "\(lease.path) (fd \(lease.fd)) is open "
                    + (lease.write ? "elsewhere" : "for writing") + " now: its \(lease.write ? "write" : "read") "
                    + "lease cannot be taken again")
        }
        try session.calls.check(result, "take the lease of descriptor \(lease.fd)")
    }
}
