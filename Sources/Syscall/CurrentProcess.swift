#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// The calling process: its ids, and sleeping its calling thread.
public enum CurrentProcess {
    /// Makes this process the child subreaper of its descendants (PR_SET_CHILD_SUBREAPER), or
    /// not: orphans of its tree become its children, its to reap, rather than init's.
    public static func setChildSubreaper(_ on: Bool) throws(Errno) {
        _ = try retryingInterrupts { chpox_prctl1(CHPOX_PR_SET_CHILD_SUBREAPER, on ? 1 : 0) }.get()
    }

    /// The process id (getpid(2)).
    public static var id: Int32 { getpid() }
    /// The real user id (getuid(2)).
    public static var userID: UInt32 { getuid() }
    /// The effective user id (geteuid(2)): whose files it may open.
    public static var effectiveUserID: UInt32 { geteuid() }

    /// The working directory (getcwd(3)): an absolute path without symlinks.
    public static func workingDirectory() throws(Errno) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = buffer.count
        guard getcwd(&buffer, count) != nil else { throw Errno.current }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Sleeps the calling thread for `microseconds` (nanosleep(2)); a signal handler that
    /// interrupts it does not cut it short.
    public static func sleep(microseconds: UInt64) {
        var request = timespec(tv_sec: Int(microseconds / 1_000_000), tv_nsec: Int(microseconds % 1_000_000) * 1000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
    }
}

/// Signals to any process.
public enum Signal {
    /// Sends `signal` to process `pid` (kill(2)).
    public static func send(_ signal: Int32, to pid: Int32) throws(Errno) {
        _ = try retryingInterrupts { kill(pid, signal) }.get()
    }
}
