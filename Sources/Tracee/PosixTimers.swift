import CLinux

/// A POSIX timer (timer_create) as /proc/PID/timers lists it: who it notifies, how, on which
/// clock. Its setting (time left, interval) only the process can read: `PosixTimerSetting`.
///
/// The file's four lines per timer (kernel/time/posix-timers.c, show_timer):
///
///     ID: 3
///     signal: 10/0000000000001234      si_signo / sigev_value (%px: the full 64 bits)
///     notify: signal/tid.4242          signal|none|thread / pid|tid (SIGEV_THREAD_ID) . that id
///     ClockID: 1
public struct PosixTimer: Sendable, Equatable {
    public var id: Int32
    public var signal: Int32
    /// sigev_value, as the kernel hands it back in si_value.
    public var value: UInt64
    /// struct sigevent's sigev_notify: SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD 2, each
    /// with SIGEV_THREAD_ID (4) when the signal goes to one thread.
    public var notify: Int32
    /// The process (or, with SIGEV_THREAD_ID, the thread) the signal goes to.
    public var target: Int32
    /// The clock id: CLOCK_REALTIME 0, MONOTONIC 1, BOOTTIME 7...; negative for a CPU clock
    /// of another process or thread.
    public var clock: Int32

    public init(id: Int32, signal: Int32, value: UInt64, notify: Int32, target: Int32, clock: Int32) {
        (self.id, self.signal, self.value, self.notify, self.target, self.clock) = (
            id, signal, value, notify, target, clock
        )
    }

    /// Every timer of process `pid`.
    public static func of(_ pid: Int32) throws(TraceeError) -> [PosixTimer] {
        try parse(try ProcFS.read(pid, "timers"), file: "/proc/\(pid)/timers")
    }

    static func parse(_ text: String, file: String) throws(TraceeError) -> [PosixTimer] {
        var timers: [PosixTimer] = []
        var fields: [String: String] = [:]
        func finish() throws(TraceeError) {
            guard !fields.isEmpty else { return }
            defer { fields = [:] }
            let signal = fields["signal"]?.split(separator: "/")
            let notify = fields["notify"]?.split(separator: "/")
            let whom = notify?.count == 2 ? notify?[1].split(separator: ".") : nil
            let kinds = ["signal": Int32(0), "none": 1, "thread": 2]
            guard let id = fields["ID"].flatMap({ Int32($0) }), let signal, signal.count == 2,
                let number = Int32(signal[0]), let value = UInt64(signal[1], radix: 16), let notify,
                let kind = kinds[String(notify[0])], let whom, whom.count == 2, whom[0] == "pid" || whom[0] == "tid",
                let target = Int32(whom[1]), let clock = fields["ClockID"].flatMap({ Int32($0) })
            else {
                throw .malformed(file: file, reason: "unreadable timer \(fields)")
            }
            timers.append(
                PosixTimer(
                    id: id, signal: number, value: value, notify: kind | (whom[0] == "tid" ? CHPOX_SIGEV_THREAD_ID : 0),
                    target: target, clock: clock))
        }
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = String(line[..<colon])
            if key == "ID" { try finish() }
            fields[key] = String(line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" })
        }
        try finish()
        return timers.sorted { $0.id < $1.id }
    }
}

/// What timer_gettime and timer_getoverrun say of one POSIX timer, inside the process.
public struct PosixTimerSetting: Sendable, Equatable {
    public var id: Int32
    public var intervalNanoseconds: UInt64
    /// Time left until it expires; 0: disarmed.
    public var valueNanoseconds: UInt64
    /// timer_getoverrun: the overruns counted when its last signal was delivered.
    public var overrun: Int32

    public init(id: Int32, intervalNanoseconds: UInt64, valueNanoseconds: UInt64, overrun: Int32) {
        (self.id, self.intervalNanoseconds, self.valueNanoseconds, self.overrun) = (
            id, intervalNanoseconds, valueNanoseconds, overrun
        )
    }

    /// Reads it with `calls`, which lend 32 bytes of scratch (a struct itimerspec).
    init(reading id: Int32, _ calls: RemoteCalls) throws(TraceeError) {
        let (interval, value) = try calls.withFrame { () throws(TraceeError) in
            let slot = try calls.reserve(32)
            try calls.call(.timerGettime, id, slot, to: "read POSIX timer \(id)")
            let words = try calls.words(at: slot, count: 4)
            return (words[0] * 1_000_000_000 + words[1], words[2] * 1_000_000_000 + words[3])
        }
        let overrun = Int32(try calls.call(.timerGetoverrun, id, to: "read the overrun count of POSIX timer \(id)"))
        self.init(id: id, intervalNanoseconds: interval, valueNanoseconds: value, overrun: overrun)
    }

    /// The setting `elapsed` nanoseconds later (the time from its reading to the process's
    /// freeze): a periodic timer moves on by whole intervals; nil when a one-shot timer has
    /// expired meanwhile (its signal may have been taken after it was read: read again).
    public func later(by elapsed: UInt64) -> PosixTimerSetting? {
        guard valueNanoseconds != 0 else { return self }
        var later = self
        if valueNanoseconds > elapsed {
            later.valueNanoseconds -= elapsed
        } else if intervalNanoseconds == 0 {
            return nil
        } else {
            later.valueNanoseconds = intervalNanoseconds - (elapsed - valueNanoseconds) % intervalNanoseconds
        }
        return later
    }
}
