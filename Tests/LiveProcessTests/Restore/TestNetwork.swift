import Foundation
import Syscall
import TestTools
import TrackerTestSupport

/// A network namespace made for one test (unshare --net) with its loopback up, kept by a
/// process that waits on its stdin; every program of the test runs in it (nsenter --net): the
/// programs checkpointed, their peers, cpx, ld-chpox (which restarts a process in its own
/// namespace) and nft. The test then sees no other program's connections or holds, nor they
/// its own, and ports are free. It ends with its last process.
final class TestNetwork {
    let keeper: WorkloadProcess

    /// What making one and running in it needs (root for unshare and for nft).
    static var canMake: Bool {
        ["/usr/bin/unshare", "/usr/bin/nsenter", "/usr/sbin/ip"].allSatisfy {
            FileManager.default.isExecutableFile(atPath: $0)
        } && getuid() == 0
    }

    init() throws {
        keeper = try WorkloadProcess(
            executable: "/usr/bin/unshare",
            arguments: ["--net", "/bin/sh", "-c", "ip link set lo up && echo up && exec cat"])
        guard try keeper.line() == "up" else { throw POSIXError(.ENETDOWN) }
    }

    deinit { LiveProcess.RestartTests.end(keeper) }

    /// The words before a program that run it in the namespace (nsenter execs it: the pid is the
    /// program's).
    var launcher: [String] { ["/usr/bin/nsenter", "--net=/proc/\(keeper.pid)/ns/net", "--"] }

    /// One of the package's tools by its name, or a program by its path.
    private static func program(_ tool: String) -> String { tool.hasPrefix("/") ? tool : TestTools.path(tool) }

    /// A program started in the namespace.
    func spawn(_ tool: String, _ arguments: [String]) throws -> WorkloadProcess {
        try WorkloadProcess(
            executable: launcher[0], arguments: Array(launcher.dropFirst()) + [Self.program(tool)] + arguments)
    }

    /// A program started in the namespace, its stdio the test's (`ChildProcess.spawn`).
    func start(_ tool: String, _ arguments: [String]) throws -> ChildProcess {
        try ChildProcess.spawn(launcher[0], Array(launcher.dropFirst()) + [Self.program(tool)] + arguments)
    }

    /// A program run in the namespace to its end.
    func run(_ tool: String, _ arguments: [String]) throws -> TestTools.Run {
        try TestTools.run(launcher[0], Array(launcher.dropFirst()) + [Self.program(tool)] + arguments)
    }

    /// The namespace's hold table as nft lists it (with handles), or nil when there is none.
    func holdTable() throws -> String? {
        let listed = try run("/usr/sbin/nft", ["-a", "list", "table", "inet", PacketFilter.table])
        return listed.status == 0 ? listed.output : nil
    }

    /// The namespace's hold rules (`PacketFilter.rules()` there).
    func holdRules() throws -> [PacketFilter.Rule] {
        try holdTable().map { PacketFilter.rules(listed: $0) } ?? []
    }

    /// Holds `connections` in the namespace for `owner`, as `PacketFilter.hold` does.
    func hold(_ connections: [PacketFilter.Connection], owner: PacketFilter.Owner) throws {
        let script = NSTemporaryDirectory() + "chpox-hold-\(getpid()).nft"
        try PacketFilter.holdScript(connections, owner: owner).write(toFile: script, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: script) }
        let made = try run("/usr/sbin/nft", ["-f", script])
        guard made.status == 0 else { throw POSIXError(.EPERM) }
    }

    /// The sockets of the namespace that a process holds on the connection from local port
    /// `local` to remote port `remote` (/proc/PID/net/tcp shows PID's namespace).
    func heldSockets(local: UInt16, remote: UInt16) throws -> Int {
        let table = try String(contentsOfFile: "/proc/\(keeper.pid)/net/tcp", encoding: .utf8)
        return table.split(separator: "\n").dropFirst().filter { line in
            let fields = line.split(separator: " ")
            guard fields.count > 9 else { return false }
            let ports = [fields[1], fields[2]].map { UInt16($0.split(separator: ":").last ?? "", radix: 16) }
            return ports == [local, remote] && fields[3] != "07" && fields[9] != "0"
        }.count
    }
}
