#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// A process's resource limits (prlimit(2)), of this process or another (which needs the same
/// user, or CAP_SYS_RESOURCE).
public struct ResourceLimit: Sendable, Equatable {
    public var soft: UInt64
    public var hard: UInt64

    public init(soft: UInt64, hard: UInt64) {
        self.soft = soft
        self.hard = hard
    }

    /// The limit of `resource` (an RLIMIT_* constant) of process `pid`.
    public static func of(_ pid: Int32, _ resource: Int32) throws(Errno) -> ResourceLimit {
        var limits: [CUnsignedLongLong] = [0, 0]
        _ = try retryingInterrupts { chpox_prlimit(pid, resource, &limits) }.get()
        return ResourceLimit(soft: UInt64(limits[0]), hard: UInt64(limits[1]))
    }

    /// Sets the limit of `resource` of process `pid`.
    public func set(_ pid: Int32, _ resource: Int32) throws(Errno) {
        let limits: [CUnsignedLongLong] = [CUnsignedLongLong(soft), CUnsignedLongLong(hard)]
        _ = try retryingInterrupts { chpox_prlimit_set(pid, resource, limits) }.get()
    }
}
