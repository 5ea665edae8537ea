import Foundation
import ObjectStore

/// The one-node Ceph cluster of scripts/ceph.sh, started once for the test process (reused when
/// it runs already: the test command starts it before `swift test` and stops it after).
public enum CephCluster {
    public static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent()
        .deletingLastPathComponent()

    /// RGW's endpoint and the S3 user's keys, or why there are none (the script's output).
    public static let configuration: Result<S3Configuration, StartFailure> = start()

    public struct StartFailure: Error, CustomStringConvertible {
        public var description: String
    }

    /// A client of a new, empty bucket of its own (tests run in parallel).
    /// `on`: another cluster's gateway (`PrivateCephCluster`) instead of the shared one.
    public static func freshBucket(
        _ purpose: String, retry: RetryPolicy = RetryPolicy(), on other: S3Configuration? = nil
    ) throws -> S3Client {
        let configuration = try other ?? configuration.get()
        let name = "chpox-\(purpose)-\(UInt32.random(in: 0...UInt32.max))"
        let client = try S3Client(configuration: configuration, bucket: name, retry: retry)
        try client.createBucket()
        return client
    }

    private static func start() -> Result<S3Configuration, StartFailure> {
        start(in: repository.appendingPathComponent(".build/ceph"))
    }

    /// Starts (or reuses) the cluster of `directory` and reads its gateway's endpoint and keys.
    static func start(in directory: URL) -> Result<S3Configuration, StartFailure> {
        let (status, said) = script("start", directory: directory)
        guard status == 0 else {
            return .failure(StartFailure(description: "scripts/ceph.sh start failed (status \(status)):\n\(said)"))
        }
        do {
            var environment: [String: String] = [:]
            let text = try String(contentsOf: directory.appendingPathComponent("s3.env"), encoding: .utf8)
            for line in text.split(separator: "\n") {
                guard let equals = line.firstIndex(of: "=") else { continue }
                environment[String(line[..<equals])] = String(line[line.index(after: equals)...])
            }
            environment["HOME"] = "/nonexistent"
            return .success(try S3Configuration.fromEnvironment(environment))
        } catch {
            return .failure(StartFailure(description: "the Ceph cluster started, but: \(error)\n\(said)"))
        }
    }

    /// Runs `scripts/ceph.sh COMMAND` for the cluster of `directory`: its status and what it said.
    static func script(_ command: String, directory: URL) -> (status: Int32, said: String) {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent(
            "chpox-ceph-\(command)-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let status = run(
            ["/bin/bash", repository.appendingPathComponent("scripts/ceph.sh").path, command], log: log.path,
            environment: ["CHPOX_CEPH_DIR": directory.path])
        return (status, (try? String(contentsOf: log, encoding: .utf8)) ?? "")
    }

    /// Runs a command with its output in `log`; its exit status (-1 when it could not start).
    /// posix_spawn and waitpid rather than Foundation's Process, whose waitUntilExit never
    /// returned here once the script's daemons had forked away from it.
    private static func run(_ arguments: [String], log: String, environment: [String: String]) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        // The daemons the script starts inherit the signal mask of the thread that spawns it: a
        // test's thread may block most signals, and a gateway started so ignores SIGTERM.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        var all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var argv = arguments.map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid: pid_t = 0
        let variables = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        var envp = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for variable in envp { free(variable) } }
        guard posix_spawn(&pid, arguments[0], &actions, &attributes, &argv, &envp) == 0 else { return -1 }
        var status: Int32 = 0
        // ECHILD: a live-process test's reaper (waitpid -1) collected it first; it has ended,
        // and reading s3.env says whether it did its work.
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}

/// A one-node cluster of its own, in `.build/ceph-NAME`, for a test that restarts its gateway:
/// the shared cluster serves suites that run beside it, which a restart would fail. Stopped (and
/// its directory removed) when it goes.
public final class PrivateCephCluster: Sendable {
    public let directory: URL
    public let configuration: S3Configuration

    public init(_ name: String) throws {
        directory = CephCluster.repository.appendingPathComponent(".build/ceph-\(name)-\(getpid())")
        configuration = try CephCluster.start(in: directory).get()
    }

    /// Stops the gateway and starts it again on its port (`scripts/ceph.sh restart-rgw`): the
    /// monitor and the OSD, and so every object, stay. Returns once it answers again.
    public func restartGateway() throws {
        let (status, said) = CephCluster.script("restart-rgw", directory: directory)
        guard status == 0 else {
            throw CephCluster.StartFailure(
                description: "scripts/ceph.sh restart-rgw failed (status \(status)):\n\(said)")
        }
    }

    deinit { _ = CephCluster.script("stop", directory: directory) }
}
