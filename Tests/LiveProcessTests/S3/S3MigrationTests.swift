import Foundation
import Incremental
import Syscall
import TestTools
import Testing
import Tracee
import TrackerTestSupport

extension LiveProcess {
    /// Migration through the store on S3 (issue 17): `cpx --kill` on one host, `ld-chpox` on
    /// another whose cache is empty, and the chain goes on there. A host is a cache of its own
    /// (`S3Hosts`); the restarts are real processes proving their own state.
    @Suite(.timeLimit(.minutes(4))) struct S3MigrationTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// The churn workload checkpointed on host A, killed there with its last generation, and
        /// restarted on host B (an empty cache): its memory, registers, signals and the file it
        /// appends to (its offset, size and identity: the hosts share the file system here) prove
        /// themselves; `cpx` on B extends the chain without `--adopt` (the restart's lineage was
        /// published), and A sees B's generation. (A file missing on B: the next test.)
        @Test func aJobMovesToAnotherHostAndItsChainGoesOnThere() throws {
            let hosts = try S3Hosts("migrate")
            let files = hosts.root + "/files"
            try FileManager.default.createDirectory(atPath: files, withIntermediateDirectories: true)
            let original = try WorkloadProcess(
                executable: TestTools.path("chpox-churn-workload"),
                arguments: [
                    "--megabytes", "2", "--threads", "2", "--file", files + "/records", "--seed", "81",
                    "--pace", "100000",
                ])
            #expect(try original.line().hasPrefix("ready"))
            let cpx = ["--store", hosts.url, "--name", "job", "--json"]
            var run = try hosts.run("cpx", cpx + ["\(original.pid)"], host: "a")
            #expect(run.status == 0, "\(run.errors)")
            #expect(try original.send("check").hasPrefix("ok"))
            run = try hosts.run("cpx", cpx + ["--kill", "\(original.pid)"], host: "a")
            #expect(run.status == 0, "\(run.errors)")
            #expect(try original.child.wait() == .signalled(SIGKILL))
            let lineage = try hosts.etag("chains/job.lineage")
            #expect(lineage != nil, "the chain's lineage is on S3")
            // Root restarts from a bucket only when told that only root can write it.
            let untrusted = try hosts.run("ld-chpox", ["--store", hosts.url, "--name", "job"], host: "c")
            #expect(untrusted.status == 1, "\(untrusted.output)")
            #expect(
                untrusted.errors.contains("pass --trust-store if only root can write the bucket"), "\(untrusted.errors)"
            )

            #expect(!FileManager.default.fileExists(atPath: hosts.cacheRoot("b")))
            let restarted = try hosts.restart(chain: "job", host: "b")
            #expect(try restarted.send("restarted") == "noted")
            let check = try restarted.send("check")
            #expect(check.hasPrefix("ok"), "after the move: \(check)")
            let pid = try #require(RestartTests.child(of: restarted.pid))
            #expect(try hosts.etag("chains/job.lineage") != lineage, "ld-chpox on B published the restart")

            // B goes on with the chain: the restarted process is of its lineage, no --adopt.
            run = try hosts.run("cpx", cpx + ["\(pid)"], host: "b")
            #expect(run.status == 0, "\(run.errors)")
            let events = try JSONDocument.lines(CheckpointEvent.self, run.output)
            #expect(events.first?.generation?.generation == 2, "\(run.output)")
            #expect(try restarted.send("check").hasPrefix("ok"))
            // A's cache (which wrote generations 0 and 1) sees B's generation 2.
            #expect(try hosts.generations(host: "a") == ["job": [0, 1, 2]])
            #expect(try restarted.quit("quit") == .exited(0))
            let verified = try hosts.verify()
            #expect(verified.status == 0, "\(verified.output) \(verified.errors)")
        }

        /// A process whose input file is missing on the host it moves to: ld-chpox there
        /// refuses, naming the file and what to do, and starts nothing; with the file put back,
        /// the next ld-chpox restarts it whole (its memory's digest and the file read through
        /// its own descriptor).
        @Test(.enabled(if: python, "python3 is not installed"))
        func aFileMissingOnTheNewHostIsNamed() throws {
            let hosts = try S3Hosts("missing")
            let inputs = hosts.root + "/inputs"
            try FileManager.default.createDirectory(atPath: inputs, withIntermediateDirectories: true)
            let input = inputs + "/parameters.txt"
            try Data("learning rate 0.001\n".utf8).write(to: URL(fileURLWithPath: input))
            let script = """
                import hashlib, random, sys
                memory = bytearray(random.Random(5).randbytes(6 << 20))
                digest = hashlib.sha256(memory).hexdigest()
                parameters = open(sys.argv[1], "rb")
                print("ready", flush=True)
                for line in sys.stdin:
                    parameters.seek(0)
                    print(hashlib.sha256(memory).hexdigest() == digest, parameters.read().decode().strip(), flush=True)
                """
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script, input])
            #expect(try original.line() == "ready")
            let run = try hosts.run(
                "cpx", ["--store", hosts.url, "--name", "py", "--kill", "\(original.pid)"], host: "a")
            #expect(run.status == 0, "\(run.errors)")
            _ = try original.child.wait()

            try FileManager.default.removeItem(atPath: inputs)
            let before = RestartTests.processes()
            let refused = try hosts.run("ld-chpox", ["--store", hosts.url, "--name", "py", "--trust-store"], host: "b")
            #expect(refused.status == 1, "\(refused.output) \(refused.errors)")
            #expect(refused.errors.contains("\(input), open as descriptor"), "\(refused.errors)")
            #expect(
                refused.errors.contains("no longer exists (on this machine); put it back to restart"),
                "\(refused.errors)")
            #expect(refused.errors.split(separator: "\n").count == 1, "one message: \(refused.errors)")
            #expect(
                RestartTests.started(since: before, running: ["chpox-restore-stub", "python3"]).isEmpty,
                "nothing was started")

            try FileManager.default.createDirectory(atPath: inputs, withIntermediateDirectories: true)
            try Data("learning rate 0.001\n".utf8).write(to: URL(fileURLWithPath: input))
            let restarted = try hosts.restart(chain: "py", host: "b")
            #expect(try restarted.send("go") == "True learning rate 0.001")
            let pid = try #require(RestartTests.child(of: restarted.pid))
            kill(pid, SIGKILL)
            _ = try? restarted.child.wait()
        }
    }
}
