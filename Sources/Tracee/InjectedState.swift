#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall

/// What only the process itself can say, read by running system calls inside it: the signal
/// handlers (rt_sigaction), each thread's tid address (PR_GET_TID_ADDRESS) and the exact
/// program break (brk(0)). `chpox-inject state` reads it, so that a checkpointer killed at any
/// instant never leaves a thread in the middle of an injected call.
public struct InjectedState: Sendable, Equatable {
    public var programBreak: UInt64
    public var threads: [ThreadAddress]
    /// Every signal whose action is not the default one.
    public var signalActions: [SignalAction]
    /// The three interval timers (ITIMER_REAL, VIRTUAL, PROF) that are armed: getitimer.
    public var intervalTimers: [IntervalTimer] = []
    /// prctl flags and membarrier registrations.
    public var controls = ProcessControls()
    /// Every POSIX timer's setting (timer_gettime, timer_getoverrun), by id.
    public var posixTimers: [PosixTimerSetting] = []
    /// CLOCK_MONOTONIC just before `posixTimers` were read: they are moved on by the time that
    /// passed until the process was frozen (`PosixTimerSetting.later(by:)`).
    public var timersReadAt: Int64 = 0

    /// struct itimerval: which timer, its interval and the time left, in microseconds.
    public struct IntervalTimer: Sendable, Equatable {
        public var which: Int32
        public var intervalMicroseconds: UInt64
        public var valueMicroseconds: UInt64
    }

    public struct ThreadAddress: Sendable, Equatable {
        public var tid: Int32
        /// Where the kernel writes 0 and wakes a futex when the thread exits (set_tid_address).
        public var clearAddress: UInt64
        /// The alternate signal stack (sigaltstack): address, flags, size; nil when disabled.
        public var alternateStack: [UInt64]? = nil
        /// Its secure bits (PR_GET_SECUREBITS), SECBIT_KEEP_CAPS among them (PR_SET_KEEPCAPS: its
        /// permitted capabilities survive a change of its user ids from root); nil when unread.
        public var securebits: UInt32? = nil
    }

    /// The corresponding C constant is PR_GET_SECUREBITS (linux/prctl.h).
    public static let getSecurebits: Int32 = 27

    /// A struct k_sigaction as the kernel keeps it.
    public struct SignalAction: Sendable, Equatable {
        public var signal: Int32
        /// 0 SIG_DFL, 1 SIG_IGN, otherwise the handler's address.
        public var handler: UInt64
        public var flags: UInt64
        public var restorer: UInt64
        public var mask: UInt64
    }

    public init(programBreak: UInt64, threads: [ThreadAddress], signalActions: [SignalAction]) {
        self.programBreak = programBreak
        self.threads = threads
        self.signalActions = signalActions
    }

    /// Reads it from a frozen process with remote system calls; every register and every byte
    /// of scratch stack used is put back.
    public init(reading process: FrozenProcess) throws(TraceeError) {
        programBreak = UInt64(bitPattern: Int64(try RemoteCalls(process).result(of: .brk, 0)))
        var threads: [ThreadAddress] = []
        for tid in process.threads {
            let thread = try RemoteCalls.onStack(of: process, thread: tid, size: 64) {
                (calls) throws(TraceeError) -> ThreadAddress in
                let slot = try calls.reserve(8)
                try calls.call(.prctl, CHPOX_PR_GET_TID_ADDRESS, slot, to: "read the tid address of thread \(tid)")
                let address = try calls.words(at: slot, count: 1)[0]
                let bits = try calls.call(
                    .prctl, Self.getSecurebits, 0, 0, 0, 0, to: "read the secure bits of thread \(tid)")
                let stack = try calls.reserve(24)
                guard try calls.result(of: .sigaltstack, 0, stack) == 0 else {
                    return ThreadAddress(tid: tid, clearAddress: address, securebits: UInt32(truncatingIfNeeded: bits))
                }
                let words = try calls.words(at: stack, count: 3)
                let disabled = words[1] & 2 != 0  // SS_DISABLE
                return ThreadAddress(
                    tid: tid, clearAddress: address, alternateStack: disabled ? nil : words,
                    securebits: UInt32(truncatingIfNeeded: bits))
            }
            threads.append(thread)
        }
        self.threads = threads
        (signalActions, intervalTimers) = try RemoteCalls.onStack(of: process, size: 64) {
            (calls) throws(TraceeError) in
            let slot = try calls.reserve(32)
            var actions: [SignalAction] = []
            for signal in Int32(1)...64 where signal != SIGKILL && signal != SIGSTOP {
                // 32 and 33 belong to glibc and may refuse.
                guard try calls.result(of: .rtSigaction, signal, 0, slot, 8) == 0 else { continue }
                let words = try calls.words(at: slot, count: 4)
                if words[0] != 0 || words[1] != 0 || words[3] != 0 {
                    actions.append(
                        SignalAction(
                            signal: signal, handler: words[0], flags: words[1], restorer: words[2], mask: words[3]))
                }
            }
            var timers: [IntervalTimer] = []
            for which in Int32(0)...2 {
                guard try calls.result(of: .getitimer, which, slot) == 0 else { continue }
                let words = try calls.words(at: slot, count: 4)
                let interval = words[0] * 1_000_000 + words[1], value = words[2] * 1_000_000 + words[3]
                if interval != 0 || value != 0 {
                    timers.append(IntervalTimer(which: which, intervalMicroseconds: interval, valueMicroseconds: value))
                }
            }
            return (actions, timers)
        }
        controls = try RemoteCalls.onStack(of: process, size: 64) { (calls) throws(TraceeError) in
            try ProcessControls(reading: calls)
        }
        let timerIDs = try PosixTimer.of(process.pid).map(\.id)
        timersReadAt = ClockTime.monotonic()
        posixTimers = try RemoteCalls.onStack(of: process, size: 64) { (calls) throws(TraceeError) in
            var settings: [PosixTimerSetting] = []
            for id in timerIDs { settings.append(try PosixTimerSetting(reading: id, calls)) }
            return settings
        }
    }

