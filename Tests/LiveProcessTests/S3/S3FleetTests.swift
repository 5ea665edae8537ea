import Foundation
import Synchronization
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// The proof of issue 17 with several hosts on one bucket: writers on hosts of their own
    /// checkpoint live processes into one store while gc runs from another host again and again
    /// with a safety margin of zero (so it really deletes); then every generation gc kept, of
    /// every chain, restarts from a fresh cache and proves its memory, and a deep verify finds
    /// nothing wrong.
    @Suite(.timeLimit(.minutes(4))) struct S3FleetTests {
        /// What each writer takes: `cpx --interval 1 --count generations`.
        static let generations = 5
        static let writers = 3

        /// A command's run, or why it could not run (a status of -1).
        static func outcome(_ run: Result<TestTools.Run, any Error>) -> TestTools.Run {
            (try? run.get()) ?? TestTools.Run(status: -1, output: "", errors: "\(run)")
        }

        @Test func writersOnThreeHostsWhileGcRunsLoseNothing() throws {
            let hosts = try S3Hosts("fleet")
            // Small processes (the machine has two cores): 2 MiB churned by one thread, slowly.
            var workloads: [WorkloadProcess] = []
            for writer in 0..<Self.writers {
                let workload = try WorkloadProcess(
                    executable: TestTools.path("chpox-churn-workload"),
                    arguments: [
                        "--megabytes", "2", "--threads", "1", "--file", hosts.root + "/records-\(writer)",
                        "--seed", "\(90 + writer)", "--pace", "200000",
                    ])
                #expect(try workload.line().hasPrefix("ready"))
                workloads.append(workload)
            }

            let written = Mutex<[Int: TestTools.Run]>([:])
            let gcRuns = Mutex<[TestTools.Run]>([])
            let writing = DispatchGroup()
            for (writer, workload) in workloads.enumerated() {
                let pid = workload.pid
                DispatchQueue.global().async(group: writing) {
                    let run = Result {
                        try hosts.run(
                            "cpx",
                            [
                                "--store", hosts.url, "--name", "job\(writer)", "--interval", "1", "--count",
                                "\(Self.generations)", "--json", "\(pid)",
                            ], host: "writer\(writer)")
                    }
                    written.withLock { $0[writer] = Self.outcome(run) }
                }
            }
            let collecting = DispatchGroup()
            DispatchQueue.global().async(group: collecting) {
                while writing.wait(timeout: .now()) == .timedOut {
                    let run = Result {
                        try hosts.run(
                            "cpx", ["gc", "--store", hosts.url, "--keep-last", "2"], host: "gc",
                            ["CHPOX_S3_SAFETY_MARGIN": "0"])
                    }
                    gcRuns.withLock { $0.append(Self.outcome(run)) }
                    Thread.sleep(forTimeInterval: 0.5)
                }
            }
            writing.wait()
            collecting.wait()

            for (writer, run) in written.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
                #expect(run.status == 0, "writer \(writer): \(run.errors)")
                let taken = try JSONDocument.lines(CheckpointEvent.self, run.output).compactMap {
                    $0.generation?.generation
                }
                #expect(taken == Array(0..<Self.generations), "writer \(writer) committed \(taken): \(run.errors)")
            }
            let runs = gcRuns.withLock { $0 }
            #expect(runs.count >= 2, "gc ran \(runs.count) times beside the writers")
            for run in runs { #expect(run.status == 0, "gc: \(run.errors)") }
            #expect(runs.contains { $0.output.contains("dropped") }, "gc dropped nothing beside the writers")

            // Once more, the writers gone: the two newest of each chain are what is kept.
            let last = try hosts.run(
                "cpx", ["gc", "--store", hosts.url, "--keep-last", "2"], host: "gc", ["CHPOX_S3_SAFETY_MARGIN": "0"])
            #expect(last.status == 0, "\(last.errors)")
            let kept = try hosts.generations(host: "inspector")
            let newest = [Self.generations - 2, Self.generations - 1]
            #expect(
                kept == Dictionary(uniqueKeysWithValues: (0..<Self.writers).map { ("job\($0)", newest) }), "\(kept)")
            let verified = try hosts.verify()
            #expect(verified.status == 0, "\(verified.output) \(verified.errors)")
            #expect(verified.output.contains("OK: no damage found"), "\(verified.output)")

            // Every kept generation restarts, each from a cache of its own, and proves itself.
            for workload in workloads { RestartTests.end(workload) }
            for (chain, numbers) in kept.sorted(by: { $0.key < $1.key }) {
                for generation in numbers.reversed() {
                    let restarted = try hosts.restart(
                        chain: chain, generation: generation, host: "restart-\(chain)-\(generation)")
                    #expect(try restarted.send("restarted") == "noted", "\(chain) \(generation)")
                    let check = try restarted.send("check")
                    #expect(check.hasPrefix("ok"), "\(chain) generation \(generation): \(check)")
                    #expect(try restarted.quit("quit") == .exited(0), "\(chain) generation \(generation)")
                }
            }
        }
    }
}
