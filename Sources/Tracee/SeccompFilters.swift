import CLinux

extension FrozenProcess {
    /// The seccomp filters of thread `tid`, the oldest first: each one's classic BPF program
    /// (PTRACE_SECCOMP_GET_FILTER, CAP_SYS_ADMIN) and the flags the kernel kept of it.
    public func seccompFilters(of tid: Int32) throws(TraceeError) -> [(program: [UInt64], flags: UInt64)] {
        var filters: [(program: [UInt64], flags: UInt64)] = []
        // The kernel holds at most MAX_INSNS_PER_PATH (32768) instructions in a chain, each
        // filter one at least.
        while filters.count <= 32768, let program = try Ptrace.seccompFilter(tid, pid: pid, index: filters.count) {
            filters.append((program, try Ptrace.seccompFilterFlags(tid, pid: pid, index: filters.count)))
        }
        return filters
    }
}
