import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Incremental
import Store
import Tracee

/// `--store DIR`, shared by every command.
public struct StoreOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The store directory.",
            discussion: "Default: $CHPOX_STORE, else $XDG_STATE_HOME/chpox, else ~/.local/state/chpox.",
            valueName: "dir"))
    public var store: String?

    public init() {}

    public var path: String { store ?? Store.defaultPath(environment: ProcessInfo.processInfo.environment) }

    /// Opens the store to write; only commands that write generations create it.
    public func open(create: Bool = false) throws -> Store {
        try Store(at: path, create: create)
    }

    /// Opens the store to read: the caller's own store as usual (a restart may note in it what
    /// it restarted), another user's, which only root may open, read-only (docs/threat-model.md).
    public func openToRead() throws -> Store { try Store(at: path, reading: true) }
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
