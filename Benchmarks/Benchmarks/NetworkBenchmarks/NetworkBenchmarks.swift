#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Benchmark
import Foundation
import TargetProcess

// The extra pause of a checkpoint per established TCP connection: a server (NetTarget) holding
// 0, 100 and 1,000 connections accepted from a client outside its tree, all on the loopback of
// a network namespace the benchmark makes, checkpointed by `cpx --tcp-established --json` (its
// pauseMicroseconds: the stop the server saw) and dumped by `criu dump --leave-running
// --tcp-established` (its "Frozen time"), in the same iteration. `run-ratios` prints the pause
// with N connections less the pause with none, divided by N, from the medians. The benchmark's
// own wall clock is the cpx run without connections (package-benchmark keeps a throughput, which
// its JMH export needs, only for a measured stretch under 2 s). See README.md.

enum NetShape {
    static let connections = [0, 100, 1_000]
    /// CRIU as ../shared/peers builds it (no libnftables) locks each connection with two
    /// iptables calls and unlocks it with two more, about 0.1 s a connection: 1,000 connections
    /// freeze it for one to two minutes. It dumps up to 100 connections in every iteration, and
    /// 1,000 in the first only when $CHPOX_BENCH_NET_CRIU_1000 is 1, so that a run stays short.
    static let criuEveryIteration = 100
    static let criuThousand = ProcessInfo.processInfo.environment["CHPOX_BENCH_NET_CRIU_1000"] == "1"
}

enum NetFigure {
    static func metric(_ name: String) -> BenchmarkMetric {
        .custom(name, polarity: .prefersSmaller, useScalingFactor: false)
    }

    /// Per connection count: the same figures.
    struct Count {
        let pause, totalPause, cpxMilliseconds, connections: BenchmarkMetric
        let criuFrozen, criuFreezing, criuMilliseconds: BenchmarkMetric

        init(_ count: Int) {
            func m(_ name: String) -> BenchmarkMetric { metric("net \(count) \(name)") }
            pause = m("pause us"); totalPause = m("total pause us"); cpxMilliseconds = m("cpx ms")
            connections = m("connections checkpointed")
            criuFrozen = m("criu frozen us"); criuFreezing = m("criu freezing us"); criuMilliseconds = m("criu ms")
        }

        var all: [BenchmarkMetric] {
            [pause, totalPause, cpxMilliseconds, connections, criuFrozen, criuFreezing, criuMilliseconds]
        }
    }

    static let counts = Dictionary(uniqueKeysWithValues: NetShape.connections.map { ($0, Count($0)) })
    static let all = NetShape.connections.flatMap { counts[$0]!.all }
}

/// What `cpx --json` said of its generation.
struct CpxFigures {
    var pause = 0, totalPause = 0, milliseconds = 0, connections = -1
}

/// The package's tool `name`: $CHPOX_<NAME>, else beside this executable, where `run-ratios` builds it.
func tool(_ name: String) -> String {
    ProcessInfo.processInfo.environment["CHPOX_" + name.uppercased()] ?? TargetProcess.binDirectory + "/" + name
}

/// The connections to peers outside the tree that `dumpinfo --json` lists in a JSON value.
func outsideConnections(_ value: Any) -> Int {
    if let object = value as? [String: Any] {
        return object.reduce(0) { sum, entry in
            sum
                + (entry.key == "outsideConnections"
                    ? (entry.value as? [Any])?.count ?? 0 : outsideConnections(entry.value))
        }
    }
    return (value as? [Any])?.reduce(0) { $0 + outsideConnections($1) } ?? 0
}

