import Tracee

/// Each thread's seccomp state, read while the process is frozen (its filters suspended,
/// `FrozenProcess`): strict mode, or its filters with the part every thread shares.
///
/// The kernel does not say whether two threads hold the same filter or two equal ones (kcmp
/// has no type for it): equal programs at the same place of every thread's chain are taken
/// as one shared chain (what inheritance and SECCOMP_FILTER_FLAG_TSYNC make), restored once
/// for all threads. Equal filters in some threads but not all cannot be given back as one
/// (TSYNC gives a filter to every thread), nor told apart from separate copies: refused.
enum SeccompCapture {
    typealias Seccomp = ProcessImage.Seccomp

    struct Result {
        var threads: [Int32: Seccomp] = [:]
        var unsupported: [String] = []
    }

    /// SECCOMP_RET_USER_NOTIF, the action (high 16 bits) of a return that asks a listener.
    static let userNotification: UInt32 = 0x7fc0_0000
    /// Flags a restart can give a filter again: SECCOMP_FILTER_FLAG_LOG.
    static let restorableFlags: UInt64 = 2

    static func capture(_ process: FrozenProcess) throws(TraceeError) -> Result {
        let pid = process.pid
        var result = Result()
        for tid in process.threads {
            let mode = try ProcFS.status(pid, thread: tid)["Seccomp"] ?? "0"
            let file = tid == pid ? "/proc/\(pid)/status" : "/proc/\(pid)/task/\(tid)/status"
            switch mode {
            case "0": continue
            case "1": result.threads[tid] = Seccomp(strict: true)
            case "2":
                let filters = try process.seccompFilters(of: tid).map { Seccomp.Filter(program: $0, flags: $1) }
                result.threads[tid] = Seccomp(filters: filters)
                let status = try ProcFS.status(pid, thread: tid)
                result.threads[tid]?.speculation = speculationFields.map { status[$0] ?? "" }
                for (k, filter) in filters.enumerated() {
                    if let reason = refusal(filter) {
                        result.unsupported.append("seccomp filter \(k) of thread \(tid): \(reason)")
                    }
                }
            default:
                result.unsupported.append("seccomp mode \(mode) of thread \(tid) (\(file) Seccomp: \(mode)), unknown")
            }
        }
        let (shared, unsupported) = sharing(result.threads, threads: process.threads)
        result.unsupported += unsupported
        for tid in result.threads.keys where !(result.threads[tid]?.strict ?? true) {
            result.threads[tid]?.shared = shared
        }
        return result
    }

    /// The /proc status fields a filter may change (`Seccomp.speculation`).
    static let speculationFields = ["Speculation_Store_Bypass", "SpeculationIndirectBranch"]

    /// Why `filter` cannot be installed again as it was; nil when it can.
    static func refusal(_ filter: Seccomp.Filter) -> String? {
        // The restart passes the program in its scratch pages (`MemoryLayoutPhase`).
        if filter.program.count * 8 + 64 > MemoryLayoutPhase.scratchSize {
            return "its \(filter.program.count) instructions do not fit the restart's \(MemoryLayoutPhase.scratchSize) "
                + "bytes of scratch memory, which pass it to seccomp(2)"
        }
        if filter.flags & ~restorableFlags != 0 {
            return "flags 0x\(String(filter.flags, radix: 16)), which a restart cannot give again"
        }
        // BPF_RET (6) with BPF_K (0) returns the constant, with BPF_A (0x10) a computed value.
        for word in filter.program where UInt16(truncatingIfNeeded: word) & 0x07 == 0x06 {
            let code = UInt16(truncatingIfNeeded: word), k = UInt32(truncatingIfNeeded: word >> 32)
            if code & 0x18 != 0 {
                return "it returns a computed action (BPF_RET|BPF_A), which may be SECCOMP_RET_USER_NOTIF: a "
                    + "listener's descriptor (another process's) cannot be attached to it again"
            }
            if k & 0xffff_0000 == userNotification {
                return "it returns SECCOMP_RET_USER_NOTIF: its listener (a descriptor of this or another process) "
                    + "cannot be attached to a filter a restart installs"
            }
        }
        return nil
    }

    /// How many of the oldest filters every thread holds alike (0 unless every thread is in
    /// filter mode), and the refusals for filters some threads hold alike beyond those.
    static func sharing(_ states: [Int32: Seccomp], threads: [Int32]) -> (Int, [String]) {
        let chains = threads.map { states[$0].flatMap { $0.strict ? nil : $0.filters } ?? [] }
        var shared = 0
        if chains.allSatisfy({ !$0.isEmpty }) && threads.allSatisfy({ states[$0]?.strict == false }) {
            let shortest = chains.map(\.count).min() ?? 0
            while shared < shortest, chains.allSatisfy({ $0[shared] == chains[0][shared] }) { shared += 1 }
        }
        var unsupported: [String] = []
        for i in threads.indices {
            for j in threads.indices where j > i {
                let (a, b) = (chains[i], chains[j])
                guard a.count > shared, b.count > shared, a[shared] == b[shared] else { continue }
                unsupported.append(
                    "threads \(threads[i]) and \(threads[j]) hold equal seccomp filters (number \(shared) of each) "
                        + "that other threads lack: a restart can give a filter to one thread or to every thread "
                        + "(TSYNC), not share it among some")
            }
        }
        return (shared, unsupported)
    }
}
