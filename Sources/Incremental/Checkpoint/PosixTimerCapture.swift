import CLinux
import Tracee

/// The process's POSIX timers (timer_create): /proc/PID/timers's list, each with the setting the
/// injector read inside the process (moved on to the freeze). `TimerPhase` creates them again
/// under their ids.
enum PosixTimerCapture {
    /// The clocks a restart arms a timer on again: CLOCK_REALTIME, MONOTONIC, BOOTTIME,
    /// REALTIME_ALARM, BOOTTIME_ALARM, TAI. (The CPU-time clocks count the process's own CPU
    /// time, which a restarted process starts again from zero.)
    static let clocks: Set<Int32> = [0, 1, 7, 8, 9, 11]

    static func capture(
        _ pid: Int32, settings: [PosixTimerSetting], threads: [Int32]
    ) throws(TraceeError) -> (timers: [ProcessImage.PosixTimer], unsupported: [String]) {
        var timers: [ProcessImage.PosixTimer] = []
        var unsupported: [String] = []
        for timer in try PosixTimer.of(pid) {
            let name = "POSIX timer \(timer.id) (timer_create)"
            guard clocks.contains(timer.clock) else {
                unsupported.append("\(name) counts CPU time (clock \(timer.clock)): not restored")
                continue
            }
            guard let setting = settings.first(where: { $0.id == timer.id }) else {
                unsupported.append("\(name) was made after its setting was read: not restored")
                continue
            }
            guard setting.overrun == 0 else {
                unsupported.append(
                    "\(name): its last signal counted \(setting.overrun) overruns (timer_getoverrun), "
                        + "a count a restart cannot set")
                continue
            }
            let toThread = timer.notify & CHPOX_SIGEV_THREAD_ID != 0
            guard toThread ? threads.contains(timer.target) : timer.target == pid else {
                unsupported.append(
                    "\(name) signals \(toThread ? "thread" : "process") \(timer.target), not one of process "
                        + "\(pid)'s threads: not restored")
                continue
            }
            timers.append(
                .init(
                    id: timer.id, clock: timer.clock, notify: timer.notify, signal: timer.signal, value: timer.value,
                    thread: toThread ? timer.target : nil, intervalNanoseconds: setting.intervalNanoseconds,
                    valueNanoseconds: setting.valueNanoseconds))
        }
        return (timers, unsupported)
    }
}
