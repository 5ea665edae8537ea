import Foundation
import ObjectStore
import S3TestSupport
import Synchronization
import TestTools
import Testing
import TrackerTestSupport

private let pythonInstalled = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

extension LiveProcess {
    /// Faults of the store on S3 met by the commands (issue 17): wrong credentials, a missing
    /// bucket, the endpoint down, a connection cut mid-upload, RGW restarted during a generation.
    /// Each: one message that says what and what to do, exit 1, nothing half-committed (the
    /// remote chain as it was, a deep verify clean), the process running on whole, and the next
    /// run continues the chain. Transient failures are retried with backoff: a cut or a 503 that a
    /// retry survives lets the generation commit.
    @Suite(.enabled(if: pythonInstalled, "python3 is not installed"), .timeLimit(.minutes(3)))
    struct S3FaultTests {
        /// A small live process checkpointed into a store on S3: 3 MiB of random bytes and their
        /// digest in its memory ("check" answers whether they still agree); "more" writes 2 MiB
        /// afresh, so that the next generation's pack is over 1 MiB (sent with `Expect:
        /// 100-continue`: a cut then drops the server's go, and the body is never sent).
        static let workload = """
            import hashlib, random, sys
            rng = random.Random(5)
            memory = bytearray(rng.randbytes(3 << 20))
            digest = hashlib.sha256(memory).digest()
            print("ready", flush=True)
            for line in sys.stdin:
                if line.strip() == "more":
                    memory[: 2 << 20] = rng.randbytes(2 << 20)
                    digest = hashlib.sha256(memory).digest()
                    print("more", flush=True)
                else:
                    print("ok" if hashlib.sha256(memory).digest() == digest else "corrupt", flush=True)
            """

        final class Target {
            let hosts: S3Hosts
            let workload: WorkloadProcess
            /// The generations committed so far.
            var committed = 0

            init(_ purpose: String, on cluster: PrivateCephCluster? = nil) throws {
                hosts = try S3Hosts(purpose, on: cluster?.configuration)
                workload = try WorkloadProcess(
                    executable: "/usr/bin/python3", arguments: ["-c", S3FaultTests.workload])
                let ready = try workload.line()
                guard ready == "ready" else { throw WorkloadProcess.WorkloadError.unexpected(ready) }
            }

            deinit { RestartTests.end(workload) }

            /// Makes the next generation's pack large.
            func writeMore() throws {
                let answer = try workload.send("more")
                guard answer == "more" else { throw WorkloadProcess.WorkloadError.unexpected(answer) }
            }

            /// `cpx` of the process on host `host`, with `settings` over the host's environment.
            func checkpoint(
                host: String = "a", _ settings: [String: String] = [:], store: String? = nil, extra: [String] = []
            ) throws -> TestTools.Run {
                try hosts.run(
                    "cpx", ["--store", store ?? hosts.url, "--name", "job", "--json"] + extra + ["\(workload.pid)"],
                    host: host, settings)
            }

            /// A checkpoint that must commit the next generation.
            func expectCommits(
                host: String = "a", _ settings: [String: String] = [:], extra: [String] = [],
                sourceLocation: SourceLocation = #_sourceLocation
            ) throws {
                let run = try checkpoint(host: host, settings, extra: extra)
                #expect(run.status == 0, "\(run.errors)", sourceLocation: sourceLocation)
                let taken = try JSONDocument.lines(CheckpointEvent.self, run.output).compactMap {
                    $0.generation?.generation
                }
                #expect(taken == [committed], "\(run.output) \(run.errors)", sourceLocation: sourceLocation)
                committed += 1
                try expectWhole(sourceLocation: sourceLocation)
            }

            /// A checkpoint that failed: one line naming what went wrong (each of `mentions`), exit
            /// 1, the remote chain as it was (`chain`: its ETag before), the store verifying clean.
            func expectFailedCleanly(
                _ run: TestTools.Run, chain: String?, mentions: [String],
                sourceLocation: SourceLocation = #_sourceLocation
            ) throws {
                #expect(run.status == 1, "\(run.output) \(run.errors)", sourceLocation: sourceLocation)
                let lines = run.errors.split(separator: "\n")
                #expect(lines.count == 1, "one message: \(run.errors)", sourceLocation: sourceLocation)
                #expect(run.errors.hasPrefix("cpx: "), "\(run.errors)", sourceLocation: sourceLocation)
                for text in mentions {
                    #expect(run.errors.contains(text), "'\(text)' in: \(run.errors)", sourceLocation: sourceLocation)
                }
                #expect(
                    try hosts.etag("chains/job.chain") == chain, "the remote chain changed",
                    sourceLocation: sourceLocation)
                if committed > 0 {
                    let listed = try hosts.generations(host: "inspector-\(UUID().uuidString)")
                    #expect(listed == ["job": Array(0..<committed)], sourceLocation: sourceLocation)
                }
                let verified = try hosts.verify()
                #expect(verified.status == 0, "\(verified.output) \(verified.errors)", sourceLocation: sourceLocation)
                try expectWhole(sourceLocation: sourceLocation)
            }

