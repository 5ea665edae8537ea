import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Incremental
import S3Store
import Store
import Tracee

/// `--store DIR|s3://BUCKET/PREFIX` and `--cache-dir`, shared by every command.
public struct StoreOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The store: a directory, or s3://BUCKET/PREFIX for a store on S3.",
            discussion: """
                Default: $CHPOX_STORE, else $XDG_STATE_HOME/chpox, else ~/.local/state/chpox. On S3 the \
                endpoint, region and credentials are taken as the AWS tools take them (AWS_ENDPOINT_URL, \
                AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or AWS_PROFILE in ~/.aws); the bucket \
                must exist.
                """,
            valueName: "store"))
    public var store: String?

    @Option(
        name: .customLong("cache-dir"),
        help: ArgumentHelp(
            "Where a store on S3 is cached (index, manifests, the packs used last).",
            discussion: """
                Default: $CHPOX_CACHE, else $XDG_CACHE_HOME/chpox, else ~/.cache/chpox; each store has a \
                directory of its own there. Packs beyond $CHPOX_CACHE_LIMIT (default 4G) are evicted, \
                oldest first.
                """,
            valueName: "dir"))
    public var cacheDirectory: String?

    @Flag(name: .long, help: "Make the S3 bucket of --store when it does not exist (commands that write).")
    public var createBucket = false

    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Trust a store on S3 as root's own (ld-chpox run by root).",
            discussion: """
                Whoever holds a bucket's credentials can write any image into it; root restarts an image from \
                S3 as another user, or as root, only when told that only root can write the bucket.
                """))
    public var trustStore = false

    public init() {}

    public var path: String { store ?? Store.defaultPath(environment: ProcessInfo.processInfo.environment) }

    /// Opens the store to write; only commands that write generations create it.
    public func open(create: Bool = false) throws -> Store { try open(path, create: create) }

    /// Opens the store at `path` (a directory or `s3://`) to write, with these options' cache
    /// and bucket settings (`cpx copy --to`).
    public func open(_ path: String, create: Bool) throws -> Store {
        if S3StoreLocation.isS3(path) {
            return try S3Store.open(
                path, cacheRoot: cacheDirectory, create: create, createBucket: createBucket, trusted: trustStore)
        }
        return try Store(at: path, create: create)
    }

    /// Opens the store to read: the caller's own store as usual (a restart may note in it what
    /// it restarted), another user's, which only root may open, read-only (docs/threat-model.md).
    /// A store on S3 is read through the caller's own cache.
    public func openToRead() throws -> Store {
        if S3StoreLocation.isS3(path) {
            return try S3Store.open(path, cacheRoot: cacheDirectory, create: false, trusted: trustStore)
        }
        return try Store(at: path, reading: true)
    }
}

/// Runs a command body, printing a store error as one line on stderr with a non-zero exit.
public func reportingErrors(_ command: String, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as StoreError {
        FileHandle.standardError.write(Data("\(command): \(error)\n".utf8))
        throw ExitCode.failure
    } catch let error as CheckpointError {
        FileHandle.standardError.write(Data("\(command): \(error)\n".utf8))
        throw ExitCode.failure
    } catch let error as TraceeError {
        FileHandle.standardError.write(Data("\(command): \(error)\n".utf8))
        throw ExitCode.failure
    }
}

/// A progress line on stderr, redrawn in place, only when stderr is a terminal.
public final class ProgressLine: @unchecked Sendable {
    private let label: String
    private let enabled: Bool
    private var shown = false

    public init(_ label: String) {
        self.label = label
        enabled = isatty(2) != 0
    }

    public func update(_ done: Int, _ total: Int) {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\(label): \(done)/\(total)".utf8))
        shown = true
    }

    /// Shows `text` in place of the line.
    public func show(_ text: String) {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K\(label): \(text)".utf8))
        shown = true
    }

    /// Clears the line before the command prints its result.
    public func finish() {
        guard enabled && shown else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
