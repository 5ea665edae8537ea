#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall

/// A process with every thread stopped by PTRACE_SEIZE + PTRACE_INTERRUPT. Nothing the
/// process does can fall between two observations made while it is frozen. `thaw` detaches
/// every thread; if the tracer dies instead, the kernel detaches them and the process runs on.
public final class FrozenProcess {
    public let pid: Int32
    /// Seized thread ids, the main thread first.
    public private(set) var threads: [Int32] = []
    private var thawed = false
    /// Threads created by remote clone calls, not yet adopted.
    private var cloned: [Int32] = []
    /// Processes created by remote fork calls, not yet adopted.
    private var forked: [Int32] = []
    /// Signals dequeued by a thread as it stopped, to be delivered when it resumes.
    /// Signals taken from threads on their way in (at the stop, or during a call), delivered at
    /// `thaw`: one per thread.
    var heldSignals: [Int32: (signal: Int32, info: [UInt8])] = [:]
    /// The ptrace options chpox set on each thread (PTRACE_SETOPTIONS replaces them all).
    private var options: [Int32: Int32] = [:]
    /// Its seccomp filters are suspended (`suspendSeccomp`).
    public private(set) var seccompSuspended = false

    /// Seizes and stops every thread, repeating until no new thread appeared meanwhile.
    public init(pid: Int32) throws(TraceeError) {
        self.pid = pid
        let state = try ProcFS.state(pid)
        if state == "Z" || state == "X" { throw .zombie(pid: pid) }
        // Stopping itself or a process that waits for it would stop it for good.
        if let reason = Self.refusal(toStop: pid) { throw .unsupported(pid: pid, reason: reason) }
        do throws(TraceeError) {
            var seized = Set<Int32>()
            while true {
                let current = try ProcFS.threads(pid)
                let fresh = current.filter { !seized.contains($0) }
                if fresh.isEmpty { break }
                for tid in fresh {
                    do {
                        try Ptrace.seize(tid, pid: pid)
                    } catch .noSuchProcess where tid != pid {
                        continue  // a thread that exited meanwhile
                    }
                    seized.insert(tid)
                    threads.append(tid)
                    try Ptrace.interrupt(tid, pid: pid)
                    let status = try Ptrace.waitStop(tid, pid: pid, "stop")
                    // A signal that arrived first stops the thread on its way in: it is held
                    // here, with its siginfo, and delivered when the thread is let go.
                    if chpox_wptrace_event(status) != Int32(Ptrace.eventStop) {
                        heldSignals[tid] = (chpox_wstopsig(status), try Ptrace.signalInfo(tid, pid: pid))
                    }
                }
            }
            threads.sort { ($0 == pid ? 0 : 1, $0) < ($1 == pid ? 0 : 1, $1) }
            // Under seccomp a system call chpox makes inside it could be refused or kill it
            // (strict mode allows four; a filter may return KILL): its filters are suspended
            // for as long as it is traced. Each thread has its own (seccomp_filter_threads).
            if let thread = threads.first(where: { (try? ProcFS.status(pid, thread: $0)["Seccomp"]) ?? "0" != "0" }) {
                do throws(TraceeError) {
                    try suspendSeccomp()
                } catch {
                    throw .unsupported(
                        pid: pid,
                        reason: (thread == pid ? "it runs" : "its thread \(thread) runs")
                            + " under seccomp, which chpox must suspend while it works inside it "
                            + "(PTRACE_O_SUSPEND_SECCOMP: \(error)); that needs CAP_SYS_ADMIN, and chpox itself "
                            + "outside seccomp")
                }
            }
        } catch {
            thaw()
            throw error
        }
    }

    /// A process a remote fork of `parent` created (`adoptForkedChild`): attached by the
    /// kernel at its birth, stopped before its first instruction.
    private init(forkedChild pid: Int32, of parent: Int32) throws(TraceeError) {
        self.pid = pid
        do {
            _ = try Ptrace.waitStop(pid, pid: pid, "stop the new child of \(parent),")
        } catch {
            thawed = true
            throw error
        }
        threads = [pid]
    }

