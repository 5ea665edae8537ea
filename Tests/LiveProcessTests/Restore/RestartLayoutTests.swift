import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// What the restart's scratch memory and descriptor table must get exactly right: the
    /// kernel's auxv of a program started from a long path (its path and the auxv went through
    /// the same scratch page), and pipes whose end the kernel hands out at the wanted number.
    @Suite struct RestartLayoutTests {
        static func auxv(_ pid: Int32) throws -> [UInt8] {
            try [UInt8](Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/auxv")))
        }

        @Test(.timeLimit(.minutes(2))) func aProgramStartedFromA600CharacterPathKeepsItsAuxiliaryVectorAndName() throws
        {
            let directory = try RestartTests.scratch("long-path")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            var folder = directory
            while folder.utf8.count < 600 - 22 { folder += "/" + String(repeating: "d", count: 100) }
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let program = folder + "/chpox-stack-workload"
            #expect(program.utf8.count >= 600, "\(program.utf8.count) characters")
            try FileManager.default.copyItem(atPath: TestTools.path("chpox-stack-workload"), toPath: program)
            let original = try WorkloadProcess(executable: program, arguments: [])
            #expect(try original.line() == "waiting 21 0")
            let saved = try Self.auxv(original.pid)
            let name = try ProcFS.threadName(original.pid, thread: original.pid)
            #expect(name == "chpox-stack-wor")
            try RestartTests.checkpoint(original.pid, store: directory + "/store", name: "long")
            RestartTests.end(original)

            let restarted = try RestartTests.restart(store: directory + "/store", name: "long", generation: 0)
            #expect(try restarted.send("line") == "waiting 21 1")
            let pid = try #require(RestartTests.child(of: restarted.pid))
            // The kernel's copy (what gdb and getauxval's readers see), word for word.
            #expect(try Self.auxv(pid) == saved)
            #expect(ProcFS.link(pid, "exe") == program)
            // Its name, not the stub's (`ps` shows it).
            #expect(try ProcFS.threadName(pid, thread: pid) == name)
            #expect(try restarted.quit("q") == .exited(0))
        }

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func pipeEndsAtAnyNumberComeBackWithoutTheirPeer() throws {
            let directory = try RestartTests.scratch("pipe-ends")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            // fd 3: a read end, fd 4: a write end (both close-on-exec), fd 6: a read end without
            // close-on-exec; every peer closed, so the original sees what the restarted one must.
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import fcntl, os, signal, sys
                    r, w = os.pipe()
                    os.close(w)
                    r2, w2 = os.pipe()
                    os.close(r2)
                    os.dup2(w2, 4, inheritable=False)
                    os.close(w2)
                    r3, w3 = os.pipe()
                    os.dup2(r3, 6, inheritable=True)
                    os.close(r3)
                    print("ready", r, flush=True)
                    sys.stdin.readline()
                    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
                    try:
                        os.write(4, b"x")
                        wrote = "wrote"
                    except BrokenPipeError:
                        wrote = "EPIPE"
                    cloexec = [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fd in (3, 4, 6)]
                    print(os.read(3, 10), os.read(6, 10), wrote, cloexec, flush=True)
                    """,
                ])
            #expect(try original.line() == "ready 3")
            try RestartTests.checkpoint(original.pid, store: directory + "/store", name: "pipes")
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: directory + "/store", name: "pipes", generation: 0)
            #expect(try restarted.send("go") == "b'' b'' EPIPE [True, True, False]")
            #expect(try restarted.child.wait() == .exited(0))
        }
    }
}
