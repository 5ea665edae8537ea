import Foundation
import Tracee

/// The image's threads: registers by name, XSAVE area, signal mask and queue, rseq, tid
/// address, alternate signal stack.
extension ProcessImage {
    public struct ThreadImage: Codable, Sendable, Equatable {
        public var tid: Int32
        /// Its name (comm: PR_SET_NAME, what `ps` and `top` show); nil in `/1` images.
        public var name: String?
        public var registers: Registers
        /// The XSAVE area (x87, SSE, AVX...) as PTRACE_GETREGSET NT_X86_XSTATE returns it.
        public var xstate: Data
        /// The blocked-signal mask (bit n-1 for signal n).
        public var signalMask: UInt64
        /// rseq registration (nil when the thread has none).
        public var rseq: Rseq?
        /// Signals queued for this thread alone.
        public var pendingSignals: [SignalInfo]
        /// set_tid_address's pointer (nil if the thread appeared after it was read).
        public var clearAddress: UInt64?
        /// sigaltstack (nil: none).
        public var signalStack: SignalStack?
        /// set_robust_list's head (0: none) and its length; nil in images from before they were
        /// kept. glibc registers one for every thread: robust mutexes are released through it
        /// when the thread dies.
        public var robustList: [UInt64]? = nil
        /// How the kernel schedules it (policy, priority, nice); nil in images from before it was kept.
        public var scheduling: Scheduling? = nil
        /// Its ids and capability sets where they are not the process's (each thread has its own:
        /// setresuid and capset act on the calling thread); nil when they are.
        public var credentials: Credentials? = nil
        /// Its secure bits (PR_GET_SECUREBITS); nil in images written before they were recorded.
        /// The restart sets SECBIT_KEEP_CAPS again (`CredentialsPhase`); any other is refused at
        /// the checkpoint.
        public var securebits: UInt32? = nil

        /// Its seccomp mode and filters; nil when it had none (and in images from before they
        /// were kept, which refused a process under seccomp).
        public var seccomp: Seccomp? = nil
        /// prctl(PR_SET_NO_NEW_PRIVS) was set (/proc NoNewPrivs: 1): execve grants it nothing
        /// (no setuid, no file capabilities). nil when it was not, and in images from before
        /// it was kept.
        public var noNewPrivileges: Bool? = nil
        /// Its control groups (lines of /proc/PID/task/TID/cgroup) where they are not its
        /// process's (cgroup v1 places threads one by one, v2 in a threaded subtree); nil when
        /// they are, and in images from before they were kept (which refused such a thread).
        public var cgroups: [String]? = nil

        enum CodingKeys: String, CodingKey {
            case tid, name, registers, xstate, signalMask, rseq, pendingSignals, clearAddress, signalStack, robustList,
                scheduling, credentials, securebits, seccomp, noNewPrivileges, cgroups
        }

        public init(
            tid: Int32, registers: Registers, xstate: Data, signalMask: UInt64, rseq: Rseq?,
            pendingSignals: [SignalInfo],
            clearAddress: UInt64?, signalStack: SignalStack?, name: String? = nil
        ) {
            self.name = name
            (self.tid, self.registers, self.xstate, self.signalMask) = (tid, registers, xstate, signalMask)
            (self.rseq, self.pendingSignals, self.clearAddress, self.signalStack) = (
                rseq, pendingSignals, clearAddress, signalStack
            )
        }

        /// A thread read with ptrace, with what the injector read for it.
        public init(_ state: ThreadState, name: String?, clearAddress: UInt64?, signalStack: SignalStack?) {
            self.init(
                tid: state.tid, registers: Registers(words: state.registers), xstate: Data(state.xstate),
                signalMask: state.signalMask,
                rseq: state.rseq.map {
                    Rseq(address: $0.address, size: $0.size, signature: $0.signature, flags: $0.flags)
                },
                pendingSignals: state.pendingSignals.map(SignalInfo.init), clearAddress: clearAddress,
                signalStack: signalStack,
                name: name)
        }

