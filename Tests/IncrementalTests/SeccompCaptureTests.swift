import Testing

@testable import Incremental

/// What a checkpoint decides from the filters it read: which part every thread shares, what is
/// refused. The programs are the kind zdtm's seccomp tests install.
@Suite struct SeccompCaptureTests {
    typealias Seccomp = ProcessImage.Seccomp

    /// sock_filter as a word: code, jt, jf, k.
    static func instruction(_ code: UInt16, _ jt: UInt8 = 0, _ jf: UInt8 = 0, k: UInt32) -> UInt64 {
        UInt64(code) | UInt64(jt) << 16 | UInt64(jf) << 24 | UInt64(k) << 32
    }

    /// Fails system call `nr` with `action`, allows the others.
    static func filter(_ nr: UInt32, action: UInt32 = 0x50001, flags: UInt64 = 0) -> Seccomp.Filter {
        Seccomp.Filter(
            program: [
                instruction(0x20, k: 0), instruction(0x15, 0, 1, k: nr), instruction(6, k: action),
                instruction(6, k: 0x7fff_0000),
            ], flags: flags)
    }

    @Test func theOldestFiltersEveryThreadHoldsAlikeAreShared() {
        let (a, b, c) = (Self.filter(39), Self.filter(101), Self.filter(110))
        let (shared, refused) = SeccompCapture.sharing(
            [1: Seccomp(filters: [a, b]), 2: Seccomp(filters: [a, b, c]), 3: Seccomp(filters: [a])],
            threads: [1, 2, 3])
        #expect(shared == 1)
        // Threads 1 and 2 hold b alike, which thread 3 lacks: no TSYNC can give it to them alone.
        #expect(refused.count == 1)
        #expect(refused.first?.contains("threads 1 and 2") == true)
    }

    @Test func separateFiltersOrAThreadWithoutShareNothing() {
        let states: [Int32: Seccomp] = [
            2: Seccomp(filters: [Self.filter(101)]), 3: Seccomp(filters: [Self.filter(27)]),
        ]
        #expect(SeccompCapture.sharing(states, threads: [1, 2, 3]) == (0, []))
        #expect(SeccompCapture.sharing([1: Seccomp(strict: true)], threads: [1]).0 == 0)
        #expect(SeccompCapture.sharing([1: Seccomp(filters: [Self.filter(1), Self.filter(2)])], threads: [1]).0 == 2)
    }

    @Test func userNotificationUnknownFlagsAndComputedReturnsAreRefused() {
        #expect(SeccompCapture.refusal(Self.filter(39)) == nil)
        #expect(SeccompCapture.refusal(Self.filter(39, flags: 2)) == nil)
        #expect(SeccompCapture.refusal(Self.filter(39, action: 0x7fc0_0000))?.contains("USER_NOTIF") == true)
        #expect(SeccompCapture.refusal(Self.filter(39, flags: 4))?.contains("flags 0x4") == true)
        let computed = Seccomp.Filter(program: [Self.instruction(0x20, k: 0), Self.instruction(0x16, k: 0)])
        #expect(SeccompCapture.refusal(computed)?.contains("BPF_RET|BPF_A") == true)
        let large = Seccomp.Filter(program: Array(repeating: Self.instruction(6, k: 0x7fff_0000), count: 4096))
        #expect(SeccompCapture.refusal(large)?.contains("scratch") == true)
    }
}
