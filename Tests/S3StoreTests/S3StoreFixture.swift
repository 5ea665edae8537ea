import Foundation
import ObjectStore
import S3Store
import S3TestSupport
import Store
import StoreTestSupport

/// A store on the test cluster's RGW, in a bucket of its own, and "hosts" that open it: each
/// with a cache directory of its own, as separate machines would have.
struct S3StoreFixture {
    let client: S3Client
    let url: String
    let root: String

    init(_ purpose: String, prefix: String = "fleet/a") throws {
        client = try CephCluster.freshBucket(purpose)
        url = "s3://\(client.bucket)/\(prefix)"
        root =
            FileManager.default.temporaryDirectory.appendingPathComponent("chpox-s3-\(purpose)-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    /// The environment a command on host `host` would have: the cluster's endpoint and keys,
    /// its own cache, and `settings`.
    func environment(host: String, _ settings: [String: String] = [:]) throws -> [String: String] {
        let configuration = try CephCluster.configuration.get()
        var environment = [
            "AWS_ENDPOINT_URL": configuration.endpoint,
            "AWS_ACCESS_KEY_ID": configuration.credentials.accessKeyID,
            "AWS_SECRET_ACCESS_KEY": configuration.credentials.secretAccessKey,
            "AWS_REGION": configuration.region,
            "HOME": "/nonexistent",
            "CHPOX_CACHE": cacheRoot(host),
        ]
        environment.merge(settings) { $1 }
        return environment
    }

    func cacheRoot(_ host: String) -> String { "\(root)/\(host)" }

    /// The store as host `host` opens it.
    func open(host: String, create: Bool = true, _ settings: [String: String] = [:]) throws -> Store {
        try S3Store.open(url, create: create, environment: try environment(host: host, settings))
    }

    /// The keys of the store's objects under `directory` (`packs`, `index`...), without the prefix.
    func objects(_ directory: String) throws -> [ObjectInfo] {
        let prefix = String(url.dropFirst("s3://\(client.bucket)/".count)) + "/" + directory + "/"
        return try client.list(prefix: prefix)
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: root) }
}

/// Every generation of `chain` rebuilds, byte for byte, as `states` (state k is generation k's
/// memory); a failure description, or nil.
func mismatches(_ store: Store, chain: String, states: [SyntheticMemory], generations: [UInt64]) throws -> [String] {
    try generations.compactMap { generation in
        try mismatch(store, chain: chain, generation: generation, expected: states[Int(generation)])
    }
}
