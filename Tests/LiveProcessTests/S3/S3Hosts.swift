import Foundation
import ObjectStore
import S3TestSupport
import TestTools
import TrackerTestSupport

/// A store on the test cluster's RGW (scripts/ceph.sh), in a bucket of its own, and the "hosts"
/// whose commands use it: each host is a cache directory of its own (`CHPOX_CACHE`), as
/// separate machines would have; the commands run as the user would run them.
final class S3Hosts: Sendable {
    let client: S3Client
    /// `s3://BUCKET/PREFIX`.
    let url: String
    let prefix = "fleet"
    /// A scratch directory: the hosts' caches, and files for the workloads.
    let root: String

    /// The gateway's endpoint and the S3 user's keys.
    let configuration: S3Configuration

    /// `on`: another cluster than the shared one (`PrivateCephCluster`).
    init(_ purpose: String, on other: S3Configuration? = nil) throws {
        configuration = try other ?? CephCluster.configuration.get()
        client = try CephCluster.freshBucket(purpose, on: configuration)
        url = "s3://\(client.bucket)/\(prefix)"
        root = NSTemporaryDirectory() + "chpox-s3-\(purpose)-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    func cacheRoot(_ host: String) -> String { "\(root)/cache-\(host)" }

    /// The variables a command on `host` gets over the test's own: the cluster's endpoint and
    /// keys, the host's cache, and `settings` last (which may replace any of them).
    func environment(host: String, _ settings: [String: String] = [:]) throws -> [String: String] {
        [
            "AWS_ENDPOINT_URL": configuration.endpoint,
            "AWS_ACCESS_KEY_ID": configuration.credentials.accessKeyID,
            "AWS_SECRET_ACCESS_KEY": configuration.credentials.secretAccessKey,
            "AWS_REGION": configuration.region,
            "CHPOX_CACHE": cacheRoot(host),
        ].merging(settings) { $1 }
    }

    /// Runs `tool` (cpx, ld-chpox, dumpinfo) on `host` to completion.
    func run(
        _ tool: String, _ arguments: [String], host: String, _ settings: [String: String] = [:]
    ) throws
        -> TestTools.Run
    {
        try TestTools.run(tool, arguments, environment: try environment(host: host, settings))
    }

    /// `ld-chpox --wait --trust-store` on `host` (root restarts from the test's own bucket, which
    /// only this test writes), restarting generation `generation` (nil: the newest) of `chain`:
    /// the restarted process's stdio are this one's.
    func restart(chain: String, generation: Int? = nil, host: String) throws -> WorkloadProcess {
        let environment = ProcessInfo.processInfo.environment.merging(try self.environment(host: host)) { $1 }
        return try WorkloadProcess(
            executable: TestTools.path("ld-chpox"),
            arguments: TestTools.restartArguments(
                ["--store", url, "--name", chain, "--wait", "--trust-store"]
                    + (generation.map { ["--generation", "\($0)"] } ?? [])),
            environment: environment.map { "\($0.key)=\($0.value)" })
    }

    /// The generations of every chain as `dumpinfo --chain` on `host` lists them, by chain.
    func generations(host: String) throws -> [String: [Int]] {
        let run = try self.run("dumpinfo", ["--store", url, "--chain", "--json"], host: host)
        guard run.status == 0 else { throw Failure(what: "dumpinfo --chain on \(host): \(run.errors)") }
        var found: [String: [Int]] = [:]
        for generation in try JSONDocument.decode(ChainDocument.self, run.output).generations {
            found[generation.chain, default: []].append(generation.generation)
        }
        return found
    }

    /// `dumpinfo --verify --deep` from a fresh cache: its status and what it said.
    func verify(host: String = "verifier-\(UUID().uuidString)") throws -> TestTools.Run {
        try run("dumpinfo", ["--store", url, "--verify", "--deep"], host: host)
    }

    /// The remote object `relative` (`chains/job.chain`) under the prefix: its ETag, nil when
    /// there is none.
    func etag(_ relative: String) throws -> String? {
        try client.head("\(prefix)/\(relative)").map { "\($0.etag)" }
    }

    /// Every key under the prefix, with its ETag: what a failed command must leave as it was
    /// (leases excepted: they come and go).
    func objects() throws -> [String: String] {
        var found: [String: String] = [:]
        for object in try client.list(prefix: prefix + "/") where !object.key.hasPrefix(prefix + "/locks/") {
            found[object.key] = "\(object.etag)"
        }
        return found
    }

    struct Failure: Error, CustomStringConvertible {
        var what: String
        var description: String { what }
    }
}
