import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// A checkpoint leaves its target as it was: every signal handler (SIGTRAP's too: a
    /// single-step's trap forced on a thread that blocks it would reset it to SIG_DFL), the
    /// ignored signals, the mask and what is pending.
    @Suite struct TargetUnchangedTests {
        /// The signal state /proc/PID/status shows for the process and its main thread.
        static func signalState(_ pid: Int32) throws -> [String] {
            let status = try ProcFS.status(pid)
            return ["SigCgt", "SigIgn", "SigBlk", "SigPnd", "ShdPnd"].map { "\($0) \(status[$0] ?? "-")" }
        }

        /// A Python process with a handler for every signal it can catch but SIGTRAP's
        /// `trap` ("handle" or "ignore"), SIGUSR2 blocked and pending.
        static func target(trap: String) throws -> WorkloadProcess {
            try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import os, signal, sys
                    got = []
                    def note(number, frame): got.append(number)
                    for number in range(1, signal.SIGRTMAX + 1):
                        if number in (signal.SIGKILL, signal.SIGSTOP, 32, 33, signal.SIGTRAP): continue
                        signal.signal(number, signal.SIG_IGN if number % 7 == 0 else note)
                    signal.signal(signal.SIGTRAP, note if sys.argv[1] == "handle" else signal.SIG_IGN)
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
                    os.kill(os.getpid(), signal.SIGUSR2)
                    print("ready", flush=True)
                    for line in sys.stdin:
                        signal.raise_signal(signal.SIGTRAP)
                        print("alive", got, flush=True)
                    """,
                    trap,
                ])
        }

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)),
            arguments: ["handle", "ignore"])
        func everyHandlerMaskAndPendingSignalIsAsItWas(trap: String) throws {
            let directory = try RestartTests.scratch("unchanged-\(trap)")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let target = try Self.target(trap: trap)
            defer { RestartTests.end(target) }
            #expect(try target.line() == "ready")
            let before = try Self.signalState(target.pid)
            // A full generation and a delta, each with the injector's calls and the final stop.
            for _ in 0..<2 {
                let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "t", "\(target.pid)"])
                #expect(run.status == 0, "\(run.errors)")
                #expect(try Self.signalState(target.pid) == before)
            }
            let expected = trap == "handle" ? "alive [\(SIGTRAP)]" : "alive []"
            #expect(try target.send("raise") == expected)
        }
    }
}
