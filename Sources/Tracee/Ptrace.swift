#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall

/// ptrace(2) requests, each wrapped once. Every call is made by the thread that seized the
/// tracee (ptrace ties a tracee to the tracer *thread*).
public enum Ptrace {
    /// The corresponding C constant is PTRACE_EVENT_STOP.
    static let eventStop: Int32 = 128
    /// The corresponding C constant is __WALL: wait for threads too.
    static let waitAll: Int32 = 0x4000_0000

    static func call(
        _ request: Int32, _ tid: Int32, _ address: UnsafeMutableRawPointer? = nil,
        _ data: UnsafeMutableRawPointer? = nil
    ) -> Result<Int, Errno> {
        errno = 0
        let result = chpox_ptrace(request, tid, address, data)
        if result == -1 && errno != 0 { return .failure(Errno.current) }
        return .success(result)
    }

    /// PTRACE_SEIZE: attach without stopping.
    static func seize(_ tid: Int32, pid: Int32) throws(TraceeError) {
        if case .failure(let errno) = call(Int32(PTRACE_SEIZE.rawValue), tid) {
            throw .from(errno, pid: pid, "attach to")
        }
    }

    /// PTRACE_INTERRUPT: stop a seized thread (it reports PTRACE_EVENT_STOP).
    static func interrupt(_ tid: Int32, pid: Int32) throws(TraceeError) {
        if case .failure(let errno) = call(Int32(PTRACE_INTERRUPT.rawValue), tid) {
            throw .from(errno, pid: pid, "stop")
        }
    }

    /// PTRACE_DETACH: let the thread run on; `signal` (0: none) is delivered as it resumes.
    static func detach(_ tid: Int32, signal: Int32 = 0) {
        _ = call(Int32(PTRACE_DETACH.rawValue), tid, nil, UnsafeMutableRawPointer(bitPattern: Int(signal)))
    }

    /// PTRACE_GETSIGINFO: the siginfo of the signal a thread is stopped for (128 bytes).
    static func signalInfo(_ tid: Int32, pid: Int32) throws(TraceeError) -> [UInt8] {
        var info = [UInt8](repeating: 0, count: 128)
        let result = info.withUnsafeMutableBytes { call(Int32(PTRACE_GETSIGINFO.rawValue), tid, nil, $0.baseAddress) }
        if case .failure(let errno) = result { throw .from(errno, pid: pid, "read the stop signal of") }
        return info
    }

    /// PTRACE_SETSIGINFO: the siginfo delivered with the signal given at the next resume.
    static func setSignalInfo(_ tid: Int32, _ info: [UInt8]) {
        var copy = info
        _ = copy.withUnsafeMutableBytes { call(Int32(PTRACE_SETSIGINFO.rawValue), tid, nil, $0.baseAddress) }
    }

    /// PTRACE_SETOPTIONS.
    static func setOptions(_ tid: Int32, pid: Int32, _ options: Int32) throws(TraceeError) {
        if case .failure(let errno) = call(
            CHPOX_PTRACE_SETOPTIONS, tid, nil, UnsafeMutableRawPointer(bitPattern: Int(options)))
        {
            throw .from(errno, pid: pid, "set ptrace options of")
        }
    }

    /// PTRACE_SECCOMP_GET_FILTER: the classic BPF program of seccomp filter `index` of a
    /// stopped thread, one 8-byte sock_filter a word; index 0 is its oldest filter (verified on
    /// Linux 6.18: the kernel counts from the root of the chain). nil past its newest.
    static func seccompFilter(_ tid: Int32, pid: Int32, index: Int) throws(TraceeError) -> [UInt64]? {
        let slot = UnsafeMutableRawPointer(bitPattern: index)
        let count: Int
        switch call(CHPOX_PTRACE_SECCOMP_GET_FILTER, tid, slot, nil) {
        case .success(let n): count = n
        case .failure(.noSuchFile): return nil
        case .failure(let errno): throw .from(errno, pid: pid, "read seccomp filter \(index) of thread \(tid) of")
        }
        var program = [UInt64](repeating: 0, count: count)
        let result = program.withUnsafeMutableBytes { call(CHPOX_PTRACE_SECCOMP_GET_FILTER, tid, slot, $0.baseAddress) }
        switch result {
        case .success(let n) where n == count: return program
        case .success(let n):
            throw .unsupported(
                pid: pid, reason: "seccomp filter \(index) of thread \(tid) changed length (\(count), then \(n))")
        case .failure(let errno): throw .from(errno, pid: pid, "read seccomp filter \(index) of thread \(tid) of")
        }
    }

