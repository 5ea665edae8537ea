#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall

/// System calls run inside a frozen process: the one way chpox makes another process act (the
/// injector reading handlers or creating a userfaultfd, the restorer building a process in its
/// stub). Arguments that live in memory (paths, structs, answers) go into a `ScratchArena` of
/// the process's own memory: a page the caller mapped, or a thread's dead stack below its red
/// zone (`onStack`), whose bytes are put back afterwards.
///
/// Each call is made by setting a thread's registers at a `syscall` instruction and running it
/// from the call's entry stop to its exit stop; registers and signal mask are put back after
/// (`FrozenProcess.execute`).
public final class RemoteCalls {
    public let process: FrozenProcess
    /// The thread calls run on unless told otherwise.
    public let thread: Int32
    public private(set) var scratch: ScratchArena
    /// Said before what a failed call was for ("restart: open /x in pid 9: ...").
    private let purpose: String?

    public var pid: Int32 { process.pid }

    public init(_ process: FrozenProcess, thread: Int32? = nil, scratch: ScratchArena = .none, purpose: String? = nil) {
        self.process = process
        self.thread = thread ?? process.pid
        self.scratch = scratch
        self.purpose = purpose
    }

    /// Calls on the stack of `thread` (default: the main one): `size` bytes below its red zone
    /// are lent to `body` and put back when it returns. The area is dead by the ABI.
    public static func onStack<T>(
        of process: FrozenProcess, thread: Int32? = nil, size: Int, purpose: String? = nil,
        _ body: (RemoteCalls) throws(TraceeError) -> T
    ) throws(TraceeError) -> T {
        let tid = thread ?? process.pid
        let pid = process.pid
        let regs = try Ptrace.registers(tid, pid: pid)
        let address = (regs.rsp &- 128 &- UInt64(size) &- 64) & ~63
        guard
            let region = try MemoryRegion.of(pid).first(where: {
                $0.start <= address && address + UInt64(size) <= $0.end
            }),
            region.writable
        else {
            throw .unsupported(
                pid: pid, reason: "thread \(tid) has no writable stack below 0x\(String(regs.rsp, radix: 16))")
        }
        let memory = ProcessMemory(pid: pid)
        var saved = [UInt8](repeating: 0, count: size)
        try saved.withMutableRawBytes { (raw) throws(TraceeError) in _ = try memory.read(from: address, into: raw) }
        defer { try? saved.withRawBytes { (raw) throws(TraceeError) in try memory.write(to: address, from: raw) } }
        return try body(
            RemoteCalls(process, thread: tid, scratch: ScratchArena(base: address, size: size), purpose: purpose))
    }

    // MARK: Calls

    /// The call's raw result: non-negative, or a negated errno.
    public func result(
        of number: SystemCall, _ arguments: any BinaryInteger..., on thread: Int32? = nil
    ) throws(TraceeError) -> Int {
        try process.execute(number.rawValue, arguments.map { Int(truncatingIfNeeded: $0) }, on: thread ?? self.thread)
    }

    /// Runs the call; a failure throws, naming `what` it was to do.
    @discardableResult
    public func call(
        _ number: SystemCall, _ arguments: any BinaryInteger..., on thread: Int32? = nil, to what: String
    ) throws(TraceeError) -> Int {
        let result = try process.execute(
            number.rawValue, arguments.map { Int(truncatingIfNeeded: $0) }, on: thread ?? self.thread)
        try check(result, what)
        return result
    }

    /// The largest errno a system call returns, negated (the kernel's MAX_ERRNO): a result in
    /// -4095 ... -1 is an error, anything else (a large address from mmap) is a value.
    static let maxErrno = 4095

    /// Throws for a failed result (a negated errno), naming `what` the call was to do.
    public func check(_ result: Int, _ what: String) throws(TraceeError) {
        guard result < 0, result >= -Self.maxErrno else { return }
        let operation = (purpose.map { "\($0): " } ?? "") + "\(what) in"
        throw .system(Errno(rawValue: Int32(-result)), pid: pid, operation: operation)
    }

    // MARK: Scratch

    /// Runs `body`; every scratch slot it takes is free again afterwards.
    @discardableResult
    public func withFrame<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        let mark = scratch.mark
        defer { scratch.release(to: mark) }
        return try body()
    }

    /// An uninitialised slot of `count` bytes (for an answer); its address.
    public func reserve(_ count: Int, alignment: Int = 16) throws(TraceeError) -> UInt64 {
        do { return try scratch.allocate(count, alignment: alignment) } catch {
            throw .unsupported(pid: pid, reason: "\(error)")
        }
    }

    /// `values` copied into a new slot; its address.
    public func bytes(_ values: [UInt8], alignment: Int = 16) throws(TraceeError) -> UInt64 {
        let address = try reserve(values.count, alignment: alignment)
        try values.withRawBytes { (raw) throws(TraceeError) in try ProcessMemory(pid: pid).write(to: address, from: raw)
        }
        return address
    }

    /// A NUL-terminated copy of `text`; its address.
    public func string(_ text: String) throws(TraceeError) -> UInt64 {
        try bytes(Array(text.utf8) + [0], alignment: 1)
    }

    /// 64-bit words, little-endian; their address.
    public func words(_ values: [UInt64]) throws(TraceeError) -> UInt64 {
        var writer = BinaryWriter(capacity: 8 * values.count)
        for value in values { writer.append(value) }
        return try bytes(writer.bytes, alignment: 8)
    }

    /// The bytes of `value` (a C struct, or an array of plain values); their address.
    public func value<T>(_ value: T) throws(TraceeError) -> UInt64 {
        try bytes(withUnsafeBytes(of: value) { Array($0) }, alignment: max(8, MemoryLayout<T>.alignment))
    }

    public func value<T>(_ values: [T]) throws(TraceeError) -> UInt64 {
        try bytes(values.withUnsafeBytes { Array($0) }, alignment: max(8, MemoryLayout<T>.alignment))
    }

    /// `count` words the process's calls left at `address`.
    public func words(at address: UInt64, count: Int) throws(TraceeError) -> [UInt64] {
        try ProcessMemory(pid: pid).words(at: address, count: count)
    }

    /// Writes `bytes` anywhere in the process's writable memory (not only scratch).
    public func write(_ bytes: [UInt8], at address: UInt64) throws(TraceeError) {
        try bytes.withRawBytes { (raw) throws(TraceeError) in try ProcessMemory(pid: pid).write(to: address, from: raw)
        }
    }
}