    deinit { thaw() }

    /// Why `pid` cannot be stopped by this process: it is this process, or one of its
    /// ancestors (nil when it is neither). Checked before anything traces it.
    public static func refusal(toStop pid: Int32) -> String? {
        if let stat = try? ProcFS.stat(pid), stat.isKernelThread {
            return "it is a kernel thread (\(stat.command)), which has no user memory to checkpoint"
        }
        if let thread = try? ProcFS.status(pid).tracer, thread != 0 {
            // TracerPid names the tracing thread: say its process.
            let tracer = (try? ProcFS.status(thread)["Tgid"]).flatMap { Int32($0) } ?? thread
            let name = (try? ProcFS.stat(tracer).command) ?? "?"
            return "it is already traced by pid \(tracer) (\(name)): a process has one tracer at a time; "
                + "detach that one (a debugger, strace) first"
        }
        var current = CurrentProcess.id
        if pid == current { return "it is this process itself: a process cannot checkpoint itself" }
        for _ in 0..<4096 {
            guard let parent = try? ProcFS.status(current).parent, parent > 0 else { return nil }
            if parent == pid {
                return "it is an ancestor of this process, which would stop it and wait for itself forever; "
                    + "run chpox from outside that process tree"
            }
            current = parent
        }
        return nil
    }

    /// Lets every thread run again.
    public func thaw() {
        guard !thawed else { return }
        thawed = true
        for tid in threads {
            if let held = heldSignals[tid] {
                Ptrace.setSignalInfo(tid, held.info)
                Ptrace.detach(tid, signal: held.signal)
            } else {
                Ptrace.detach(tid)
            }
        }
    }

    /// After the process was killed and thawed: collects its threads other than the leader
    /// that ended still traced (their detach came too late), so that its parent can reap it.
    public func reapKilledThreads() {
        for tid in threads where tid != pid { Ptrace.reapKilled(tid) }
    }

    /// Lets a one-thread process go straight into system call `number`, its registers set for
    /// it at a `syscall` instruction and every signal unblocked: how a restart ends a process
    /// it created to be a zombie (exit_group, or kill of itself), which its parent then reaps.
    public func release(into number: Int, _ arguments: [Int]) throws(TraceeError) {
        precondition(arguments.count <= 6 && threads == [pid], "one thread, at most six arguments")
        var regs = try Ptrace.registers(pid, pid: pid)
        regs.rip = try syscallInstruction()
        regs.rax = UInt64(bitPattern: Int64(number))
        regs.orig_rax = UInt64.max
        let slots = (arguments + [Int](repeating: 0, count: 6 - arguments.count)).map { UInt64(bitPattern: Int64($0)) }
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) = (
            slots[0], slots[1], slots[2], slots[3], slots[4], slots[5]
        )
        try Ptrace.setSignalMask(pid, pid: pid, 0)
        try Ptrace.setRegisters(pid, pid: pid, regs)
        thaw()
    }

    /// A thread a remote `clone` call created (PTRACE_EVENT_CLONE), to adopt.
    func noteClone(_ tid: Int32) { cloned.append(tid) }

    /// A process a remote fork created (PTRACE_EVENT_FORK), to adopt.
    func noteFork(_ pid: Int32) { forked.append(pid) }

    private var gadget: UInt64?

    /// Runs later system calls at `address`, which must hold a `syscall` instruction (a
    /// restorer's trampoline, once the vDSO is moved or gone).
    public func useSyscallInstruction(at address: UInt64) { gadget = address }

    /// The address of a `syscall` instruction (0f 05) in the process: its vDSO, else its code.
    func syscallInstruction() throws(TraceeError) -> UInt64 {
        if let gadget { return gadget }
        // The vDSO first (every process has one unless it unmapped it), then the process's
        // own code: two bytes 0f 05 anywhere executable run as `syscall`.
        let regions = try MemoryRegion.of(pid)
        let candidates =
            regions.filter { $0.path == "[vdso]" }
            + regions.filter { $0.executable && $0.path != "[vdso]" && $0.path != "[vsyscall]" }
        let memory = ProcessMemory(pid: pid)
        for region in candidates {
            var bytes = [UInt8](repeating: 0, count: Int(min(region.size, 1 << 20)))
            guard
                let got = try? bytes.withMutableRawBytes({ (raw) throws(TraceeError) in
                    try memory.read(from: region.start, into: raw)
                }), got > 1
            else { continue }
            for i in 0..<(got - 1) where bytes[i] == 0x0f && bytes[i + 1] == 0x05 {
                gadget = region.start + UInt64(i)
                return region.start + UInt64(i)
            }
        }
        throw .unsupported(
            pid: pid, reason: "no syscall instruction in its vDSO or its code: cannot run system calls in it")
    }
}

