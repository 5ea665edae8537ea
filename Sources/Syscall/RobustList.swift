#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// A thread's robust futex list registration (get_robust_list(2)): where its list head is and
/// the head's size; a head of 0 means none.
public enum RobustList {
    public static func of(thread tid: Int32) throws(Errno) -> (head: UInt64, length: UInt64) {
        var head: UInt64 = 0
        var length: UInt64 = 0
        _ = try retryingInterrupts { Int32(chpox_get_robust_list(tid, &head, &length)) }.get()
        return (head, length)
    }
}