        /// What ptrace puts back into a thread.
        public var state: ThreadState {
            ThreadState(
                tid: tid, registers: registers.words, xstate: [UInt8](xstate), signalMask: signalMask,
                rseq: rseq.map { .init(address: $0.address, size: $0.size, signature: $0.signature, flags: $0.flags) },
                pendingSignals: pendingSignals.map(\.bytes))
        }
    }

    /// user_regs_struct, field by field.
    public struct Registers: Codable, Sendable, Equatable {
        public var r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi: UInt64
        /// The system call a thread stopped in (-1: none).
        public var origRax: UInt64
        public var rip, cs, eflags, rsp, ss: UInt64
        public var fsBase, gsBase: UInt64
        public var ds, es, fs, gs: UInt64

        enum CodingKeys: String, CodingKey {
            case r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi
            case origRax = "orig_rax"
            case rip, cs, eflags, rsp, ss
            case fsBase = "fs_base", gsBase = "gs_base"
            case ds, es, fs, gs
        }

        /// The register names in user_regs_struct order, for people reading a dump.
        public static let names = [
            "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
            "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base",
            "ds", "es", "fs", "gs",
        ]

        /// From user_regs_struct's 27 words (missing ones are zero).
        public init(words: [UInt64]) {
            let w = words + [UInt64](repeating: 0, count: max(0, 27 - words.count))
            (r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8) = (
                w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9]
            )
            (rax, rcx, rdx, rsi, rdi, origRax, rip, cs, eflags) = (
                w[10], w[11], w[12], w[13], w[14], w[15], w[16], w[17], w[18]
            )
            (rsp, ss, fsBase, gsBase, ds, es, fs, gs) = (w[19], w[20], w[21], w[22], w[23], w[24], w[25], w[26])
        }

