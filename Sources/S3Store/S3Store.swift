import Foundation
import ObjectStore
import Store

/// Opening a store on S3: `s3://BUCKET/PREFIX`, its settings and credentials taken the way the
/// AWS tools take them (`S3Configuration.fromEnvironment`), its cache in a directory of its own.
public enum S3Store {
    /// Opens the store at `url` behind its cache (a local store, made when missing) under
    /// `cacheRoot` (default: `S3StoreLocation.defaultCacheRoot`). `create`: a writer's open,
    /// which marks an empty prefix as a store.
    public static func open(
        _ url: String, cacheRoot: String? = nil, create: Bool, createBucket: Bool = false, trusted: Bool = false,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(StoreError) -> Store {
        let location = try S3StoreLocation(parsing: url)
        let client: S3Client
        do {
            client = try S3Client(
                configuration: try S3Configuration.fromEnvironment(environment), bucket: location.bucket)
        } catch {
            throw .remote(location: location.description, reason: "\(error)")
        }
        let settings = S3StoreSettings.fromEnvironment(environment)
        let remote = try S3Remote(
            location, client: client, settings: settings, create: create, createBucket: createBucket, trusted: trusted)
        let cache = location.cacheDirectory(
            root: cacheRoot ?? S3StoreLocation.defaultCacheRoot(environment: environment),
            endpoint: client.configuration.endpoint)
        return try Store(at: cache, create: true, remote: remote)
    }
}