extension FrozenProcess {
    /// Has threads created by later remote `clone` calls attached and stopped before they run
    /// a single instruction (PTRACE_O_TRACECLONE on the thread making the calls).
    public func traceClones(from thread: Int32? = nil) throws(TraceeError) {
        try setOptions(thread ?? pid, CHPOX_PTRACE_O_TRACECLONE)
    }

    /// Suspends the seccomp filters and strict mode of every thread while it is traced
    /// (PTRACE_O_SUSPEND_SECCOMP; CAP_SYS_ADMIN): chpox's calls inside it are never filtered.
    /// Threads and processes its remote calls create inherit it; detaching ends it.
    public func suspendSeccomp() throws(TraceeError) {
        seccompSuspended = true
        for tid in threads { try setOptions(tid, options[tid] ?? 0) }
    }

    /// PTRACE_SETOPTIONS on `tid`, with PTRACE_O_SUSPEND_SECCOMP kept once set.
    private func setOptions(_ tid: Int32, _ flags: Int32) throws(TraceeError) {
        options[tid] = flags
        try Ptrace.setOptions(tid, pid: pid, flags | (seccompSuspended ? CHPOX_PTRACE_O_SUSPEND_SECCOMP : 0))
    }

    /// Has processes forked by later remote calls attached and stopped before they run a
    /// single instruction (PTRACE_O_TRACEFORK, with clones still traced).
    public func traceForks() throws(TraceeError) {
        try setOptions(pid, CHPOX_PTRACE_O_TRACECLONE | CHPOX_PTRACE_O_TRACEFORK)
    }

    /// The process the last remote fork created, once it has stopped: frozen on its own from
    /// now on (its `thaw` lets it go).
    public func adoptForkedChild() throws(TraceeError) -> FrozenProcess {
        guard !forked.isEmpty else { throw .unsupported(pid: pid, reason: "no process was forked") }
        let child = try FrozenProcess(forkedChild: forked.removeFirst(), of: pid)
        child.seccompSuspended = seccompSuspended  // the kernel copied the option to it
        return child
    }

    /// The process the last remote clone3 with CLONE_PARENT created (the kernel reports it as
    /// a clone: its exit signal is not asked for), frozen on its own like a forked one.
    public func adoptClonedProcess() throws(TraceeError) -> FrozenProcess {
        guard !cloned.isEmpty else { throw .unsupported(pid: pid, reason: "no process was cloned") }
        return try FrozenProcess(forkedChild: cloned.removeFirst(), of: pid)
    }

    /// The thread the last remote `clone` created, once it has stopped: it is frozen with the
    /// others from now on (and let go with them).
    public func adoptClonedThread() throws(TraceeError) -> Int32 {
        guard !cloned.isEmpty else { throw .unsupported(pid: pid, reason: "no thread was cloned") }
        let tid = cloned.removeFirst()
        _ = try Ptrace.waitStop(tid, pid: pid, "stop a new thread of")
        threads.append(tid)
        return tid
    }
}
