import CLinux
import Syscall
import Tracee

/// Every thread as it was: the main thread's tid address, rseq registration and alternate
/// signal stack; the others cloned from it (with their saved ids where free), caught before
/// their first instruction, given the same and their saved registers. (The main thread's
/// registers are set last, by `RegistersPhase`.)
public struct ThreadPhase: RestartPhase {
    public var threads: [ProcessImage.ThreadImage]

    public var name: String { "threads" }
    public var steps: [String] {
        threads.enumerated().map { k, thread in
            (k == 0 ? "main thread \(thread.tid)" : "clone thread \(thread.tid)")
                + (thread.name.map { " \"\($0)\"" } ?? "")
                + (thread.clearAddress.map { ", tid address 0x\(String($0, radix: 16))" } ?? "")
                + (thread.rseq != nil ? ", rseq" : "")
                + (thread.signalStack != nil ? ", alternate signal stack" : "")
                + (thread.robustList.map { $0.first == 0 ? "" : ", robust futex list" } ?? "")
        }
    }

    public init(image: ProcessImage) { threads = image.threads }

    public func run(in session: RestartSession) throws {
        guard let main = threads.first else { return }
        let calls = session.calls, pid = session.pid
        session.threadIDs[main.tid] = pid
        session.innerThreadIDs[main.tid] = session.innerPid
        if let clear = main.clearAddress {
            _ = try calls.result(of: .setTidAddress, clear)
            // glibc keeps the thread's id where the kernel clears it (pthread->tid): its id
            // in its own PID namespace.
            if session.innerPid != main.tid { try calls.write(Self.tidBytes(session.innerPid), at: clear) }
        }
        try registerRseq(main, on: pid, calls)
        try robustList(main, on: pid, calls)
        try alternateStack(main, on: pid, calls)
        try rename(main, on: pid, calls)
        guard threads.count > 1 else { return }
        try session.process.traceClones()
        for thread in threads.dropFirst() { try clone(thread, session) }
    }

    private func clone(_ thread: ProcessImage.ThreadImage, _ session: RestartSession) throws {
        let calls = session.calls
        let result = try calls.withFrame { () throws(TraceeError) -> Int in
            var arguments = chpox_clone_args()
            arguments.flags = chpox_clone_thread_flags()
            arguments.child_tid = thread.clearAddress ?? 0
            arguments.tls = thread.registers.fsBase
            arguments.set_tid = try calls.bytes(Self.tidBytes(thread.tid), alignment: 8)
            arguments.set_tid_size = 1
            let size = MemoryLayout<chpox_clone_args>.size
            let result = try calls.result(of: .clone3, try calls.value(arguments), size)
            guard result < 0 else { return result }
            // That id is taken (or set_tid is refused): any id will do.
            arguments.set_tid = 0
            arguments.set_tid_size = 0
            return try calls.result(of: .clone3, try calls.value(arguments), size)
        }
        try calls.check(result, "create thread \(thread.tid)")
        let tid = try session.process.adoptClonedThread()
        // clone3 returns the id in the caller's namespace; ptrace gives it in ld-chpox's.
        let inner = Int32(result)
        session.threadIDs[thread.tid] = tid
        session.innerThreadIDs[thread.tid] = inner
        if inner != thread.tid, let clear = thread.clearAddress { try calls.write(Self.tidBytes(inner), at: clear) }
        try registerRseq(thread, on: tid, calls)
        try robustList(thread, on: tid, calls)
        try alternateStack(thread, on: tid, calls)
        try rename(thread, on: tid, calls)
        try session.process.restore(thread.state, into: tid)
    }

    private func registerRseq(_ thread: ProcessImage.ThreadImage, on tid: Int32, _ calls: RemoteCalls) throws {
        guard let rseq = thread.rseq else { return }
        try calls.call(.rseq, rseq.address, rseq.size, 0, rseq.signature, on: tid, to: "register rseq of thread \(tid)")
    }

    /// The thread's alternate signal stack as it was, or none: a stub's own (glibc may set
    /// one) would point into memory that is gone, and an SA_ONSTACK handler would crash.
    private func alternateStack(_ thread: ProcessImage.ThreadImage, on tid: Int32, _ calls: RemoteCalls) throws {
        let stack = thread.signalStack ?? .disabled
        try calls.withFrame { () throws(TraceeError) in
            try calls.call(
                .sigaltstack, try calls.words(stack.words), 0, on: tid,
                to: "set the alternate signal stack of thread \(tid)")
        }
    }

    /// The thread's name as it was (the stub's own otherwise: `ps` would show chpox-restore-s).
    private func rename(_ thread: ProcessImage.ThreadImage, on tid: Int32, _ calls: RemoteCalls) throws {
        guard let name = thread.name else { return }
        try calls.withFrame { () throws(TraceeError) in
            try calls.call(
                .prctl, CHPOX_PR_SET_NAME, try calls.string(name), on: tid, to: "name thread \(tid) '\(name)'")
        }
    }

    /// A tid as the kernel reads it (a pid_t, little-endian): the clear-tid word, clone3's set_tid.
    static func tidBytes(_ tid: Int32) -> [UInt8] {
        var writer = BinaryWriter(capacity: 4)
        writer.append(tid)
        return writer.bytes
    }

    /// The thread's robust futex list head, registered again (set_robust_list acts on the
    /// calling thread, so it runs on `tid`).
    private func robustList(_ thread: ProcessImage.ThreadImage, on tid: Int32, _ calls: RemoteCalls) throws {
        guard let list = thread.robustList, list.count == 2 else { return }
        try calls.call(.setRobustList, list[0], list[1], on: tid, to: "register the robust futex list of thread \(tid)")
    }
}
