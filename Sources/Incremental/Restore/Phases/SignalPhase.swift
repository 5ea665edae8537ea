import Tracee

/// Signal actions, interval timers, and the signals that were pending: queued again with their
/// siginfo (sent by the process to itself, so the kernel takes every si_code). Every other
/// signal the stub catches or ignores (its runtime's crash handlers) is put back to its default
/// action, as the image had it: a handler of the stub's would point into memory that is gone.
public struct SignalPhase: RestartPhase {
    public var actions: [ProcessImage.SignalAction]
    public var timers: [ProcessImage.IntervalTimer]
    /// Signals queued for the whole process.
    public var sharedPending: [ProcessImage.SignalInfo]
    /// Signals queued for one thread alone, by saved thread id, in thread order.
    public var threadPending: [(tid: Int32, signals: [ProcessImage.SignalInfo])]

    public var name: String { "signals and timers" }
    public var steps: [String] {
        actions.map { "action of signal \($0.signal): handler 0x\(String($0.handler, radix: 16))" }
            + timers.map { "interval timer \($0.which): every \($0.intervalMicroseconds) µs" }
            + sharedPending.map { "queue signal \($0.signal) to the process" }
            + threadPending.flatMap { thread in
                thread.signals.map { "queue signal \($0.signal) to thread \(thread.tid)" }
            }
    }

    public init(image: ProcessImage) {
        actions = image.signalActions
        timers = image.intervalTimers
        sharedPending = image.sharedPendingSignals
        threadPending = image.threads.filter { !$0.pendingSignals.isEmpty }.map { ($0.tid, $0.pendingSignals) }
    }

    public func run(in session: RestartSession) throws {
        let calls = session.calls, pid = session.pid
        let status = try ProcFS.status(pid)
        let handled = Set(actions.map(\.signal))
        for signal in Int32(1)...64 where !handled.contains(signal) {
            let bit = UInt64(1) << UInt64(signal - 1)
            guard (status.caughtSignals | status.ignoredSignals) & bit != 0 else { continue }
            try calls.withFrame { () throws(TraceeError) in
                let at = try calls.words([0, 0, 0, 0])  // SIG_DFL, no flags, no restorer, empty mask
                try calls.call(.rtSigaction, signal, at, 0, 8, to: "put signal \(signal) back to its default action")
            }
        }
        for action in actions {
            try calls.withFrame { () throws(TraceeError) in
                let at = try calls.words([action.handler, action.flags, action.restorer, action.mask])
                try calls.call(.rtSigaction, action.signal, at, 0, 8, to: "set the action of signal \(action.signal)")
            }
        }
        for timer in timers {
            // A periodic timer whose signal is pending reads 0 left (it re-arms when the signal
            // is taken): it restarts with a full interval, and the pending signal is queued below.
            let value = timer.valueMicroseconds == 0 ? timer.intervalMicroseconds : timer.valueMicroseconds
            try calls.withFrame { () throws(TraceeError) in
                let at = try calls.words([
                    timer.intervalMicroseconds / 1_000_000, timer.intervalMicroseconds % 1_000_000,
                    value / 1_000_000, value % 1_000_000,
                ])
                try calls.call(.setitimer, timer.which, at, 0, to: "arm interval timer \(timer.which)")
            }
        }
        for info in sharedPending {
            try calls.withFrame { () throws(TraceeError) in
                try calls.call(
                    .rtSigqueueinfo, session.innerPid, info.signal, try calls.bytes(info.bytes),
                    to: "queue signal \(info.signal)")
            }
        }
        for (saved, signals) in threadPending {
            guard let tid = session.threadIDs[saved], let inner = session.innerThreadIDs[saved] else {
                throw TraceeError.unsupported(
                    pid: pid, reason: "thread \(saved) was not created: its signals have nowhere to go")
            }
            for info in signals {
                try calls.withFrame { () throws(TraceeError) in
                    // Made by the thread itself: the kernel lets no other thread queue a
                    // tgkill-like siginfo (si_code SI_TKILL or >= 0) to it.
                    try calls.call(
                        .rtTgsigqueueinfo, session.innerPid, inner, info.signal, try calls.bytes(info.bytes), on: tid,
                        to: "queue signal \(info.signal) to thread \(tid)")
                }
            }
        }
    }
}
