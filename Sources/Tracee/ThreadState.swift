#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall

/// What the kernel holds for one stopped thread, read with ptrace: everything a restart needs
/// to put the thread back where it was, except what only the thread itself can ask for (its
/// tid address), which the injector reads.
public struct ThreadState: Sendable, Equatable {
    public var tid: Int32
    /// user_regs_struct, field by field (r15 first, gs last: 27 words), fs_base and gs_base
    /// included.
    public var registers: [UInt64]
    /// The XSAVE area (x87, SSE, AVX...) as PTRACE_GETREGSET NT_X86_XSTATE returns it.
    public var xstate: [UInt8]
    /// The blocked-signal mask.
    public var signalMask: UInt64
    /// rseq registration (nil when the thread has none).
    public var rseq: RseqRegistration?
    /// Signals queued for this thread alone, as 128-byte siginfo records.
    public var pendingSignals: [[UInt8]]

    public struct RseqRegistration: Sendable, Equatable {
        public var address: UInt64
        public var size: UInt32
        public var signature: UInt32
        public var flags: UInt32

        public init(address: UInt64, size: UInt32, signature: UInt32, flags: UInt32) {
            (self.address, self.size, self.signature, self.flags) = (address, size, signature, flags)
        }
    }

    /// A saved state, to put back with `FrozenProcess.restore`.
    public init(
        tid: Int32, registers: [UInt64], xstate: [UInt8], signalMask: UInt64, rseq: RseqRegistration?,
        pendingSignals: [[UInt8]]
    ) {
        (self.tid, self.registers, self.xstate, self.signalMask, self.rseq, self.pendingSignals) = (
            tid, registers, xstate, signalMask, rseq, pendingSignals
        )
    }

    /// Reads the state of a thread stopped under `process`.
    public init(tid: Int32, of process: FrozenProcess) throws(TraceeError) {
        let pid = process.pid
        self.tid = tid
        registers = Self.words(try Ptrace.registers(tid, pid: pid))
        xstate = try Ptrace.registerSet(tid, pid: pid, type: CHPOX_NT_X86_XSTATE, capacity: 16384)
        signalMask = try Ptrace.signalMask(tid, pid: pid)
        rseq = try Ptrace.rseqConfiguration(tid, pid: pid)
        pendingSignals = try Ptrace.pendingSignals(tid, pid: pid, shared: false)
    }

    /// The named registers of `registers`.
    public var instructionPointer: UInt64 { registers[16] }
    public var stackPointer: UInt64 { registers[19] }
    public var fsBase: UInt64 { registers[21] }
    public var gsBase: UInt64 { registers[22] }

    static func words(_ regs: user_regs_struct) -> [UInt64] {
        withUnsafeBytes(of: regs) { Array($0.bindMemory(to: UInt64.self)) }
    }
}

