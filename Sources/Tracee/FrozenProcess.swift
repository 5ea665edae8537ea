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
    /// Signals dequeued by a thread as it stopped, to be delivered when it resumes.
    private var heldSignals: [Int32: (signal: Int32, info: [UInt8])] = [:]

    /// Seizes and stops every thread, repeating until no new thread appeared meanwhile.
    public init(pid: Int32) throws(TraceeError) {
        self.pid = pid
        let state = try ProcFS.state(pid)
        if state == "Z" || state == "X" { throw .zombie(pid: pid) }
        do {
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
        } catch {
            thaw()
            throw error
        }
    }

    deinit { thaw() }

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

    /// Runs one system call inside the process, on thread `thread` (default: the main one),
    /// and returns its result (a negative errno on failure). Only registers change, and they
    /// are restored: the call is made at a `syscall` instruction that already exists in the
    /// process (in its vDSO), so no code is ever patched.
    public func syscall(on thread: Int32? = nil, _ number: Int, _ arguments: Int...) throws(TraceeError) -> Int {
        let tid = thread ?? pid
        let gadget = try syscallInstruction()
        let saved = try Ptrace.registers(tid, pid: pid)
        var regs = saved
        regs.rip = gadget
        regs.rax = UInt64(bitPattern: Int64(number))
        // orig_rax = -1: no syscall-restart logic applies to this call.
        regs.orig_rax = UInt64.max
        let slots = arguments + [Int](repeating: 0, count: max(0, 6 - arguments.count))
        regs.rdi = UInt64(bitPattern: Int64(slots[0]))
        regs.rsi = UInt64(bitPattern: Int64(slots[1]))
        regs.rdx = UInt64(bitPattern: Int64(slots[2]))
        regs.r10 = UInt64(bitPattern: Int64(slots[3]))
        regs.r8 = UInt64(bitPattern: Int64(slots[4]))
        regs.r9 = UInt64(bitPattern: Int64(slots[5]))
        // Every signal blocked meanwhile: one dequeued during the step would stop the thread
        // before the call and be lost; blocked, it stays pending for after.
        let mask = try Ptrace.signalMask(tid, pid: pid)
        try Ptrace.setSignalMask(tid, pid: pid, UInt64.max)
        defer { try? Ptrace.setSignalMask(tid, pid: pid, mask) }
        try Ptrace.setRegisters(tid, pid: pid, regs)
        defer { try? Ptrace.setRegisters(tid, pid: pid, saved) }
        var status: Int32 = 0
        // A thread that stopped for a signal still has PTRACE_INTERRUPT's trap pending: it is
        // reported first, before the instruction runs; step again.
        // A clone reports PTRACE_EVENT_CLONE inside the call (with clones traced): step on.
        for _ in 0..<8 {
            try Ptrace.singleStep(tid, pid: pid)
            status = try Ptrace.waitStop(tid, pid: pid, "run a system call in")
            let event = chpox_wptrace_event(status)
            if event == CHPOX_PTRACE_EVENT_CLONE {
                cloned.append(try Ptrace.eventMessage(tid, pid: pid))
                continue
            }
            if event != Int32(Ptrace.eventStop) { break }
        }
        guard chpox_wstopsig(status) == SIGTRAP else { throw .unexpectedStop(pid: pid, status: status, operation: "run a system call in") }
        let after = try Ptrace.registers(tid, pid: pid)
        guard after.rip == gadget + 2 else { throw .unsupported(pid: pid, reason: "the injected system call did not complete") }
        return Int(Int64(bitPattern: after.rax))
    }

    private var gadget: UInt64?

    /// Runs later system calls at `address`, which must hold a `syscall` instruction (a
    /// restorer's trampoline, once the vDSO is moved or gone).
    public func useSyscallInstruction(at address: UInt64) { gadget = address }

    /// The address of a `syscall` instruction (0f 05) in the process's vDSO.
    func syscallInstruction() throws(TraceeError) -> UInt64 {
        if let gadget { return gadget }
        guard let vdso = try MemoryRegion.of(pid).first(where: { $0.path == "[vdso]" }) else {
            throw .unsupported(pid: pid, reason: "no vDSO mapped: cannot run system calls in it")
        }
        var bytes = [UInt8](repeating: 0, count: Int(vdso.size))
        let got = try bytes.withMutableRawBytes { (raw) throws(TraceeError) in
            try ProcessMemory(pid: pid).read(from: vdso.start, into: raw)
        }
        for i in 0..<(got - 1) where bytes[i] == 0x0f && bytes[i + 1] == 0x05 {
            gadget = vdso.start + UInt64(i)
            return vdso.start + UInt64(i)
        }
        throw .unsupported(pid: pid, reason: "no syscall instruction in its vDSO")
    }
}

extension FrozenProcess {
    /// userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY) inside the process; returns
    /// the descriptor number there.
    public func remoteUserfaultfd() throws(TraceeError) -> Int32 {
        let flags = Int(O_CLOEXEC | O_NONBLOCK | Int32(UFFD_USER_MODE_ONLY))
        let result = try syscall(Int(chpox_syscall_number_userfaultfd()), flags)
        guard result >= 0 else { throw .system(Errno(rawValue: Int32(-result)), pid: pid, operation: "create a userfaultfd in") }
        return Int32(result)
    }

    /// close(fd) inside the process.
    public func remoteClose(_ fd: Int32) throws(TraceeError) {
        let result = try syscall(Int(chpox_syscall_number_close()), Int(fd))
        guard result >= 0 else { throw .system(Errno(rawValue: Int32(-result)), pid: pid, operation: "close descriptor \(fd) in") }
    }
}

extension FrozenProcess {
    /// Lends `size` bytes of thread `tid`'s own stack, below its red zone, to `body` (for a
    /// system call that writes its answer into the process's memory) and puts back what was
    /// there. The area is dead by the ABI: a signal handler could overwrite it at any time.
    public func withScratch<T>(on tid: Int32, size: Int, _ body: (UInt64) throws(TraceeError) -> T) throws(TraceeError) -> T {
        let regs = try Ptrace.registers(tid, pid: pid)
        let address = (regs.rsp &- 128 &- UInt64(size) &- 64) & ~63
        guard let region = try MemoryRegion.of(pid).first(where: { $0.start <= address && address + UInt64(size) <= $0.end }),
              region.writable
        else { throw .unsupported(pid: pid, reason: "thread \(tid) has no writable stack below 0x\(String(regs.rsp, radix: 16))") }
        let memory = ProcessMemory(pid: pid)
        var saved = [UInt8](repeating: 0, count: size)
        try saved.withMutableRawBytes { (raw) throws(TraceeError) in _ = try memory.read(from: address, into: raw) }
        defer { try? saved.withRawBytes { (raw) throws(TraceeError) in try memory.write(to: address, from: raw) } }
        return try body(address)
    }
}

extension FrozenProcess {
    /// Has threads created by later remote `clone` calls attached and stopped before they run
    /// a single instruction (PTRACE_O_TRACECLONE on the thread making the calls).
    public func traceClones(from thread: Int32? = nil) throws(TraceeError) {
        try Ptrace.setOptions(thread ?? pid, pid: pid, CHPOX_PTRACE_O_TRACECLONE)
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
