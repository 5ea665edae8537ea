import Foundation

/// The package's executables as tests run them.
public enum TestTools {
    /// An executable built beside the test bundle (or in .build/debug).
    public static func path(_ name: String) -> String {
        let beside = URL(
            fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        )
        .deletingLastPathComponent().appendingPathComponent(name).path
        let built = FileManager.default.currentDirectoryPath + "/.build/debug/\(name)"
        return [beside, built].first { FileManager.default.isExecutableFile(atPath: $0) } ?? name
    }

    public struct Run: Sendable {
        public var status: Int32
        public var output: String
        public var errors: String

        public init(status: Int32, output: String, errors: String) {
            (self.status, self.output, self.errors) = (status, output, errors)
        }
    }

    /// Every restart test runs lazily too: with CHPOX_TEST_LAZY=1 in the environment (the test
    /// command's second pass over the restart suites), a restart by `ld-chpox` gets `--lazy`
    /// (what only inspects a generation is left as it is).
    public static var lazyRestarts: Bool { ProcessInfo.processInfo.environment["CHPOX_TEST_LAZY"] == "1" }

    /// `arguments` of an `ld-chpox` run, with `--lazy` added where `lazyRestarts` asks for it.
    public static func restartArguments(_ arguments: [String]) -> [String] {
        let inspecting = ["--check", "--plan", "--core", "--files-to", "--help", "--lazy"]
        guard lazyRestarts, !arguments.contains(where: { argument in inspecting.contains { argument.hasPrefix($0) } })
        else { return arguments }
        return ["--lazy"] + arguments
    }

    /// Runs `tool` with `arguments` to completion, capturing stdout and stderr; `environment`:
    /// variables set over the test's own (a store on S3's endpoint, keys and cache).
    public static func run(_ tool: String, _ arguments: [String], environment: [String: String] = [:]) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path(tool))
        process.arguments = tool == "ld-chpox" ? restartArguments(arguments) : arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // Foundation reports a signal's number as the status: a tool killed by SIGHUP would
        // read as "exit 1" with nothing on stderr.
        if process.terminationReason == .uncaughtSignal {
            return Run(
                status: 128 + process.terminationStatus, output: output,
                errors: errors + "(killed by signal \(process.terminationStatus))")
        }
        return Run(status: process.terminationStatus, output: output, errors: errors)
    }
}
