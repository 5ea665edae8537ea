#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// Which open file an epoll watches (kcmp(2), KCMP_EPOLL_TFD): an epoll keeps watching a file
/// registered as descriptor N after N is closed, for as long as another descriptor holds it.
public enum EpollTargets {
    /// Whether descriptor `fd` of `pid` is the file epoll `epoll` watches as the `nth` target
    /// registered as `target` (0 for the first); nil when kcmp cannot tell (no such target).
    public static func isTarget(pid: Int32, fd: Int32, epoll: Int32, target: Int32, nth: Int = 0) -> Bool? {
        let result = chpox_kcmp_epoll_target(pid, fd, epoll, target, UInt32(nth))
        return result < 0 ? nil : result == 0
    }
}