extension Ptrace {
    /// PTRACE_GETREGSET: one register set (an NT_* note type) of a thread.
    static func registerSet(_ tid: Int32, pid: Int32, type: Int32, capacity: Int) throws(TraceeError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: capacity)
        let got = try bytes.withMutableRawBytes { (raw) throws(TraceeError) -> Int in
            var vector = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
            if case .failure(let errno) = call(
                Int32(PTRACE_GETREGSET.rawValue), tid, UnsafeMutableRawPointer(bitPattern: Int(type)), &vector)
            {
                throw .from(errno, pid: pid, "read register set 0x\(String(type, radix: 16)) of")
            }
            return vector.iov_len
        }
        return Array(bytes[0..<got])
    }

    /// PTRACE_SETREGSET: writes one register set of a stopped thread.
    static func setRegisterSet(_ tid: Int32, pid: Int32, type: Int32, _ bytes: [UInt8]) throws(TraceeError) {
        var copy = bytes
        try copy.withMutableRawBytes { (raw) throws(TraceeError) in
            var vector = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
            if case .failure(let errno) = call(
                CHPOX_PTRACE_SETREGSET, tid, UnsafeMutableRawPointer(bitPattern: Int(type)), &vector)
            {
                throw .from(errno, pid: pid, "write register set 0x\(String(type, radix: 16)) of")
            }
        }
    }

    /// PTRACE_GETSIGMASK.
    static func signalMask(_ tid: Int32, pid: Int32) throws(TraceeError) -> UInt64 {
        var mask: UInt64 = 0
        if case .failure(let errno) = call(CHPOX_PTRACE_GETSIGMASK, tid, UnsafeMutableRawPointer(bitPattern: 8), &mask)
        {
            throw .from(errno, pid: pid, "read the signal mask of")
        }
        return mask
    }

    /// PTRACE_GET_RSEQ_CONFIGURATION (Linux 5.13+); nil when the thread registered none.
    static func rseqConfiguration(_ tid: Int32, pid: Int32) throws(TraceeError) -> ThreadState.RseqRegistration? {
        var configuration = chpox_rseq_configuration()
        let size = MemoryLayout<chpox_rseq_configuration>.size
        switch call(CHPOX_PTRACE_GET_RSEQ_CONFIGURATION, tid, UnsafeMutableRawPointer(bitPattern: size), &configuration)
        {
        case .failure(let errno):
            throw .from(errno, pid: pid, "read the rseq registration of")
        case .success:
            guard configuration.rseq_abi_pointer != 0 else { return nil }
            return .init(
                address: configuration.rseq_abi_pointer, size: configuration.rseq_abi_size,
                signature: configuration.signature, flags: configuration.flags)
        }
    }

    /// PTRACE_PEEKSIGINFO: the queued signals of a thread (or of its process, `shared`), in
    /// queue order, without dequeuing them.
    static func pendingSignals(_ tid: Int32, pid: Int32, shared: Bool) throws(TraceeError) -> [[UInt8]] {
        var result: [[UInt8]] = []
        let batch = 32, recordSize = 128
        var buffer = [UInt8](repeating: 0, count: batch * recordSize)
        while true {
            var arguments = chpox_peeksiginfo_args(
                off: UInt64(result.count), flags: shared ? UInt32(CHPOX_PTRACE_PEEKSIGINFO_SHARED) : 0,
                nr: Int32(batch))
            let outcome = buffer.withUnsafeMutableBytes { raw in
                call(CHPOX_PTRACE_PEEKSIGINFO, tid, &arguments, raw.baseAddress)
            }
            let count: Int
            switch outcome {
            case .failure(let errno): throw .from(errno, pid: pid, "read the pending signals of")
            case .success(let n): count = n
            }
            for k in 0..<count { result.append(Array(buffer[(k * recordSize)..<((k + 1) * recordSize)])) }
            if count < batch { return result }
        }
    }
}

extension FrozenProcess {
    /// Puts a saved state back into thread `tid`: registers, XSAVE area, signal mask. A thread
    /// saved inside an interrupted system call restarts it as the kernel would have after a
    /// signal with SA_RESTART: `-ERESTART*` rewinds to the `syscall` instruction, and
    /// `-ERESTART_RESTARTBLOCK` (nanosleep's) returns EINTR instead.
    public func restore(_ state: ThreadState, into tid: Int32) throws(TraceeError) {
        var regs = user_regs_struct()
        withUnsafeMutableBytes(of: &regs) { raw in
            for (k, word) in state.registers.prefix(raw.count / 8).enumerated() {
                raw.storeBytes(of: word, toByteOffset: k * 8, as: UInt64.self)
            }
        }
        let result = Int64(bitPattern: regs.rax)
        if Int64(bitPattern: regs.orig_rax) >= 0 {
            switch result {
            case -512, -513, -514:  // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
                regs.rax = regs.orig_rax
                regs.rip -= 2
            case -516:  // ERESTART_RESTARTBLOCK
                regs.rax = UInt64(bitPattern: -4)  // EINTR
            default: break
            }
        }
        try Ptrace.setRegisters(tid, pid: pid, regs)
        if !state.xstate.isEmpty { try Ptrace.setRegisterSet(tid, pid: pid, type: CHPOX_NT_X86_XSTATE, state.xstate) }
        try Ptrace.setSignalMask(tid, pid: pid, state.signalMask)
    }

    /// Signals queued for the whole process, as 128-byte siginfo records, without dequeuing.
    public func sharedPendingSignals() throws(TraceeError) -> [[UInt8]] {
        try Ptrace.pendingSignals(pid, pid: pid, shared: true)
    }
}
