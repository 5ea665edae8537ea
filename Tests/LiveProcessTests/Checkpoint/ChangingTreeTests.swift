import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// A tree's processes come and go while `cpx` takes a generation (a shell's commands,
    /// make's compilers): one that ends between the look at the tree and the freeze is
    /// followed out, and the generation taken without it.
    @Suite struct ChangingTreeTests {
        @Test(
            .enabled(if: RealProgramTests.installed("bash", "sleep"), "bash or sleep is not installed"),
            .timeLimit(.minutes(2)))
        func aChildThatEndsDuringAGenerationIsLeftOut() throws {
            let directory = try RestartTests.scratch("changing-tree")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            // A new sleep every 0.3 s: about as long as a generation of the tree takes.
            let runner = try WorkloadProcess(
                executable: TestTools.path("chpox-subreaper"),
                arguments: [directory + "/log", "/bin/bash", "-c", "while :; do sleep 0.3; done"])
            let pid = try #require(Int32(try runner.line()))
            defer {
                kill(-pid, SIGKILL)
                _ = try? runner.child.wait()
            }
            usleep(100_000)
            // Without following them out, 4 runs in 5 failed: "no process with pid N".
            let run = try TestTools.run(
                "cpx",
                ["--store", directory + "/store", "--name", "loop", "--interval", "0.1", "--count", "12", "\(pid)"])
            #expect(run.status == 0, "\(run.errors)")
            #expect(run.output.contains("done: 12 generations taken"), "\(run.output)")
        }
    }
}
