#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall
import Tracee

/// flock(2) and open-file-description (fcntl F_OFD_SETLK) locks taken again on the open files
/// that held them, by the stub itself (the kernel records the pid that took a lock and shows it
/// in /proc/locks). Never waits: a lock another process took meanwhile stops the restart.
public struct FileLockPhase: RestartPhase {
    public struct Lock: Sendable, Equatable {
        public var fd: Int32
        public var path: String
        public var exclusive: Bool
        /// nil: flock; otherwise the OFD lock's byte range (length 0: to the end).
        public var range: (start: Int64, length: Int64)? = nil

        public static func == (a: Lock, b: Lock) -> Bool {
            (a.fd, a.path, a.exclusive) == (b.fd, b.path, b.exclusive) && a.range?.start == b.range?.start
                && a.range?.length == b.range?.length
        }
    }

    public var locks: [Lock]

    public var name: String { "file locks" }
    public var steps: [String] {
        locks.map { lock in
            let kind = lock.exclusive ? "exclusive" : "shared"
            guard let range = lock.range else { return "fd \(lock.fd): flock \(kind) on \(lock.path)" }
            return "fd \(lock.fd): OFD lock \(kind) on \(lock.path), from byte \(range.start) "
                + (range.length == 0 ? "to the end" : "for \(range.length) bytes")
        }
    }

    public init(image: ProcessImage) {
        locks = image.descriptors.flatMap { descriptor -> [Lock] in
            guard descriptor.duplicateOf == nil else { return [] }
            let flock = descriptor.flock.map {
                [Lock(fd: descriptor.fd, path: descriptor.target, exclusive: $0 == "exclusive")]
            }
            return (flock ?? [])
                + (descriptor.ofdLocks ?? []).map {
                    Lock(
                        fd: descriptor.fd, path: descriptor.target, exclusive: $0.exclusive,
                        range: ($0.start, $0.length))
                }
        }
    }

    public func run(in session: RestartSession) throws {
        for lock in locks {
            if let range = lock.range {
                try takeOFDLock(lock, range, session)
                continue
            }
            let operation = (lock.exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB
            let result = try session.calls.result(of: .flock, lock.fd, operation)
            if result == -Int(EWOULDBLOCK) {
                throw TraceeError.unsupported(
                    pid: session.pid, reason: "\(lock.path) (fd \(lock.fd)) is flock-locked by another process now")
            }
            try session.calls.check(result, "take the flock lock of descriptor \(lock.fd)")
        }
    }

    /// fcntl(fd, F_OFD_SETLK, struct flock): l_type (F_RDLCK 0, F_WRLCK 1) and l_whence
    /// (SEEK_SET) as shorts, l_start and l_len at 8 and 16, l_pid 0 (32 bytes).
    private func takeOFDLock(_ lock: Lock, _ range: (start: Int64, length: Int64), _ session: RestartSession) throws {
        let calls = session.calls
        var flock = BinaryWriter(capacity: 32)
        flock.append(Int16(lock.exclusive ? F_WRLCK : F_RDLCK))
        flock.append(Int16(SEEK_SET))
        flock.append(Int32(0))
        flock.append(range.start)
        flock.append(range.length)
        flock.append(Int64(0))
        let result = try calls.withFrame { () throws(TraceeError) in
            try calls.result(of: .fcntl, lock.fd, CHPOX_F_OFD_SETLK, try calls.bytes(flock.bytes, alignment: 8))
        }
        if result == -Int(EAGAIN) || result == -Int(EACCES) {
            throw TraceeError.unsupported(
                pid: session.pid,
                reason: "\(lock.path) (fd \(lock.fd)) is locked by another process now where it held an OFD lock")
        }
        try calls.check(result, "take the OFD lock of descriptor \(lock.fd)")
    }
}