extension FrozenProcess {
    /// Runs system call `number` on thread `tid` and returns its result (a negated errno on
    /// failure). Only registers change, and they are put back. The call is made at a `syscall`
    /// instruction that already exists in the process (its vDSO), or at the one a restorer
    /// named with `useSyscallInstruction(at:)`: no code is ever patched. The thread runs from
    /// the system-call entry stop to the exit stop (PTRACE_SYSCALL): no signal is sent to it, so
    /// its handlers, mask and pending signals are as they were.
    func execute(_ number: Int, _ arguments: [Int], on tid: Int32) throws(TraceeError) -> Int {
        precondition(arguments.count <= 6, "a system call takes at most six arguments")
        let gadget = try syscallInstruction()
        let saved = try Ptrace.registers(tid, pid: pid)
        var regs = saved
        regs.rip = gadget
        regs.rax = UInt64(bitPattern: Int64(number))
        // orig_rax = -1: no syscall-restart logic applies to this call.
        regs.orig_rax = UInt64.max
        let slots = (arguments + [Int](repeating: 0, count: 6 - arguments.count)).map { UInt64(bitPattern: Int64($0)) }
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) = (
            slots[0], slots[1], slots[2], slots[3], slots[4], slots[5]
        )
        // Every signal blocked meanwhile: one dequeued during the call would stop the thread
        // before it and be lost; blocked, it stays pending for after.
        let mask = try Ptrace.signalMask(tid, pid: pid)
        try Ptrace.setSignalMask(tid, pid: pid, UInt64.max)
        defer { try? Ptrace.setSignalMask(tid, pid: pid, mask) }
        try Ptrace.setRegisters(tid, pid: pid, regs)
        defer { try? Ptrace.setRegisters(tid, pid: pid, saved) }
        // Two syscall stops: entry, then exit. A thread that stopped for a signal still has
        // PTRACE_INTERRUPT's stop pending: it is reported first, before the call; resume again.
        // A clone reports PTRACE_EVENT_CLONE inside the call (with clones traced), a fork
        // PTRACE_EVENT_FORK: resume on.
        var syscallStops = 0
        for _ in 0..<8 where syscallStops < 2 {
            try Ptrace.resumeToSyscallStop(tid, pid: pid)
            let status = try Ptrace.waitStop(tid, pid: pid, "run a system call in")
            let event = chpox_wptrace_event(status)
            if event == CHPOX_PTRACE_EVENT_CLONE {
                noteClone(try Ptrace.eventMessage(tid, pid: pid))
                continue
            }
            if event == CHPOX_PTRACE_EVENT_FORK {
                noteFork(try Ptrace.eventMessage(tid, pid: pid))
                continue
            }
            if event == Int32(Ptrace.eventStop) { continue }
            // A signal no mask blocks (SIGSTOP sent again to a stopped process stays pending)
            // stops the thread on its way in: held like one found at the stop, delivered when
            // the thread is let go, and the call goes on.
            // A second SIGSTOP (one sent to the process, one to the thread) is the first's
            // twin: the held one stops it again, and SIGCONT would have discarded both.
            if event == 0, chpox_wstopsig(status) != SIGTRAP {
                let signal = chpox_wstopsig(status)
                if heldSignals[tid] == nil {
                    heldSignals[tid] = (signal, try Ptrace.signalInfo(tid, pid: pid))
                    continue
                }
                if signal == SIGSTOP && heldSignals[tid]?.signal == SIGSTOP { continue }
            }
            guard event == 0, chpox_wstopsig(status) == SIGTRAP else {
                throw .unexpectedStop(pid: pid, status: status, operation: "run a system call in")
            }
            syscallStops += 1
        }
        let after = try Ptrace.registers(tid, pid: pid)
        guard after.rip == gadget + 2 else {
            throw .unsupported(pid: pid, reason: "the injected system call did not complete")
        }
        return Int(Int64(bitPattern: after.rax))
    }
}

extension RemoteCalls {
    /// userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY) inside the process; the
    /// descriptor's number there.
    public func userfaultfd() throws(TraceeError) -> Int32 {
        let flags = Int(O_CLOEXEC | O_NONBLOCK | Int32(UFFD_USER_MODE_ONLY))
        return Int32(try call(.userfaultfd, flags, to: "create a userfaultfd"))
    }

    /// close(fd) inside the process.
    public func close(_ fd: Int32) throws(TraceeError) {
        try call(.close, fd, to: "close descriptor \(fd)")
    }
}
