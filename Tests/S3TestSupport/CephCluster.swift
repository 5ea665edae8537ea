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
    public static func freshBucket(_ purpose: String, retry: RetryPolicy = RetryPolicy()) throws -> S3Client {
        let configuration = try configuration.get()
        let name = "chpox-\(purpose)-\(UInt32.random(in: 0...UInt32.max))"
        let client = try S3Client(configuration: configuration, bucket: name, retry: retry)
        try client.createBucket()
        return client
    }

    /// Kills the gateway and starts it again on its port (`scripts/ceph.sh restart-rgw`): the
    /// monitor and the OSD, and so every object, stay. Returns once it answers again.
    public static func restartGateway() throws {
        _ = try configuration.get()
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("chpox-rgw-restart-\(getpid()).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let status = run(
            ["/bin/bash", repository.appendingPathComponent("scripts/ceph.sh").path, "restart-rgw"], log: log.path)
        guard status == 0 else {
            let said = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            throw StartFailure(description: "scripts/ceph.sh restart-rgw failed (status \(status)):\n\(said)")
        }
    }

    private static func start() -> Result<S3Configuration, StartFailure> {
        let directory = repository.appendingPathComponent(".build/ceph")
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("chpox-ceph-start-\(getpid()).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let status = run(
            ["/bin/bash", repository.appendingPathComponent("scripts/ceph.sh").path, "start"], log: log.path)
        let said = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
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

    /// Runs a command with its output in `log`; its exit status (-1 when it could not start).
    /// posix_spawn and waitpid rather than Foundation's Process, whose waitUntilExit never
    /// returned here once the script's daemons had forked away from it.
    private static func run(_ arguments: [String], log: String) -> Int32 {
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
        guard posix_spawn(&pid, arguments[0], &actions, &attributes, &argv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        // ECHILD: a live-process test's reaper (waitpid -1) collected it first; it has ended,
        // and reading s3.env says whether it did its work.
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
