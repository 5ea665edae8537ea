import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// With --no-tree a process with children is refused, naming them; under
    /// --skip-unsupported it is recorded alone, and every restart and `ld-chpox --check` says
    /// what the process runs without. (By default the tree is taken: ProcessTreeTests.)
    @Suite struct ChildProcessTests {
        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func aProcessWithAChildIsRefusedOrItsChildReportedMissing() throws {
            let directory = try RestartTests.scratch("children")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import subprocess, sys
                    quiet = subprocess.DEVNULL
                    child = subprocess.Popen(["/bin/sleep", "60"], stdin=quiet, stdout=quiet, stderr=quiet)
                    print("child", child.pid, flush=True)
                    sys.stdin.readline()
                    print("done", flush=True)
                    """,
                ])
            let announced = try original.line()
            let child = try #require(Int32(announced.split(separator: " ").last ?? ""))
            defer { kill(child, SIGKILL) }
            let refused = try TestTools.run(
                "cpx", ["--store", store, "--name", "tree", "--no-tree", "\(original.pid)"])
            #expect(refused.status == 1)
            #expect(refused.errors.contains("child process \(child) (sleep): --no-tree checkpoints a process alone"))
            #expect(refused.errors.contains("--skip-unsupported"))

            let skipped = try TestTools.run(
                "cpx", ["--store", store, "--name", "tree", "--no-tree", "--skip-unsupported", "\(original.pid)"])
            #expect(skipped.status == 0, "\(skipped.errors)")
            let missing = "not restored (skipped at the checkpoint): child process \(child) (sleep)"
            let check = try TestTools.run("ld-chpox", ["--store", store, "--check"])
            #expect(check.output.contains(missing), "\(check.output)")
            let checkJSON = try TestTools.run("ld-chpox", ["--store", store, "--check", "--json"])
            let document = try JSONDecoder().decode(CheckDocument.self, from: Data(checkJSON.output.utf8))
            #expect(document.notRestored?.count == 1)
            #expect(document.notRestored?.first?.hasPrefix("child process \(child) (sleep)") == true)

            RestartTests.end(original)
            let restarted = try WorkloadProcess(
                executable: TestTools.path("ld-chpox"), arguments: ["--store", store, "--wait", "--json"])
            let outcome = try JSONDecoder().decode(RestartDocument.self, from: Data(try restarted.line().utf8))
            #expect(outcome.notices.contains { $0.hasPrefix(missing) }, "\(outcome.notices)")
            #expect(try restarted.send("go") == "done")
            #expect(try restarted.child.wait() == .exited(0))
        }
    }
}
