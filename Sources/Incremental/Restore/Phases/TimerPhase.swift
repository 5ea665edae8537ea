#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall
import Tracee

/// The POSIX timers (timer_create), made again by the process itself under the ids it holds
/// (PR_TIMER_CREATE_RESTORE_IDS: timer_create takes the id from the timer_t it is given), with
/// their clock, signal, value and the thread they signal; then each armed one set to the time
/// it had left at the freeze and its interval. Late, just before the registers: the time left
/// runs from here. A signal of theirs that was pending is queued again by `SignalPhase`.
public struct TimerPhase: RestartPhase {
    public var timers: [ProcessImage.PosixTimer]

    public var name: String { "POSIX timers" }
    public var steps: [String] {
        timers.map { timer in
            let notify =
                timer.notify & ~CHPOX_SIGEV_THREAD_ID == SIGEV_NONE
                ? "no signal" : "signal \(timer.signal) to " + (timer.thread.map { "thread \($0)" } ?? "the process")
            let setting =
                timer.valueNanoseconds == 0
                ? "disarmed"
                : "\(timer.valueNanoseconds) ns left"
                    + (timer.intervalNanoseconds != 0 ? ", every \(timer.intervalNanoseconds) ns" : "")
            return "timer \(timer.id) on clock \(timer.clock): \(notify), \(setting)"
        }
    }

    public init(image: ProcessImage) { timers = image.posixTimers ?? [] }

    public func run(in session: RestartSession) throws {
        guard !timers.isEmpty else { return }
        let calls = session.calls, pid = session.pid
        let on = try calls.result(
            of: .prctl, CHPOX_PR_TIMER_CREATE_RESTORE_IDS, CHPOX_PR_TIMER_CREATE_RESTORE_IDS_ON, 0, 0, 0)
        if on == -Int(EINVAL) {
            throw TraceeError.unsupported(
                pid: pid,
                reason: "this kernel cannot make a POSIX timer under a given id (PR_TIMER_CREATE_RESTORE_IDS, "
                    + "Linux 6.15): its timers \(timers.map { String($0.id) }.joined(separator: ", ")) cannot be made")
        }
        try calls.check(on, "let timer_create take the timer ids")
        for timer in timers { try create(timer, session) }
        try calls.call(
            .prctl, CHPOX_PR_TIMER_CREATE_RESTORE_IDS, CHPOX_PR_TIMER_CREATE_RESTORE_IDS_OFF, 0, 0, 0,
            to: "let timer_create pick the timer ids again")
        for timer in timers where timer.valueNanoseconds != 0 {
            let billion: UInt64 = 1_000_000_000
            try calls.withFrame { () throws(TraceeError) in
                let setting = try calls.words([
                    timer.intervalNanoseconds / billion, timer.intervalNanoseconds % billion,
                    timer.valueNanoseconds / billion, timer.valueNanoseconds % billion,
                ])
                try calls.call(.timerSettime, timer.id, 0, setting, 0, to: "arm POSIX timer \(timer.id)")
            }
        }
    }

    private func create(_ timer: ProcessImage.PosixTimer, _ session: RestartSession) throws {
        let calls = session.calls
        var target: Int32 = 0
        if let saved = timer.thread {
            guard let tid = session.innerThreadIDs[saved] else {
                throw TraceeError.unsupported(
                    pid: session.pid, reason: "thread \(saved) was not created: POSIX timer \(timer.id) signals it")
            }
            target = tid
        }
        // struct sigevent (64 bytes): sigev_value, sigev_signo, sigev_notify, then the union
        // whose first int is the thread id of SIGEV_THREAD_ID.
        var event = BinaryWriter(capacity: Self.sigeventSize)
        event.append(timer.value)
        event.append(timer.signal)
        event.append(timer.notify)
        event.append(target)
        let bytes = event.bytes + [UInt8](repeating: 0, count: Self.sigeventSize - event.bytes.count)
        let made = try calls.withFrame { () throws(TraceeError) -> UInt64 in
            let id = try calls.words([UInt64(UInt32(bitPattern: timer.id))])
            try calls.call(
                .timerCreate, timer.clock, try calls.bytes(bytes, alignment: 8), id,
                to: "make POSIX timer \(timer.id)")
            return try calls.words(at: id, count: 1)[0] & 0xffff_ffff
        }
        guard made == UInt64(UInt32(bitPattern: timer.id)) else {
            throw TraceeError.unsupported(
                pid: session.pid, reason: "POSIX timer \(timer.id) was made as timer \(made): the kernel ignored its id"
            )
        }
    }

    static let sigeventSize = 64
}
