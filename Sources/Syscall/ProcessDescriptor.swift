#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// A descriptor that refers to a process (a pidfd, pidfd_open(2)): it keeps naming that
/// process even if its pid is reused.
public struct ProcessDescriptor: Sendable {
    public let descriptor: FileDescriptor

    /// Opens a pidfd for process `pid` (pidfd_open(2), Linux 5.3).
    public static func open(_ pid: Int32) throws(Errno) -> ProcessDescriptor {
        let fd = try retryingInterrupts { chpox_pidfd_open(pid) }.get()
        return ProcessDescriptor(descriptor: FileDescriptor(rawValue: fd))
    }

    /// A copy in this process of the process's descriptor `remote` (pidfd_getfd(2), Linux 5.6;
    /// needs ptrace access to it). The copy is close-on-exec.
    public func copyDescriptor(_ remote: Int32) throws(Errno) -> FileDescriptor {
        let fd = descriptor.rawValue
        return FileDescriptor(rawValue: try retryingInterrupts { chpox_pidfd_getfd(fd, remote) }.get())
    }

    public func close() { descriptor.close() }
}
