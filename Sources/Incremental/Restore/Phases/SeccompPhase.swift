import CLinux
import Syscall
import Tracee

/// Each thread's seccomp filters or strict mode, as they were: just before the credentials,
/// while the stub is still root (installing a filter needs CAP_SYS_ADMIN or no_new_privs, and
/// setresuid to another user empties the capabilities). From here on every call chpox makes
/// in the stub would be filtered: the filters are suspended while it is traced
/// (PTRACE_O_SUSPEND_SECCOMP, set on every thread first), and take effect as it is let go.
///
/// The filters every thread shares are installed once, from the main thread, with
/// SECCOMP_FILTER_FLAG_TSYNC: one chain the kernel holds for all, as inheritance or TSYNC made
/// it (a later TSYNC of the process succeeds as it would have). Then each thread's own, oldest
/// first, and strict mode in a thread that had it. Then no_new_privs in each thread that had
/// it (after the filters: a TSYNC would give the caller's to every thread). Filters and
/// no_new_privs only ever take away: nothing an image holds here grants the process anything.
/// The result is read back and compared.
public struct SeccompPhase: RestartPhase {
    /// Each thread's state, by its tid in the image; threads without seccomp are absent.
    public var threads: [Int32: ProcessImage.Seccomp]
    /// The threads that had no_new_privs set, by their tid in the image.
    public var noNewPrivileges: Set<Int32>
    let pid: Int32

    public var name: String { "seccomp" }
    public var steps: [String] {
        threads.sorted { $0.key < $1.key }.map { "thread \($0.key): \($0.value.summary)" }
            + noNewPrivileges.sorted().map { "thread \($0): no_new_privs" }
    }

    public init(image: ProcessImage) {
        pid = image.pid
        threads = Dictionary(
            image.threads.compactMap { thread in thread.seccomp.map { (thread.tid, $0) } },
            uniquingKeysWith: { first, _ in first })
        noNewPrivileges = Set(image.threads.filter { $0.noNewPrivileges == true }.map(\.tid))
    }

    public func run(in session: RestartSession) throws {
        let all = session.threadsBySavedID(main: pid)
        try installFilters(all, session)
        try setNoNewPrivileges(all, session)
    }

    /// Sets no_new_privs where the image had it, once the filters are in, and checks every
    /// thread has it exactly where the image had.
    private func setNoNewPrivileges(_ all: [(saved: Int32, current: Int32)], _ session: RestartSession) throws {
        for (saved, tid) in all where noNewPrivileges.contains(saved) {
            try session.calls.call(
                .prctl, CHPOX_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, on: tid, to: "set no_new_privs in thread \(tid)")
        }
        for (saved, tid) in all {
            let now = try ProcFS.status(session.pid, thread: tid)["NoNewPrivs"] == "1"
            guard now == noNewPrivileges.contains(saved) else {
                throw TraceeError.unsupported(
                    pid: session.pid,
                    reason: "its thread \(saved) had no_new_privs \(now ? "unset" : "set"), which the restart "
                        + "cannot give it: ld-chpox runs with no_new_privs, which every process it starts inherits "
                        + "and none can unset; restart it from a process without it")
            }
        }
    }

    private func installFilters(_ all: [(saved: Int32, current: Int32)], _ session: RestartSession) throws {
        guard !threads.isEmpty else { return }
        try check(threadCount: all.count, session)
        do {
            try session.process.suspendSeccomp()
        } catch {
            throw refuse(
                "its seccomp filters must be suspended while the restart works in it (PTRACE_O_SUSPEND_SECCOMP: "
                    + "\(error)), which needs ld-chpox to hold CAP_SYS_ADMIN and run outside seccomp", session)
        }
        let shared = threads[pid]?.shared ?? 0
        if let main = threads[pid], shared > 0 {
            for (k, filter) in main.filters.prefix(shared).enumerated() {
                try install(
                    filter, flags: all.count > 1 ? UInt64(CHPOX_SECCOMP_FILTER_FLAG_TSYNC) : 0, on: session.pid,
                    what: "shared seccomp filter \(k)", session)
            }
        }
        for (saved, tid) in all {
            guard let state = threads[saved] else { continue }
            if state.strict {
                try session.calls.call(
                    .seccomp, CHPOX_SECCOMP_SET_MODE_STRICT, 0, 0, on: tid,
                    to: "put thread \(tid) in seccomp strict mode")
                continue
            }
            for (k, filter) in state.filters.enumerated().dropFirst(shared) {
                try install(filter, flags: 0, on: tid, what: "seccomp filter \(k) of thread \(tid)", session)
            }
        }
        try verify(all, session)
    }

