import Foundation
import Incremental
import Store
import Syscall
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// A chain belongs to one process lineage: the process that began it and the processes
    /// restarted from it. Two cpx runs never interleave their generations in one chain.
    @Suite struct ChainLineageTests {
        static func cpx(_ arguments: [String]) throws -> TestTools.Run { try TestTools.run("cpx", arguments) }

        /// The pid each generation of `chain` recorded, oldest first.
        static func pids(_ store: String, chain: String) throws -> [Int32] {
            let store = try Store(at: store)
            return try store.chain(chain).entries.map { entry in
                try ProcessImage(
                    decoding: try store.manifest(chain: chain, generation: entry.generation).metadata,
                    generation: entry.generation
                ).pid
            }
        }

        @Test(.timeLimit(.minutes(3))) func aSecondWriterIntoAChainBeingWrittenIsRefusedAtOnce() throws {
            let first = try ChurnTarget("lineage-busy-a")
            let second = try ChurnTarget("lineage-busy-b", seed: 2)
            let log = first.directory + "/cpx.log"
            let output = try FileDescriptor.open(log, [.writeOnly, .create, .truncate])
            let writer = try ChildProcess.spawn(
                TestTools.path("cpx"),
                ["--store", first.store, "--name", "shared", "--interval", "0.2", "--json", "\(first.pid)"],
                stdout: output)
            output.close()
            for _ in 0..<3000 where !((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("\n") {
                usleep(2000)
            }
            // Another process, and the same one: both refused at once, naming the writer.
            for target in [second.pid, first.pid] {
                let started = ClockTime.monotonic()
                let run = try Self.cpx([
                    "--store", first.store, "--name", "shared", "--interval", "0.2", "--count", "3", "\(target)",
                ])
                #expect(run.status == 1, "\(run.output)")
                #expect(
                    run.errors.contains("chain 'shared' is being written by another process (pid \(writer.pid))"),
                    "\(run.errors)")
                #expect(ClockTime.monotonic() - started < 5_000_000_000, "refused at once")
            }
            usleep(500_000)
            try writer.send(SIGTERM)
            #expect(try writer.wait() == .exited(0))
            let pids = try Self.pids(first.store, chain: "shared")
            #expect(pids.count >= 2)
            #expect(Set(pids) == [first.pid], "every generation is the first writer's: \(pids)")
            #expect(try Store(at: first.store).verify(deep: true).isClean)
            first.waitForHelpers()
            second.waitForHelpers()
            #expect(try first.quit())
            #expect(try second.quit())
        }

        @Test(.timeLimit(.minutes(3))) func aChainOfAnotherProcessIsRefusedUnlessAdopted() throws {
            let first = try ChurnTarget("lineage-other-a")
            let second = try ChurnTarget("lineage-other-b", seed: 2)
            let store = first.store
            var run = try Self.cpx(["--store", store, "--name", "job", "\(first.pid)"])
            #expect(run.status == 0, "\(run.errors)")

            run = try Self.cpx(["--store", store, "--name", "job", "\(second.pid)"])
            #expect(run.status == 1)
            #expect(
                run.errors.contains("chain 'job' belongs to another process: pid \(first.pid) (chpox-churn-wor)"),
                "\(run.errors)")
            #expect(run.errors.contains("whose generation 0 was checkpointed"), "\(run.errors)")
            #expect(run.errors.contains("--name NEW"), "\(run.errors)")
            #expect(run.errors.contains("--adopt"), "\(run.errors)")
            #expect(try Self.pids(store, chain: "job") == [first.pid], "nothing was written")

            // --adopt makes the second process the chain's; the first is then refused.
            run = try Self.cpx(["--store", store, "--name", "job", "--adopt", "\(second.pid)"])
            #expect(run.status == 0, "\(run.errors)")
            run = try Self.cpx(["--store", store, "--name", "job", "\(second.pid)"])
            #expect(run.status == 0, "\(run.errors)")
            run = try Self.cpx(["--store", store, "--name", "job", "\(first.pid)"])
            #expect(run.status == 1)
            #expect(run.errors.contains("belongs to another process: pid \(second.pid)"), "\(run.errors)")
            #expect(try Self.pids(store, chain: "job") == [first.pid, second.pid, second.pid])
            let lineage = try #require(try Store(at: store).lineage(of: "job"))
            #expect(lineage.members.map(\.process.pid) == [second.pid])
            #expect(lineage.members.map(\.how) == [.adopted])
            #expect(try Store(at: store).verify(deep: true).isClean)
            first.waitForHelpers()
            second.waitForHelpers()
            #expect(try first.quit())
            #expect(try second.quit())
        }

        struct RestartDocument: Decodable {
            var pid: Int32
            var notices: [String]
        }

        /// Restarts `chain`'s newest generation with `ld-chpox --wait --json`; returns it and its
        /// document.
        static func restart(_ store: String, chain: String) throws -> (WorkloadProcess, RestartDocument) {
            let restarted = try WorkloadProcess(
                executable: TestTools.path("ld-chpox"),
                arguments: ["--store", store, "--name", chain, "--wait", "--json"])
            let document = try JSONDecoder().decode(RestartDocument.self, from: Data(try restarted.line().utf8))
            return (restarted, document)
        }

        @Test(.timeLimit(.minutes(3))) func aRestartedProcessContinuesItsChainWithoutAdopt() throws {
            let directory = try RestartTests.scratch("lineage")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: TestTools.path("chpox-stack-workload"), arguments: [])
            #expect(try original.line() == "waiting 21 0")
            try RestartTests.checkpoint(original.pid, store: store, name: "counter")
            RestartTests.end(original)

            // ld-chpox records the restarted process (its pid may be the same; its start is not).
            let (restarted, document) = try Self.restart(store, chain: "counter")
            #expect(document.notices == [])
            #expect(try restarted.send("line") == "waiting 21 1")
            var run = try Self.cpx(["--store", store, "--name", "counter", "\(document.pid)"])
            #expect(run.status == 0, "\(run.errors)")
            #expect(try Self.pids(store, chain: "counter").count == 2)
            let lineage = try #require(try Store(at: store).lineage(of: "counter"))
            #expect(lineage.members.map(\.how) == [.began, .restarted])

            // Another process is still refused.
            let stranger = try WorkloadProcess(executable: TestTools.path("chpox-stack-workload"), arguments: [])
            #expect(try stranger.line() == "waiting 21 0")
            run = try Self.cpx(["--store", store, "--name", "counter", "\(stranger.pid)"])
            #expect(run.status == 1)
            #expect(run.errors.contains("belongs to another process: pid \(document.pid)"), "\(run.errors)")
            #expect(try stranger.quit("q") == .exited(0))
            #expect(try restarted.quit("q") == .exited(0))

            // A restart that cannot be recorded (the chain is held by a writer) says so, and
            // its process then needs --adopt.
            let claim = try ChainClaim(store: try Store(at: store), chain: "counter")
            let (held, heldDocument) = try Self.restart(store, chain: "counter")
            claim.release()
            #expect(
                heldDocument.notices.contains {
                    $0.contains("could not be recorded as continuing chain 'counter'") && $0.contains("needs --adopt")
                }, "\(heldDocument.notices)")
            #expect(try held.send("line") == "waiting 21 2")
            run = try Self.cpx(["--store", store, "--name", "counter", "\(heldDocument.pid)"])
            #expect(run.status == 1, "\(run.errors)")
            run = try Self.cpx(["--store", store, "--name", "counter", "--adopt", "\(heldDocument.pid)"])
            #expect(run.status == 0, "\(run.errors)")
            #expect(try held.quit("q") == .exited(0))
        }
    }
}
