#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// `criu dump --leave-running` of a process tree, the baseline of the tree and network
/// benchmarks: CRIU 4.2,
/// built by ../shared/peers/build-criu.sh into the repository's .build/peers ($CHPOX_CRIU, which
/// `run-ratios` sets when it finds one).
///
/// Its pause is what CRIU reports itself (`--display-stats`): "Frozen time", from the moment
/// the whole tree is frozen (cgroup-less freeze: ptrace of every task) until it runs again,
/// memory written into the image files included, since without a page server or pre-dump the
/// pages go to files while the tree stands still. "Freezing time", the seizing of the tree, is
/// reported beside it.
public struct CriuDump: Sendable {
    public let path: String

    public struct Result: Sendable {
        public var frozenMicroseconds = 0
        public var freezingMicroseconds = 0
        public var pagesWritten = 0
        /// Sizes of the image directory's regular files (pages-*.img the most), the log left out.
        public var imageBytes = 0
        /// The whole `criu dump` run, from spawn to exit.
        public var milliseconds = 0
    }

    public static let located: CriuDump? = {
        guard let path = ProcessInfo.processInfo.environment["CHPOX_CRIU"], access(path, X_OK) == 0 else { return nil }
        return CriuDump(path: path)
    }()

    public static let missing = "criu not found: set CHPOX_CRIU, or build CRIU 4.2 with ../shared/peers/build-criu.sh .build/peers "
        + "at the repository's root (run-ratios looks there and in the main worktree)"

    /// Dumps the tree of `pid` into a fresh `directory` (removed afterwards, once measured) and
    /// leaves it running. `--shell-job`: the tree's session and terminal are the benchmark's.
    /// `options` go to `criu dump` after those; `launcher` runs criu (`nsenter --net=… --`, for
    /// a process in a network namespace of the benchmark's: criu must be in the same one).
    /// `keepImages`: leave the images for a `criu restore` (the caller removes them).
    public func dump(
        _ pid: Int32, into directory: String, options: [String] = [], launcher: [String] = [], keepImages: Bool = false
    ) -> Swift.Result<Result, DumpFailure> {
        try? FileManager.default.removeItem(atPath: directory)
        defer { if !keepImages { try? FileManager.default.removeItem(atPath: directory) } }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            return .failure(DumpFailure("cannot make \(directory): \(error)"))
        }
        let stats = directory + ".stats"
        defer { unlink(stats) }
        let arguments = launcher + [path, "dump", "-t", "\(pid)", "-D", directory, "--leave-running", "--shell-job",
                                    "--display-stats", "-o", "dump.log"] + options
        let program = arguments[0]
        let ((status, spawnError), elapsed) = microseconds { () -> (Int32, Int32) in
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, stats, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
            let argv = arguments.map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            var child: pid_t = 0
            let spawned = posix_spawn(&child, program, &actions, nil, argv, environ)
            guard spawned == 0 else { return (-1, spawned) }
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
            return (status, 0)
        }
        guard spawnError == 0 else { return .failure(DumpFailure("cannot start \(program): \(String(cString: strerror(spawnError)))")) }
        let output = (try? String(contentsOfFile: stats, encoding: .utf8)) ?? ""
        guard status == 0 else {
            let log = (try? String(contentsOfFile: directory + "/dump.log", encoding: .utf8)) ?? ""
            let errors = log.split(separator: "\n").filter { $0.hasPrefix("Error") }.suffix(5)
            return .failure(DumpFailure("criu dump failed (wait status \(status)): "
                + (errors.isEmpty ? output.split(separator: "\n").suffix(5) : errors).joined(separator: " | ")))
        }
        var result = Result(milliseconds: elapsed / 1000)
        // "Frozen time: 9616360 us", "Memory pages written: 590042 (0x900da)".
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let value = Int(parts[1].split(separator: " ").first ?? "") else { continue }
            switch parts[0] {
            case "Frozen time": result.frozenMicroseconds = value
            case "Freezing time": result.freezingMicroseconds = value
            case "Memory pages written": result.pagesWritten = value
            default: break
            }
        }
        guard result.frozenMicroseconds > 0 else {
            return .failure(DumpFailure("criu dump printed no \"Frozen time\" (--display-stats): \(output.prefix(400))"))
        }
        result.imageBytes = Scratch.bytes(under: directory) - ((try? FileManager.default.attributesOfItem(
            atPath: directory + "/dump.log")[.size] as? Int) ?? 0)
        return .success(result)
    }

    public struct DumpFailure: Error, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }
}
