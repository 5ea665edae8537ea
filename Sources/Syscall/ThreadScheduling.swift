#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// How the kernel schedules one thread, read from outside it: sched_getattr(2) (policy,
/// SCHED_RESET_ON_FORK, real-time priority, SCHED_DEADLINE's budget) and getpriority(2) (its
/// nice value, which sched_getattr leaves out for a real-time thread although the thread keeps
/// one). Any process may read any thread's.
public struct ThreadScheduling: Sendable, Equatable {
    /// SCHED_OTHER (0), SCHED_FIFO (1), SCHED_RR (2), SCHED_BATCH (3), SCHED_IDLE (5),
    /// SCHED_DEADLINE (6).
    public var policy: UInt32
    /// sched_attr's flags: SCHED_FLAG_RESET_ON_FORK (1), SCHED_DEADLINE's reclaim and overrun flags.
    public var flags: UInt64
    /// -20 ... 19.
    public var nice: Int32
    /// The real-time priority, 1 ... 99 for SCHED_FIFO and SCHED_RR, else 0.
    public var priority: UInt32
    /// SCHED_DEADLINE's runtime, deadline and period, in nanoseconds (0 for other policies).
    public var runtime: UInt64, deadline: UInt64, period: UInt64

    public init(
        policy: UInt32, flags: UInt64 = 0, nice: Int32 = 0, priority: UInt32 = 0, runtime: UInt64 = 0,
        deadline: UInt64 = 0, period: UInt64 = 0
    ) {
        (self.policy, self.flags, self.nice, self.priority) = (policy, flags, nice, priority)
        (self.runtime, self.deadline, self.period) = (runtime, deadline, period)
    }

    /// The corresponding C constants are SCHED_FIFO and SCHED_RR: the real-time policies.
    public var isRealTime: Bool { policy == 1 || policy == 2 }

    /// Thread `tid`'s (of any process).
    public static func of(thread tid: Int32) throws(Errno) -> ThreadScheduling {
        var attributes = chpox_sched_attr()
        _ = try retryingInterrupts { chpox_sched_getattr(tid, &attributes) }.get()
        var nice: Int32 = 0
        _ = try retryingInterrupts { chpox_thread_nice(tid, &nice) }.get()
        return ThreadScheduling(
            policy: attributes.sched_policy, flags: attributes.sched_flags, nice: nice,
            priority: attributes.sched_priority, runtime: attributes.sched_runtime,
            deadline: attributes.sched_deadline, period: attributes.sched_period)
    }

    /// The struct sched_attr that sched_setattr(2) takes to set it (the nice value too: the
    /// kernel keeps it only for SCHED_OTHER and SCHED_BATCH; a real-time thread's is set apart).
    public var attributes: chpox_sched_attr {
        var attributes = chpox_sched_attr()
        attributes.size = UInt32(MemoryLayout<chpox_sched_attr>.size)
        attributes.sched_policy = policy
        attributes.sched_flags = flags
        attributes.sched_nice = nice
        attributes.sched_priority = priority
        (attributes.sched_runtime, attributes.sched_deadline, attributes.sched_period) = (runtime, deadline, period)
        return attributes
    }
}
