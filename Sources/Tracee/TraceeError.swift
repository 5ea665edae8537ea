import Syscall

/// What can go wrong with a live process. Each case names the process and says what to do.
public enum TraceeError: Error, Sendable, CustomStringConvertible, Equatable {
    case noSuchProcess(pid: Int32)
    case zombie(pid: Int32)
    case permissionDenied(pid: Int32, operation: String)
    case system(Errno, pid: Int32, operation: String)
    case unexpectedStop(pid: Int32, status: Int32, operation: String)
    case unsupported(pid: Int32, reason: String)
    case malformed(file: String, reason: String)

    public var description: String {
        switch self {
        case .noSuchProcess(let pid):
            return "no process with pid \(pid) (it may have exited; check `ps -p \(pid)`)"
        case .zombie(let pid):
            return "pid \(pid) is a zombie: it has exited and only waits for its parent to reap it"
        case .permissionDenied(let pid, let operation):
            return
                "cannot \(operation) pid \(pid): permission denied "
                + "(ptrace needs the same user or CAP_SYS_PTRACE, "
                + "and /proc/sys/kernel/yama/ptrace_scope may forbid it)"
        case .system(let errno, let pid, let operation):
            return "\(operation) pid \(pid): \(errno)"
        case .unexpectedStop(let pid, let status, let operation):
            return "\(operation) pid \(pid): unexpected wait status 0x\(String(status, radix: 16))"
        case .unsupported(let pid, let reason):
            return "pid \(pid): \(reason)"
        case .malformed(let file, let reason):
            return "\(file): \(reason)"
        }
    }

    public static func from(_ errno: Errno, pid: Int32, _ operation: String) -> TraceeError {
        switch errno.rawValue {
        case 2, 3: return .noSuchProcess(pid: pid)  // ENOENT (/proc/<pid> is gone), ESRCH
        case 1, 13: return .permissionDenied(pid: pid, operation: operation)  // EPERM, EACCES
        default: return .system(errno, pid: pid, operation: operation)
        }
    }
}
