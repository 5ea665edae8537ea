import Testing
@testable import Tracee

/// chpox-inject's answer, one fact a line, read back into the state it describes.
@Suite struct InjectedStateTests {
    static let lines = [
        "brk 0x5555deadb000",
        "tid 100 0x7f00000009d0",
        "tid 101 0x7f0000001000",
        "altstack 101 0x7f0000100000 0x0 0x2000",
        "secbits 100 16",
        "sigaction 10 0x401000 0x14000004 0x401100 0x200",
        "sigaction 15 0x1 0x0 0x0 0x0",
        "itimer 0 1000000 250000",
        "ptimer 3 50000000 20000000 0",
        "timersread 123456789",
        "controls 0 1 1 16 10",
    ]

    static var expected: InjectedState {
        var state = InjectedState(
            programBreak: 0x5555_dead_b000,
            threads: [
                .init(tid: 100, clearAddress: 0x7f00_0000_09d0, securebits: 16),
                .init(tid: 101, clearAddress: 0x7f00_0000_1000, alternateStack: [0x7f00_0010_0000, 0, 0x2000]),
            ],
            signalActions: [
                .init(signal: 10, handler: 0x40_1000, flags: 0x1400_0004, restorer: 0x40_1100, mask: 0x200),
                .init(signal: 15, handler: 1, flags: 0, restorer: 0, mask: 0),
            ])
        state.intervalTimers = [.init(which: 0, intervalMicroseconds: 1_000_000, valueMicroseconds: 250_000)]
        state.controls = .init(
            dumpable: 0, transparentHugePagesDisabled: true, childSubreaper: true, membarrierRegistrations: 16)
        state.controls.parentDeathSignal = 10
        state.posixTimers = [.init(id: 3, intervalNanoseconds: 50_000_000, valueNanoseconds: 20_000_000, overrun: 0)]
        state.timersReadAt = 123_456_789
        return state
    }

    @Test func readsEveryKindOfLine() throws {
        #expect(try InjectedState(lines: Self.lines, pid: 7) == Self.expected)
    }

    @Test func linesAreWhatItReads() throws {
        #expect(Self.expected.lines == Self.lines)
    }

    @Test func decimalAndHexNumbersBothRead() throws {
        let state = try InjectedState(lines: ["brk 4096", "tid 5 16"], pid: 7)
        #expect(state.programBreak == 4096)
        #expect(state.threads.map(\.clearAddress) == [16])
    }

    @Test(arguments: [
        "brk",  // no value
        "brk 0xzz",  // not a number
        "tid 5",  // no clear address
        "sigaction 10 0x401000 0x0 0x0",  // four of five numbers
        "itimer 0 1",  // two of three numbers
        "altstack 101 0x1 0x2",  // three of four numbers
        "ptimer 3 1 2",  // three of four numbers
        "controls 1 0 0 0",  // four of five numbers
        "controls 1 0 0 0 x",  // not a number
        "bogus 1",  // unknown fact
        "",  // nothing
    ])
    func malformedLinesAreRefused(line: String) throws {
        let error = #expect(throws: TraceeError.self) { try InjectedState(lines: ["brk 0x1000", line], pid: 7) }
        #expect(error == .malformed(file: "chpox-inject's answer", reason: "unreadable line '\(line)'"))
    }

    /// A kernel before 6.3 cannot list membarrier registrations: -1, read as unknown.
    @Test func unknownMembarrierRegistrationsReadAsNil() throws {
        let state = try InjectedState(lines: ["brk 0x1000", "controls 1 0 0 -1 0"], pid: 7)
        #expect(state.controls.membarrierRegistrations == nil)
        #expect(state.lines.last == "controls 1 0 0 -1 0")
    }

    @Test func anAnswerWithoutTheProgramBreakIsRefused() throws {
        let error = #expect(throws: TraceeError.self) { try InjectedState(lines: ["tid 5 0x10"], pid: 7) }
        #expect(error == .malformed(file: "chpox-inject's answer", reason: "no program break (pid 7)"))
    }

    /// A line with a word that is not a number is malformed: refused, not read without it.
    @Test func aLineWithAnExtraWordIsRefused() throws {
        #expect(
            throws: TraceeError.malformed(file: "chpox-inject's answer", reason: "unreadable line 'brk 0x1000 junk'")
        ) {
            try InjectedState(lines: ["brk 0x1000 junk"], pid: 7)
        }
    }
}