            /// The process runs on, whole by its own check.
            func expectWhole(sourceLocation: SourceLocation = #_sourceLocation) throws {
                let check = try workload.send("check")
                #expect(check == "ok", "\(check)", sourceLocation: sourceLocation)
            }

            func chainETag() throws -> String? { try hosts.etag("chains/job.chain") }

            /// The start of the request line of a PUT of the store's `relative` key (`packs/`).
            func put(_ relative: String) -> String { "PUT /\(hosts.client.bucket)/\(hosts.prefix)/\(relative)" }
        }

        static func gatewayPort(_ configuration: S3Configuration? = nil) throws -> UInt16 {
            try #require((configuration ?? CephCluster.configuration.get()).port.map { UInt16($0) })
        }

        @Test func wrongCredentialsAreRefusedAndTheNextRunContinues() throws {
            let target = try Target("fault-keys")
            try target.expectCommits()
            let before = try target.chainETag()
            let run = try target.checkpoint(["AWS_SECRET_ACCESS_KEY": "not-the-secret-key-of-this-user-at-all"])
            try target.expectFailedCleanly(
                run, chain: before, mentions: [target.hosts.url, "refused the credentials", "AWS_SECRET_ACCESS_KEY"])
            let listing = try target.hosts.run(
                "dumpinfo", ["--store", target.hosts.url, "--chain"], host: "a",
                ["AWS_ACCESS_KEY_ID": "NOSUCHKEY0000000000"])
            #expect(listing.status == 1, "\(listing.output)")
            #expect(listing.errors.contains("AWS_ACCESS_KEY_ID"), "\(listing.errors)")
            try target.expectCommits()
        }

        @Test func aMissingBucketIsNamedAndCreatedOnlyWhenAsked() throws {
            let target = try Target("fault-bucket")
            let configuration = try CephCluster.configuration.get()
            let bucket = "chpox-missing-\(UInt32.random(in: 0...UInt32.max))"
            let store = "s3://\(bucket)/jobs"
            let run = try target.checkpoint(store: store)
            #expect(run.status == 1, "\(run.errors)")
            #expect(run.errors.split(separator: "\n").count == 1, "\(run.errors)")
            #expect(
                run.errors.contains("bucket \(bucket) does not exist at \(configuration.endpoint)"), "\(run.errors)")
            #expect(run.errors.contains("--create-bucket"), "\(run.errors)")
            let client = try S3Client(configuration: configuration, bucket: bucket)
            #expect(try !client.bucketExists(), "a refused run made the bucket")
            try target.expectWhole()

