import Testing
@testable import Tracee

/// /proc/PID/timers read into timers, and a timer's setting moved on to the freeze.
@Suite struct PosixTimerTests {
    @Test func readsEachTimerOfTheFile() throws {
        let text = """
            ID: 7
            signal: 10/0000000000001234
            notify: signal/tid.4243
            ClockID: 0
            ID: 2
            signal: 0/0000000000000000
            notify: none/pid.4242
            ClockID: 7
            ID: 1
            signal: 32/00007f0000001000
            notify: thread/pid.4242
            ClockID: -6

            """
        let timers = try PosixTimer.parse(text, file: "timers")
        #expect(timers.map(\.id) == [1, 2, 7])
        #expect(timers[0] == PosixTimer(id: 1, signal: 32, value: 0x7f00_0000_1000, notify: 2, target: 4242, clock: -6))
        #expect(timers[1] == PosixTimer(id: 2, signal: 0, value: 0, notify: 1, target: 4242, clock: 7))
        #expect(timers[2] == PosixTimer(id: 7, signal: 10, value: 0x1234, notify: 4, target: 4243, clock: 0))
    }

    @Test(arguments: [
        "ID: 1\nsignal: 10\nnotify: signal/pid.1\nClockID: 0",  // no value
        "ID: 1\nsignal: 10/0\nnotify: later/pid.1\nClockID: 0",  // unknown notification
        "ID: 1\nsignal: 10/0\nnotify: signal/pid.1",  // no clock
    ])
    func refusesAnUnreadableTimer(text: String) {
        #expect(throws: TraceeError.self) { try PosixTimer.parse(text, file: "timers") }
    }

    @Test func aSettingMovesOnByTheTimeElapsed() {
        let oneShot = PosixTimerSetting(id: 1, intervalNanoseconds: 0, valueNanoseconds: 500, overrun: 0)
        #expect(oneShot.later(by: 200)?.valueNanoseconds == 300)
        #expect(oneShot.later(by: 500) == nil)  // expired meanwhile: read again
        let periodic = PosixTimerSetting(id: 2, intervalNanoseconds: 100, valueNanoseconds: 30, overrun: 0)
        #expect(periodic.later(by: 10)?.valueNanoseconds == 20)
        #expect(periodic.later(by: 30)?.valueNanoseconds == 100)
        #expect(periodic.later(by: 245)?.valueNanoseconds == 85)  // expired at 30, 130, 230; next at 330
        let disarmed = PosixTimerSetting(id: 3, intervalNanoseconds: 0, valueNanoseconds: 0, overrun: 0)
        #expect(disarmed.later(by: 1_000) == disarmed)
    }
}