    /// Refuses an image whose states a restart cannot install as they are described.
    private func check(threadCount: Int, _ session: RestartSession) throws {
        let shared = threads[pid]?.shared ?? 0
        for (tid, state) in threads {
            if state.strict && !state.filters.isEmpty {
                throw refuse("thread \(tid) is in strict mode with filters, which seccomp cannot be", session)
            }
            if !state.strict && state.filters.isEmpty {
                throw refuse("thread \(tid) is in filter mode without a filter", session)
            }
            if let reason = state.filters.lazy.compactMap(SeccompCapture.refusal).first {
                throw refuse("a filter of thread \(tid): \(reason)", session)
            }
            guard state.strict || state.shared == shared else {
                throw refuse("its threads disagree on how many filters they share", session)
            }
        }
        if shared > 0 {
            let main = threads[pid]?.filters.prefix(shared) ?? []
            guard threads.count == threadCount,
                threads.values.allSatisfy({
                    !$0.strict && $0.filters.count >= shared && $0.filters.prefix(shared) == main
                })
            else {
                throw refuse("\(shared) filters are said to be shared by every thread, which not all hold", session)
            }
        }
    }

    private func install(
        _ filter: ProcessImage.Seccomp.Filter, flags: UInt64, on tid: Int32, what: String, _ session: RestartSession
    ) throws {
        let calls = session.calls
        let result = try calls.withFrame { () throws(TraceeError) -> Int in
            let program = try calls.words(filter.program)
            // struct sock_fprog: unsigned short len, then (aligned) the program's address.
            let header = try calls.words([UInt64(filter.program.count), program])
            return try calls.result(
                of: .seccomp, CHPOX_SECCOMP_SET_MODE_FILTER, filter.flags | flags, header, on: tid)
        }
        try calls.check(result, "install " + what)
        // With TSYNC, a positive result names a thread that could not take the filter.
        guard result == 0 else {
            throw refuse("\(what): thread \(result) could not take it (SECCOMP_FILTER_FLAG_TSYNC)", session)
        }
    }

    /// Every thread's mode and filters, read back, are the image's.
    private func verify(_ all: [(saved: Int32, current: Int32)], _ session: RestartSession) throws {
        for (saved, tid) in all {
            let expected = threads[saved]
            let mode = try ProcFS.status(session.pid, thread: tid)["Seccomp"] ?? "?"
            let wanted = expected.map { $0.strict ? "1" : "2" } ?? "0"
            guard mode == wanted else {
                throw refuse("thread \(tid) is in seccomp mode \(mode) after the restart set \(wanted)", session)
            }
            guard let expected, !expected.strict else { continue }
            let now = try session.process.seccompFilters(of: tid).map {
                ProcessImage.Seccomp.Filter(program: $0, flags: $1)
            }
            guard now == expected.filters else {
                throw refuse(
                    "thread \(tid) holds other seccomp filters than the image's after installing them", session)
            }
            if let speculation = expected.speculation {
                let status = try ProcFS.status(session.pid, thread: tid)
                let current = SeccompCapture.speculationFields.map { status[$0] ?? "" }
                guard current == speculation else {
                    throw refuse(
                        "thread \(tid) had speculation mitigations \(speculation.joined(separator: ", ")) and has "
                            + "\(current.joined(separator: ", ")) under the same filters (one may have been installed "
                            + "with SECCOMP_FILTER_FLAG_SPEC_ALLOW, which the kernel does not report, or set with "
                            + "PR_SET_SPECULATION_CTRL)", session)
                }
            }
        }
    }

    private func refuse(_ reason: String, _ session: RestartSession) -> TraceeError {
        .unsupported(pid: session.pid, reason: "cannot give it its seccomp state: " + reason)
    }
}