    /// PTRACE_SECCOMP_GET_METADATA: the flags seccomp filter `index` of a stopped thread was
    /// installed with, as far as the kernel keeps them (SECCOMP_FILTER_FLAG_LOG only).
    static func seccompFilterFlags(_ tid: Int32, pid: Int32, index: Int) throws(TraceeError) -> UInt64 {
        var metadata = chpox_seccomp_metadata(filter_off: UInt64(index), flags: 0)
        let size = UnsafeMutableRawPointer(bitPattern: MemoryLayout<chpox_seccomp_metadata>.size)
        if case .failure(let errno) = call(CHPOX_PTRACE_SECCOMP_GET_METADATA, tid, size, &metadata) {
            throw .from(errno, pid: pid, "read the flags of seccomp filter \(index) of thread \(tid) of")
        }
        return metadata.flags
    }

    /// PTRACE_GETEVENTMSG: the new thread's id at a PTRACE_EVENT_CLONE stop.
    static func eventMessage(_ tid: Int32, pid: Int32) throws(TraceeError) -> Int32 {
        var message: UInt = 0
        if case .failure(let errno) = call(CHPOX_PTRACE_GETEVENTMSG, tid, nil, &message) {
            throw .from(errno, pid: pid, "read the event of")
        }
        return Int32(truncatingIfNeeded: message)
    }

    /// PTRACE_SETSIGMASK.
    static func setSignalMask(_ tid: Int32, pid: Int32, _ mask: UInt64) throws(TraceeError) {
        var copy = mask
        if case .failure(let errno) = call(CHPOX_PTRACE_SETSIGMASK, tid, UnsafeMutableRawPointer(bitPattern: 8), &copy)
        {
            throw .from(errno, pid: pid, "set the signal mask of")
        }
    }

    /// PTRACE_SYSCALL with no signal: run to the next system-call entry or exit stop. Unlike
    /// PTRACE_SINGLESTEP, whose trap the kernel forces on the thread as a SIGTRAP (resetting the
    /// thread's SIGTRAP handler to SIG_DFL when the signal is blocked or ignored), a syscall
    /// stop sends no signal at all.
    static func resumeToSyscallStop(_ tid: Int32, pid: Int32) throws(TraceeError) {
        if case .failure(let errno) = call(Int32(PTRACE_SYSCALL.rawValue), tid) {
            throw .from(errno, pid: pid, "resume")
        }
    }

    public static func registers(_ tid: Int32, pid: Int32) throws(TraceeError) -> user_regs_struct {
        var regs = user_regs_struct()
        if case .failure(let errno) = call(Int32(PTRACE_GETREGS.rawValue), tid, nil, &regs) {
            throw .from(errno, pid: pid, "read registers of")
        }
        return regs
    }

    public static func setRegisters(_ tid: Int32, pid: Int32, _ regs: user_regs_struct) throws(TraceeError) {
        var copy = regs
        if case .failure(let errno) = call(Int32(PTRACE_SETREGS.rawValue), tid, nil, &copy) {
            throw .from(errno, pid: pid, "write registers of")
        }
    }

    /// Collects thread `tid`, killed, where it is still traced: a traced thread other than the
    /// leader that ends waits for its tracer to reap it, and its process cannot be reaped
    /// before. Returns at once for one that is not (ECHILD: detached, or gone).
    static func reapKilled(_ tid: Int32) {
        var status: Int32 = 0
        while true {
            let result = waitpid(tid, &status, waitAll)
            if result == -1 && errno == EINTR { continue }
            if result == -1 || chpox_wifexited(status) != 0 || chpox_wifsignaled(status) != 0 { return }
        }
    }

    /// Waits for thread `tid` to stop; returns the raw status. A thread that exits instead
    /// is reported as `.noSuchProcess`.
    static func waitStop(_ tid: Int32, pid: Int32, _ operation: String) throws(TraceeError) -> Int32 {
        var status: Int32 = 0
        while true {
            let result = waitpid(tid, &status, waitAll)
            if result == -1 {
                if errno == EINTR { continue }
                throw .from(Errno.current, pid: pid, operation)
            }
            break
        }
        if chpox_wifexited(status) != 0 || chpox_wifsignaled(status) != 0 { throw .noSuchProcess(pid: tid) }
        guard chpox_wifstopped(status) != 0 else {
            throw .unexpectedStop(pid: pid, status: status, operation: operation)
        }
        return status
    }
}
