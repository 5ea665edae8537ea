#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// The processes of the network benchmark (Sources/NetTarget), each our child, spawned with
/// pipes for stdin and stdout as `TargetProcess` spawns its own: a network namespace made for
/// the benchmark, a server in it with N connections accepted, and their client (outside the
/// server's tree). Each dies with the benchmark (PR_SET_PDEATHSIG) and when `kill()`ed.
public final class NetTargetProcess: @unchecked Sendable {
    public let pid: Int32
    /// The first line it printed: "ready", "listening PORT".
    public let first: String
    private let toTarget: Int32
    private let fromTarget: Int32
    private var reaped = false

    /// $CHPOX_NET_TARGET, else beside this executable, where `run-ratios` builds it.
    public static var path: String {
        ProcessInfo.processInfo.environment["CHPOX_NET_TARGET"] ?? TargetProcess.binDirectory + "/NetTarget"
    }

    /// Starts `launcher NetTarget ARGUMENTS` (the launcher execs it: the pid is NetTarget's) and
    /// reads its first line.
    init(_ arguments: [String], launcher: [String] = []) throws {
        let argv = launcher + [Self.path] + arguments
        let (child, input, output) = try TargetProcess.spawn(argv[0], Array(argv.dropFirst()))
        pid = child
        toTarget = input
        fromTarget = output
        first = TargetProcess.readLine(fromTarget)
    }

    deinit {
        kill()
        close(toTarget)
        close(fromTarget)
    }

    public func readLine() -> String { TargetProcess.readLine(fromTarget) }

    /// Kills it (SIGKILL) and reaps it.
    public func kill() {
        guard !reaped else { return }
        reaped = true
        _ = Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// A network namespace of the benchmark's own, its loopback up, held by a NetTarget
    /// (`netns`) until `end()`: the server, its client, cpx and criu all run in it (`launcher`,
    /// nsenter(1) from util-linux), so that nothing else on the machine sees their connections
    /// or their filter rules, nor they anything else's.
    public final class Namespace: @unchecked Sendable {
        let keeper: NetTargetProcess

        public static let nsenter = "/usr/bin/nsenter"

        public init() throws {
            keeper = try NetTargetProcess(["netns"])
            guard keeper.first == "ready" else {
                keeper.kill()
                throw TargetProcess.TargetError.protocol("NetTarget netns: expected 'ready', got '\(keeper.first)'")
            }
        }

        /// The words that run a program in the namespace: nsenter execs it, its pid is the program's.
        public var launcher: [String] { [Self.nsenter, "--net=/proc/\(keeper.pid)/ns/net", "--"] }

        public func end() { keeper.kill() }
    }

    /// `NetTarget server N` in `namespace`, once it listens: its port.
    public static func server(connections: Int, in namespace: Namespace) throws -> (NetTargetProcess, port: Int) {
        let server = try NetTargetProcess(["server", "\(connections)"], launcher: namespace.launcher)
        let words = server.first.split(separator: " ")
        guard words.count == 2, words[0] == "listening", let port = Int(words[1]) else {
            server.kill()
            throw TargetProcess.TargetError.protocol("NetTarget server: expected 'listening PORT', got '\(server.first)'")
        }
        return (server, port)
    }

    /// `NetTarget client PORT N` in `namespace`, once its N connections are established (and
    /// `server` has accepted them all).
    public static func client(connections: Int, port: Int, server: NetTargetProcess, in namespace: Namespace) throws
        -> NetTargetProcess
    {
        let client = try NetTargetProcess(["client", "\(port)", "\(connections)"], launcher: namespace.launcher)
        let accepted = server.readLine()
        guard client.first == "ready \(connections)", accepted == "ready \(connections)" else {
            client.kill()
            throw TargetProcess.TargetError.protocol(
                "NetTarget: expected 'ready \(connections)' from both ends, got '\(client.first)' and '\(accepted)'")
        }
        return client
    }
}

/// Runs `argv` to its end: its exit status (128 + the signal when killed by one) and what it
/// wrote on stdout (stderr is kept apart, in `errors`), through files, so that a large output
/// never blocks it.
public func runToEnd(_ argv: [String], scratch: String) throws -> (status: Int32, output: String, errors: String) {
    let out = scratch + ".out", err = scratch + ".err"
    defer { unlink(out); unlink(err) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let cArguments = argv.map { strdup($0) } + [nil]
    defer { cArguments.forEach { free($0) } }
    var child: pid_t = 0
    let spawned = posix_spawn(&child, argv[0], &actions, nil, cArguments, environ)
    guard spawned == 0 else { throw TargetProcess.TargetError.spawn(argv[0], spawned) }
    var status: Int32 = 0
    while waitpid(child, &status, 0) < 0 && errno == EINTR {}
    let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    let output = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
    let errors = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
    return (exit, output, errors)
}