/// `cpx --store … --tcp-established --json PID` in `namespace` into a fresh store, and the
/// connections its generation holds (`dumpinfo --json`).
func checkpoint(_ pid: Int32, in namespace: NetTargetProcess.Namespace, name: String) throws -> CpxFigures {
    let store = Scratch.root + "/\(name)"
    defer { try? FileManager.default.removeItem(atPath: store) }
    let run = try runToEnd(
        namespace.launcher + [tool("cpx"), "--store", store, "--name", "net", "--tcp-established", "--json", "\(pid)"],
        scratch: store)
    guard run.status == 0, let line = run.output.split(separator: "\n").first,
        let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
        let pause = object["pauseMicroseconds"] as? Int
    else {
        throw TargetProcess.TargetError.protocol("cpx of \(pid) failed (exit \(run.status)): \(run.errors.suffix(600))")
    }
    var figures = CpxFigures(pause: pause)
    figures.totalPause = object["totalPauseMicroseconds"] as? Int ?? 0
    figures.milliseconds = object["milliseconds"] as? Int ?? 0
    let shown = try runToEnd(
        [tool("dumpinfo"), "--store", store, "--name", "net", "--generation", "0", "--json"],
        scratch: store + "-dumpinfo")
    if shown.status == 0, let document = try? JSONSerialization.jsonObject(with: Data(shown.output.utf8)) {
        figures.connections = outsideConnections(document)
    }
    return figures
}

let netIterations = 3

/// The iteration running: the first dumps 1,000 connections with CRIU too.
final class IterationCounter: @unchecked Sendable {
    private var count = 0
    func next() -> Int { defer { count += 1 }; return count }
}
let netIteration = IterationCounter()

let benchmarks: @Sendable () -> Void = {
    Benchmark(
        "Network 0-1000 connections",
        configuration: .init(
            metrics: [.wallClock, .throughput] + NetFigure.all, timeUnits: .milliseconds,
            warmupIterations: 0, maxDuration: .seconds(300), maxIterations: netIterations)
    ) { benchmark in
        func measure(_ metric: BenchmarkMetric, _ value: some BinaryInteger) {
            benchmark.measurement(metric, Int(value))
        }
        let iteration = netIteration.next()
        if CriuDump.located == nil { note("net-criu: \(CriuDump.missing)") }
        if !NetShape.criuThousand, iteration == 0 {
            note(
                "net-criu: 1,000 connections not dumped (about 0.1 s a connection with this CRIU's iptables lock); "
                    + "CHPOX_BENCH_NET_CRIU_1000=1 dumps them once")
        }
        let namespace = try NetTargetProcess.Namespace()
        defer { namespace.end() }
        var line: [String] = []
        for count in NetShape.connections {
            let figures = NetFigure.counts[count]!
            let (server, port) = try NetTargetProcess.server(connections: count, in: namespace)
            defer { server.kill() }
            let client = try NetTargetProcess.client(connections: count, port: port, server: server, in: namespace)
            defer { client.kill() }

            if count == 0 { benchmark.startMeasurement() }
            let cpx = try checkpoint(server.pid, in: namespace, name: "net-\(count)-\(iteration)")
            if count == 0 { benchmark.stopMeasurement() }
            measure(figures.pause, cpx.pause)
            measure(figures.totalPause, cpx.totalPause)
            measure(figures.cpxMilliseconds, cpx.milliseconds)
            measure(figures.connections, max(cpx.connections, 0))
            var shown =
                "\(count): cpx pause \(cpx.pause) us total \(cpx.totalPause) us \(cpx.milliseconds) ms "
                + "\(cpx.connections) connections"

            if let criu = CriuDump.located,
                count <= NetShape.criuEveryIteration || (iteration == 0 && NetShape.criuThousand)
            {
                switch criu.dump(
                    server.pid, into: Scratch.root + "/criu-\(count)", options: ["--tcp-established"],
                    launcher: namespace.launcher)
                {
                case .success(let result):
                    measure(figures.criuFrozen, result.frozenMicroseconds)
                    measure(figures.criuFreezing, result.freezingMicroseconds)
                    measure(figures.criuMilliseconds, result.milliseconds)
                    shown += ", criu frozen \(result.frozenMicroseconds) us \(result.milliseconds) ms"
                case .failure(let reason):
                    note("net-criu: \(count) connections: \(reason)")
                }
            }
            line.append(shown)
        }
        note("net-iteration: " + line.joined(separator: "; "))
    }
}
