#if canImport(Glibc)
import Glibc
#endif
import Tracee

/// flock(2) locks taken again on the open files that held them, by the stub itself (the kernel
/// records the pid that took a lock and shows it in /proc/locks). Never waits: a lock another
/// process took meanwhile stops the restart.
public struct FileLockPhase: RestartPhase {
    public struct Lock: Sendable, Equatable {
        public var fd: Int32
        public var path: String
        public var exclusive: Bool
    }

    public var locks: [Lock]

    public var name: String { "file locks" }
    public var steps: [String] {
        locks.map { "fd \($0.fd): flock \($0.exclusive ? "exclusive" : "shared") on \($0.path)" }
    }

    public init(image: ProcessImage) {
        locks = image.descriptors.compactMap { descriptor in
            guard let kind = descriptor.flock, descriptor.duplicateOf == nil else { return nil }
            return Lock(fd: descriptor.fd, path: descriptor.target, exclusive: kind == "exclusive")
        }
    }

    public func run(in session: RestartSession) throws {
        for lock in locks {
            let operation = (lock.exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB
            let result = try session.calls.result(of: .flock, lock.fd, operation)
            if result == -Int(EWOULDBLOCK) {
                throw TraceeError.unsupported(
                    pid: session.pid, reason: "\(lock.path) (fd \(lock.fd)) is flock-locked by another process now")
            }
            try session.calls.check(result, "take the flock lock of descriptor \(lock.fd)")
        }
    }
}
