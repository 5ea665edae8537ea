#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The kernel's clocks in nanoseconds (clock_gettime(2)).
public enum ClockTime {
    /// CLOCK_MONOTONIC: for durations; it never jumps.
    public static func monotonic() -> Int64 { read(CLOCK_MONOTONIC) }

    /// CLOCK_REALTIME: nanoseconds since the epoch, for times people read.
    public static func realtime() -> Int64 { read(CLOCK_REALTIME) }

    private static func read(_ clock: clockid_t) -> Int64 {
        var time = timespec()
        clock_gettime(clock, &time)  // cannot fail for these two clocks
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }
}
