import CXXHash
import ObjectStore
import Store

/// Where a store on S3 is: `s3://BUCKET/PREFIX` (the prefix may be empty or hold slashes), and
/// the keys of its objects under the prefix, named as the files of a local store are:
///
///     PREFIX/chpox-store                marker: format version (written once, by the first writer)
///     PREFIX/packs/<id>.pack            written once, named by the hash of their bytes
///     PREFIX/index/<id>.idx             written once (one per generation; maintenance replaces them)
///     PREFIX/manifests/<id>.gen         written once, named by the hash of their bytes
///     PREFIX/chains/<name>.chain        a chain: changed only by compare-and-swap (the commit point)
///     PREFIX/chains/<name>.lineage      the processes that may extend the chain
///     PREFIX/locks/chain-<name>.lease   the chain's writer (a lease, `S3Lease`)
///     PREFIX/locks/writer-<id>.lease    a generation in flight
///     PREFIX/locks/maintenance.lease    gc, rebase or rebuild-index
public struct S3StoreLocation: Sendable, Equatable, CustomStringConvertible {
    public var bucket: String
    /// Without leading or trailing slashes; empty for the bucket's root.
    public var prefix: String

    public static let scheme = "s3://"

    public static func isS3(_ text: String) -> Bool { text.hasPrefix(scheme) }

    /// Parses `s3://BUCKET[/PREFIX]`.
    public init(parsing text: String) throws(StoreError) {
        guard text.hasPrefix(Self.scheme) else {
            throw .invalidArgument("\(text) is not an S3 location: write s3://BUCKET/PREFIX")
        }
        let rest = text.dropFirst(Self.scheme.count)
        let parts = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        bucket = String(parts.first ?? "")
        guard !bucket.isEmpty else { throw .invalidArgument("\(text) names no bucket: write s3://BUCKET/PREFIX") }
        let path = parts.count > 1 ? parts[1].split(separator: "/", omittingEmptySubsequences: true) : []
        guard !path.contains(where: { $0 == "." || $0 == ".." }) else {
            throw .invalidArgument("\(text): a prefix of '.' or '..' segments is refused")
        }
        prefix = path.joined(separator: "/")
    }

    public var description: String { Self.scheme + bucket + (prefix.isEmpty ? "" : "/" + prefix) }

    /// The key of `relative` (`packs/x.pack`) under the prefix.
    public func key(_ relative: String) -> String { prefix.isEmpty ? relative : prefix + "/" + relative }

    /// The key of a store file.
    func key(_ kind: StoreFileKind, _ name: String) -> String { key(kind.directoryName + "/" + kind.fileName(name)) }

    /// The key prefix listing every file of `kind` (`PREFIX/packs/`).
    func listing(_ kind: StoreFileKind) -> String { key(kind.directoryName + "/") }

    /// `--cache-dir`'s default: `$CHPOX_CACHE`, else `$XDG_CACHE_HOME/chpox`, else
    /// `~/.cache/chpox`; each store (endpoint, bucket, prefix) has its own directory there.
    public static func defaultCacheRoot(environment: [String: String]) -> String {
        func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        if let explicit = value("CHPOX_CACHE") { return explicit }
        if let cache = value("XDG_CACHE_HOME") { return cache + "/chpox" }
        return (value("HOME") ?? "/root") + "/.cache/chpox"
    }

    /// This store's cache directory under `root`: `s3-BUCKET-HASH`, the hash over the endpoint,
    /// bucket and prefix (two stores never share a cache).
    public func cacheDirectory(root: String, endpoint: String) -> String {
        let identity = Array("\(endpoint)\n\(bucket)\n\(prefix)".utf8)
        let hash = identity.withUnsafeBytes { XXH3_64bits($0.baseAddress, $0.count) }
        let hex = String(hash, radix: 16)
        return "\(root)/s3-\(bucket)-\(String(repeating: "0", count: 16 - hex.count) + hex)"
    }
}