    // MARK: Wire format between chpox-inject and the checkpointer: one fact per line.

    public var lines: [String] {
        ["brk \(hex(programBreak))"] + threads.map { "tid \($0.tid) \(hex($0.clearAddress))" }
            + threads.compactMap { thread in
                thread.alternateStack.map { "altstack \(thread.tid) \(hex($0[0])) \(hex($0[1])) \(hex($0[2]))" }
            }
            + threads.compactMap { thread in thread.securebits.map { "secbits \(thread.tid) \($0)" } }
            + signalActions.map {
                "sigaction \($0.signal) \(hex($0.handler)) \(hex($0.flags)) \(hex($0.restorer)) \(hex($0.mask))"
            }
            + intervalTimers.map { "itimer \($0.which) \($0.intervalMicroseconds) \($0.valueMicroseconds)" }
            + posixTimers.map {
                "ptimer \($0.id) \($0.intervalNanoseconds) \($0.valueNanoseconds) \($0.overrun)"
            }
            + ["timersread \(timersReadAt)", controls.line]
    }

    public init(lines: [String], pid: Int32) throws(TraceeError) {
        var brk: UInt64?
        var threads: [ThreadAddress] = []
        var actions: [SignalAction] = []
        var timers: [IntervalTimer] = []
        var controls = ProcessControls()
        var posixTimers: [PosixTimerSetting] = []
        var timersReadAt: Int64 = 0
        for line in lines {
            let fields = line.split(separator: " ").map(String.init)
            if fields.first == "controls" {
                let numbers = fields.dropFirst().compactMap { Int64($0) }
                guard numbers.count == fields.count - 1, let read = ProcessControls(numbers: numbers) else {
                    throw .malformed(file: "chpox-inject's answer", reason: "unreadable line '\(line)'")
                }
                controls = read
                continue
            }
            let numbers = fields.dropFirst().compactMap {
                UInt64($0.hasPrefix("0x") ? String($0.dropFirst(2)) : $0, radix: $0.hasPrefix("0x") ? 16 : 10)
            }
            guard numbers.count == fields.count - 1 else {
                throw .malformed(file: "chpox-inject's answer", reason: "unreadable line '\(line)'")
            }
            switch (fields.first, numbers.count) {
            case ("brk", 1): brk = numbers[0]
            case ("tid", 2):
                threads.append(ThreadAddress(tid: Int32(truncatingIfNeeded: numbers[0]), clearAddress: numbers[1]))
            case ("sigaction", 5):
                actions.append(
                    SignalAction(
                        signal: Int32(truncatingIfNeeded: numbers[0]), handler: numbers[1], flags: numbers[2],
                        restorer: numbers[3], mask: numbers[4]))
            case ("altstack", 4):
                if let k = threads.firstIndex(where: { $0.tid == Int32(truncatingIfNeeded: numbers[0]) }) {
                    threads[k].alternateStack = Array(numbers[1...3])
                }
            case ("secbits", 2):
                if let k = threads.firstIndex(where: { $0.tid == Int32(truncatingIfNeeded: numbers[0]) }) {
                    threads[k].securebits = UInt32(truncatingIfNeeded: numbers[1])
                }
            case ("itimer", 3):
                timers.append(
                    IntervalTimer(
                        which: Int32(truncatingIfNeeded: numbers[0]), intervalMicroseconds: numbers[1],
                        valueMicroseconds: numbers[2]))
            case ("ptimer", 4):
                posixTimers.append(
                    PosixTimerSetting(
                        id: Int32(truncatingIfNeeded: numbers[0]), intervalNanoseconds: numbers[1],
                        valueNanoseconds: numbers[2], overrun: Int32(truncatingIfNeeded: numbers[3])))
            case ("timersread", 1): timersReadAt = Int64(bitPattern: numbers[0])
            default: throw .malformed(file: "chpox-inject's answer", reason: "unreadable line '\(line)'")
            }
        }
        guard let brk else { throw .malformed(file: "chpox-inject's answer", reason: "no program break (pid \(pid))") }
        self.init(programBreak: brk, threads: threads, signalActions: actions)
        intervalTimers = timers
        self.controls = controls
        self.posixTimers = posixTimers
        self.timersReadAt = timersReadAt
    }

    private func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
}
