#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The calling process: its ids, and sleeping its calling thread.
public enum CurrentProcess {
    /// The process id (getpid(2)).
    public static var id: Int32 { getpid() }
    /// The real user id (getuid(2)).
    public static var userID: UInt32 { getuid() }
    /// The effective user id (geteuid(2)): whose files it may open.
    public static var effectiveUserID: UInt32 { geteuid() }

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