            let created = try target.checkpoint(store: store, extra: ["--create-bucket"])
            #expect(created.status == 0, "\(created.errors)")
            #expect(try client.bucketExists())
            #expect(try client.head("jobs/chains/job.chain") != nil)
            try target.expectWhole()
        }

        @Test func anEndpointThatIsDownIsNamedAfterRetries() throws {
            let target = try Target("fault-down")
            try target.expectCommits()
            let before = try target.chainETag()
            let port = try LocalSocket.closedPort()
            let run = try target.checkpoint(["AWS_ENDPOINT_URL": "http://127.0.0.1:\(port)"])
            try target.expectFailedCleanly(
                run, chain: before,
                mentions: ["127.0.0.1:\(port)", "cannot connect", "AWS_ENDPOINT_URL", "[after 5 attempts]"])
            try target.expectCommits()
        }

        /// Every pack upload cut (the server's go for the body dropped, again on each retry):
        /// the generation fails, naming the pack and the endpoint, and nothing of it is
        /// committed; the next run, on a sound connection, commits it.
        @Test func aConnectionCutMidUploadFailsCleanly() throws {
            let target = try Target("fault-cut")
            try target.expectCommits()
            let before = try target.chainETag()
            let proxy = try FaultProxy(upstreamPort: try Self.gatewayPort())
            defer { proxy.stop() }
            proxy.add(.cut, 1000, matching: target.put("packs/"))
            try target.writeMore()
            let run = try target.checkpoint(["AWS_ENDPOINT_URL": "http://127.0.0.1:\(proxy.port)"])
            try target.expectFailedCleanly(
                run, chain: before, mentions: ["/packs/", "127.0.0.1:\(proxy.port)", "[after 5 attempts]"])
            #expect(proxy.cut.withLock { $0 } >= 5, "a cut for each attempt")
            try target.expectCommits()
        }

        /// What a retry survives commits: a pack's upload cut once, the chain's compare-and-swap
        /// carried out by the server but its answer lost (the retry finds its own write), and
        /// two 503 SlowDowns on the manifest.
        @Test func transientFailuresAreRetriedAndTheGenerationCommits() throws {
            let target = try Target("fault-retry")
            try target.expectCommits()
            let proxy = try FaultProxy(upstreamPort: try Self.gatewayPort())
            defer { proxy.stop() }
            proxy.add(.cut, 1, matching: target.put("packs/"))
            proxy.add(.cut, 1, matching: target.put("chains/job.chain "))
            proxy.add(.slowDown, 2, matching: target.put("manifests/"))
            try target.writeMore()
            try target.expectCommits(["AWS_ENDPOINT_URL": "http://127.0.0.1:\(proxy.port)"])
            #expect(proxy.cut.withLock { $0 } == 2)
            #expect(proxy.slowedDown.withLock { $0 } == 2)
            let puts = proxy.requests.withLock { $0 }.filter { $0.hasPrefix(target.put("chains/job.chain ")) }
            #expect(puts.count == 2, "the swap sent again once: \(puts)")
            #expect(try target.hosts.generations(host: "fresh") == ["job": [0, 1]])
            let verified = try target.hosts.verify()
            #expect(verified.status == 0, "\(verified.output) \(verified.errors)")
            try target.expectCommits()
        }

        /// RGW stopped and started again as a generation's pack is on its way (the restart left
        /// to run beside it, about 2 s here): the generation either commits (its retries outlast
        /// the restart) or fails cleanly, naming the upload; the next run commits either way. On
        /// a cluster of its own: the suites beside it use the shared one.
        @Test func aGatewayRestartedDuringAGeneration() throws {
            let cluster = try PrivateCephCluster("restart")
            defer { withExtendedLifetime(cluster) {} }  // stopped only once the test is done with it
            let target = try Target("fault-restart", on: cluster)
            try target.expectCommits()
            let proxy = try FaultProxy(upstreamPort: try Self.gatewayPort(cluster.configuration))
            defer { proxy.stop() }
            let restarted = Mutex<[String]>([])
            proxy.beforeRequest(matching: target.put("packs/")) {
                Thread.detachNewThread {
                    do { try cluster.restartGateway() } catch { restarted.withLock { $0.append("\(error)") } }
                    restarted.withLock { $0.append("done") }
                }
                usleep(200_000)  // the kill lands first
            }
            let before = try target.chainETag()
            try target.writeMore()
            let run = try target.checkpoint(["AWS_ENDPOINT_URL": "http://127.0.0.1:\(proxy.port)"])
            while restarted.withLock({ $0.isEmpty }) { usleep(50_000) }
            #expect(restarted.withLock { $0 } == ["done"])
            if run.status == 0 {
                #expect(try JSONDocument.lines(CheckpointEvent.self, run.output).first?.generation?.generation == 1)
                target.committed += 1
            } else {
                try target.expectFailedCleanly(run, chain: before, mentions: [target.hosts.url, "packs/"])
            }
            try target.expectCommits()
        }

        /// The commit point's answer lost: the chain's compare-and-swap reached the server, whose
        /// answer was cut, and every retry was answered 503. The server holds the generation, so
        /// cpx must say so (it committed), not that it failed.
        @Test func theCommitsAnswerLostAndItsRetriesRefused() throws {
            let target = try Target("fault-commit")
            try target.expectCommits()
            let proxy = try FaultProxy(upstreamPort: try Self.gatewayPort())
            defer { proxy.stop() }
            proxy.add(.cut, 1, matching: target.put("chains/job.chain "))
            proxy.add(.slowDown, 100, matching: target.put("chains/job.chain "))
            try target.expectCommits(["AWS_ENDPOINT_URL": "http://127.0.0.1:\(proxy.port)"])
            #expect(proxy.cut.withLock { $0 } == 1)
            #expect(proxy.slowedDown.withLock { $0 } >= 4, "every retry of the swap refused")
            #expect(try target.hosts.generations(host: "fresh") == ["job": [0, 1]])
            try target.expectCommits()
        }

        /// The same, with the chain unreadable as well (the server gone for good): whether the
        /// generation landed cannot be known, and cpx says so, and what to run; whatever it was,
        /// the store is whole and the next run continues after it.
        @Test func theCommitsOutcomeUnknown() throws {
            let target = try Target("fault-unknown")
            try target.expectCommits()
            let proxy = try FaultProxy(upstreamPort: try Self.gatewayPort())
            defer { proxy.stop() }
            // From the swap on, every request for the chain (its reading too) is refused.
            let chain = "/\(target.hosts.prefix)/chains/job.chain "
            proxy.add(.cut, 1, matching: target.put("chains/job.chain "))
            proxy.beforeRequest(matching: target.put("chains/job.chain ")) { [proxy] in
                proxy.add(.slowDown, 100, matching: chain)
            }
            let run = try target.checkpoint(["AWS_ENDPOINT_URL": "http://127.0.0.1:\(proxy.port)"])
            #expect(run.status == 1, "\(run.output) \(run.errors)")
            #expect(run.errors.split(separator: "\n").count == 1, "one message: \(run.errors)")
            #expect(run.errors.contains("generation 1"), "\(run.errors)")
            #expect(run.errors.contains("dumpinfo"), "what to run to know: \(run.errors)")
            // It did land (the first swap reached the server).
            #expect(try target.hosts.generations(host: "fresh") == ["job": [0, 1]])
            let verified = try target.hosts.verify()
            #expect(verified.status == 0, "\(verified.output) \(verified.errors)")
            target.committed = 2
            try target.expectCommits()
        }
    }
}