        /// user_regs_struct's 27 words, in `names` order.
        public var words: [UInt64] {
            [
                r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, origRax, rip, cs, eflags, rsp,
                ss,
                fsBase, gsBase, ds, es, fs, gs,
            ]
        }
    }

    /// A thread's scheduling (sched(7)): policy, SCHED_RESET_ON_FORK, real-time priority,
    /// SCHED_DEADLINE's budget, and its nice value.
    public struct Scheduling: Codable, Sendable, Equatable {
        /// SCHED_OTHER 0, SCHED_FIFO 1, SCHED_RR 2, SCHED_BATCH 3, SCHED_IDLE 5, SCHED_DEADLINE 6.
        public var policy: UInt32
        /// sched_attr's flags (SCHED_FLAG_RESET_ON_FORK 1, SCHED_DEADLINE's).
        public var flags: UInt64
        /// -20 ... 19.
        public var nice: Int32
        /// Real-time priority, 1 ... 99 under SCHED_FIFO and SCHED_RR.
        public var priority: UInt32
        /// SCHED_DEADLINE's runtime, deadline and period in nanoseconds; nil under other policies.
        public var deadline: [UInt64]? = nil

        enum CodingKeys: String, CodingKey { case policy, flags, nice, priority, deadline }

        public init(policy: UInt32, flags: UInt64 = 0, nice: Int32 = 0, priority: UInt32 = 0, deadline: [UInt64]? = nil)
        {
            (self.policy, self.flags, self.nice, self.priority, self.deadline) = (
                policy, flags, nice, priority, deadline
            )
        }

        /// What SCHED_OTHER threads have unless something changed it.
        public static let standard = Scheduling(policy: 0)

        /// The policy's name: "SCHED_RR", or the number for one chpox does not know.
        public var policyName: String {
            let names: [UInt32: String] = [
                0: "SCHED_OTHER", 1: "SCHED_FIFO", 2: "SCHED_RR", 3: "SCHED_BATCH", 5: "SCHED_IDLE",
                6: "SCHED_DEADLINE",
            ]
            return names[policy] ?? "policy \(policy)"
        }

        /// "SCHED_RR priority 3, reset on fork, nice -5", as people read it.
        public var summary: String {
            policyName + (priority != 0 ? " priority \(priority)" : "") + (flags & 1 != 0 ? " reset-on-fork" : "")
                + (flags & ~1 != 0 ? " flags 0x\(String(flags, radix: 16))" : "")
                + (deadline.map { " runtime/deadline/period \($0.map(String.init).joined(separator: "/")) ns" } ?? "")
                + ", nice \(nice)"
        }
    }

    /// A thread's seccomp(2) state: strict mode, or its filters.
    public struct Seccomp: Codable, Sendable, Equatable {
        /// SECCOMP_MODE_STRICT (/proc Seccomp: 1): read, write, _exit and sigreturn only.
        public var strict: Bool
        /// Its filters, the oldest first (the order they were installed in).
        public var filters: [Filter]
        /// How many of its oldest filters every thread of the process shares with it (one chain
        /// the kernel holds once: inherited from the thread that made them, or given to all
        /// with SECCOMP_FILTER_FLAG_TSYNC); the same number on every thread. A restart installs
        /// those once, with TSYNC, then each thread's own after them.
        public var shared: Int
        /// /proc's Speculation_Store_Bypass and SpeculationIndirectBranch of the thread: a filter
        /// may force mitigations (unless installed with SECCOMP_FILTER_FLAG_SPEC_ALLOW, which the
        /// kernel does not report); a restart checks its own are the same. nil when unread.
        public var speculation: [String]? = nil

        enum CodingKeys: String, CodingKey { case strict, filters, shared, speculation }

        public init(strict: Bool = false, filters: [Filter] = [], shared: Int = 0) {
            (self.strict, self.filters, self.shared) = (strict, filters, shared)
        }

        /// One filter: its classic BPF program and the flags it was installed with.
        public struct Filter: Codable, Sendable, Equatable {
            /// struct sock_filter, one a word: code (bits 0-15), jt (16-23), jf (24-31), k (32-63).
            public var program: [UInt64]
            /// SECCOMP_FILTER_FLAG_LOG (2) where it was set; the only flag the kernel reports.
            public var flags: UInt64

            enum CodingKeys: String, CodingKey { case program, flags }

            public init(program: [UInt64], flags: UInt64 = 0) { (self.program, self.flags) = (program, flags) }
        }

        /// "strict mode", "3 filters (2 shared by every thread)".
        public var summary: String {
            if strict { return "strict mode" }
            return "\(filters.count) filter\(filters.count == 1 ? "" : "s")"
                + (shared > 0 ? " (\(shared) shared by every thread)" : "")
                + (filters.contains { $0.flags != 0 }
                    ? ", flags \(filters.map { String($0.flags) }.joined(separator: "/"))" : "")
        }
    }

    /// rseq(2) registration.
    public struct Rseq: Codable, Sendable, Equatable {
        public var address: UInt64
        public var size: UInt32
        public var signature: UInt32
        public var flags: UInt32

        enum CodingKeys: String, CodingKey { case address, size, signature, flags }

        public init(address: UInt64, size: UInt32, signature: UInt32, flags: UInt32) {
            (self.address, self.size, self.signature, self.flags) = (address, size, signature, flags)
        }
    }

    /// sigaltstack(2): stack_t.
    public struct SignalStack: Codable, Sendable, Equatable {
        public var address: UInt64
        /// SS_ONSTACK (1), SS_DISABLE (2), SS_AUTODISARM.
        public var flags: UInt64
        public var size: UInt64

        enum CodingKeys: String, CodingKey { case address, flags, size }

        public init(address: UInt64, flags: UInt64, size: UInt64) {
            (self.address, self.flags, self.size) = (address, flags, size)
        }

        /// What a restart sets for a thread that had none: SS_DISABLE.
        public static let disabled = SignalStack(address: 0, flags: 2, size: 0)
        /// stack_t's three words.
        public var words: [UInt64] { [address, flags, size] }
    }
}
