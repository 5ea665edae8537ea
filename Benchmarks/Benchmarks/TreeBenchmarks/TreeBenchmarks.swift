#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Benchmark
import Foundation
import Incremental
import Store
import TargetProcess

// A tree of 8 processes sharing 256 MiB copy-on-write plus 32 MiB private each (TreeTarget,
// incompressible bytes), checkpointed whole by one Checkpointer on its first process, against
// one 1 GiB process of the same kind, and against `criu dump --leave-running` of each, all in
// the same iteration. Every iteration starts four targets in turn, each killed when done:
//   A  tree: resident memory (smaps_rollup), criu dump, then a chpox full base without
//      pre-copy (stop and copy, as criu) into a fresh store
//   B  tree: a chpox full base with pre-copy (cpx's default) into a fresh store, then every
//      process writes 1% of its pages and a delta generation is taken
//   C, D  the same for one process of 1 GiB
// Figures are custom metrics, ratios computed per iteration in thousandths; `run-ratios`
// prints the tree table from their medians. The benchmark's own wall clock is the tree's delta
// generation. See README.md.

enum TreeShape {
    static let processes = 8
    static let sharedPages = 65_536  // 256 MiB, shared copy-on-write after the forks
    static let privatePages = 8_192  // 32 MiB each
    static let singlePages = 262_144  // 1 GiB, the one process compared with
}

enum TreeFigure {
    static func metric(_ name: String) -> BenchmarkMetric {
        .custom(name, polarity: .prefersSmaller, useScalingFactor: false)
    }

    /// Per shape ("tree", "single"): the same figures.
    struct Shape {
        let processes, rssBytes, pssBytes: BenchmarkMetric
        let fullPause, fullMilliseconds, fullStoreBytes, fullCopied: BenchmarkMetric
        let preCopyPause, preCopyTotalPause: BenchmarkMetric
        let deltaPause, deltaStoreBytes, deltaWritten, deltaDirty: BenchmarkMetric
        let criuFrozen, criuFreezing, criuBytes, criuPages, criuMilliseconds: BenchmarkMetric
        /// store bytes of the base / sum of Rss and / sum of Pss, x1000.
        let storeOverRss, storeOverPss: BenchmarkMetric
        /// chpox / criu, x1000: stop-and-copy pause, pre-copy pause, store bytes.
        let fullOverCriuPause, preCopyOverCriuPause, bytesOverCriu: BenchmarkMetric

        init(_ shape: String) {
            func m(_ name: String) -> BenchmarkMetric { metric("\(shape) \(name)") }
            processes = m("processes"); rssBytes = m("rss bytes"); pssBytes = m("pss bytes")
            fullPause = m("full pause us"); fullMilliseconds = m("full ms"); fullStoreBytes = m("full store bytes")
            fullCopied = m("full copied pages")
            preCopyPause = m("precopy pause us"); preCopyTotalPause = m("precopy total pause us")
            deltaPause = m("delta pause us"); deltaStoreBytes = m("delta store bytes")
            deltaWritten = m("delta written pages"); deltaDirty = m("delta dirty pages")
            criuFrozen = m("criu frozen us"); criuFreezing = m("criu freezing us"); criuBytes = m("criu bytes")
            criuPages = m("criu pages written"); criuMilliseconds = m("criu ms")
            storeOverRss = m("store/rss x1000"); storeOverPss = m("store/pss x1000")
            fullOverCriuPause = m("full/criu pause x1000"); preCopyOverCriuPause = m("precopy/criu pause x1000")
            bytesOverCriu = m("store/criu bytes x1000")
        }

        var all: [BenchmarkMetric] {
            [
                processes, rssBytes, pssBytes, fullPause, fullMilliseconds, fullStoreBytes, fullCopied, preCopyPause,
                preCopyTotalPause,
                deltaPause, deltaStoreBytes, deltaWritten, deltaDirty, criuFrozen, criuFreezing, criuBytes, criuPages,
                criuMilliseconds, storeOverRss, storeOverPss, fullOverCriuPause, preCopyOverCriuPause, bytesOverCriu,
            ]
        }
    }

    static let tree = Shape("tree")
    static let single = Shape("single")
    /// tree / single, x1000.
    static let fullPauseRatio = metric("tree/single full pause x1000")
    static let preCopyPauseRatio = metric("tree/single precopy pause x1000")
    static let deltaPauseRatio = metric("tree/single delta pause x1000")

    static let all = tree.all + single.all + [fullPauseRatio, preCopyPauseRatio, deltaPauseRatio]
}

func ratio1000(_ a: some BinaryInteger, _ b: some BinaryInteger) -> Int {
    b > 0 ? Int((Double(a) / Double(b) * 1000).rounded()) : 0
}

/// What one shape's iteration measured.
struct ShapeRun {
    var processes = 0
    var rss = 0, pss = 0
    var full: Checkpointer.Generation?
    var fullBytes = 0
    var preCopied: Checkpointer.Generation?
    var delta: Checkpointer.Generation?
    var deltaBytes = 0, written = 0
    var criu: CriuDump.Result?
}

/// Runs one shape: targets A and B (or C and D) of the header.
func runShape(
    processes: Int, sharedPages: Int, privatePages: Int, name: String,
    measureDelta: (() throws -> Checkpointer.Generation) throws -> Checkpointer.Generation
) throws -> ShapeRun {
    var run = ShapeRun()
    do {
        let a = try TreeTargetProcess(processes: processes, sharedPages: sharedPages, privatePages: privatePages)
        defer { a.kill() }
        (run.rss, run.pss) = a.residentMemory()
        if let criu = CriuDump.located {
            switch criu.dump(a.pid, into: Scratch.root + "/criu-\(name)") {
            case .success(let result): run.criu = result
            case .failure(let reason): note("tree-criu: \(name): \(reason)")
            }
            sync()  // criu's images are gone, but not their writeback: not into chpox's stop
        }
        let store = try Scratch.freshStore("\(name)-full")
        defer { Scratch.remove(store) }
        var options = Checkpointer.Options(chain: "bench", tracker: nil)
        options.preCopy = false
        let checkpointer = try Checkpointer(pid: a.pid, store: store, options: options)
        defer { checkpointer.stop() }
        let before = Scratch.bytes(under: store.path)
        let full = try checkpointer.checkpoint()
        precondition(full.kind == "full")
        run.fullBytes = Scratch.bytes(under: store.path) - before
        run.full = full
        run.processes = full.processes
    }
    do {
        let b = try TreeTargetProcess(processes: processes, sharedPages: sharedPages, privatePages: privatePages)
        defer { b.kill() }
        let store = try Scratch.freshStore("\(name)-delta")
        defer { Scratch.remove(store) }
        let checkpointer = try Checkpointer(pid: b.pid, store: store, options: .init(chain: "bench", tracker: nil))
        defer { checkpointer.stop() }
        let preCopied = try checkpointer.checkpoint()
        precondition(preCopied.kind == "full")
        run.preCopied = preCopied
        run.written = b.dirtyOnePercent()
        let before = Scratch.bytes(under: store.path)
        let delta = try measureDelta { try checkpointer.checkpoint() }
        precondition(delta.kind == "delta")
        run.deltaBytes = Scratch.bytes(under: store.path) - before
        run.delta = delta
    }
    return run
}

let treeIterations = 3

let benchmarks: @Sendable () -> Void = {
    TargetProcess.locateInjector()

    Benchmark(
        "Tree 8 processes vs 1 GiB",
        configuration: .init(
            metrics: [.wallClock, .throughput] + TreeFigure.all, timeUnits: .milliseconds,
            warmupIterations: 0, maxDuration: .seconds(600), maxIterations: treeIterations)
    ) { benchmark in
        func measure(_ metric: BenchmarkMetric, _ value: some BinaryInteger) {
            benchmark.measurement(metric, Int(value))
        }
        if CriuDump.located == nil { note("tree-criu: \(CriuDump.missing)") }

        let tree = try runShape(
            processes: TreeShape.processes, sharedPages: TreeShape.sharedPages,
            privatePages: TreeShape.privatePages, name: "tree"
        ) { take in
            // The benchmark's own wall clock: the tree's delta generation (see CheckpointBenchmarks).
            benchmark.startMeasurement()
            defer { benchmark.stopMeasurement() }
            return try take()
        }
        let single = try runShape(processes: 1, sharedPages: TreeShape.singlePages, privatePages: 0, name: "single") {
            try $0()
        }

        for (figures, run) in [(TreeFigure.tree, tree), (TreeFigure.single, single)] {
            guard let full = run.full, let preCopied = run.preCopied, let delta = run.delta else { continue }
            measure(figures.processes, run.processes)
            measure(figures.rssBytes, run.rss)
            measure(figures.pssBytes, run.pss)
            measure(figures.fullPause, full.pauseMicroseconds)
            measure(figures.fullMilliseconds, full.milliseconds)
            measure(figures.fullStoreBytes, run.fullBytes)
            measure(figures.fullCopied, full.copiedPages)
            measure(figures.preCopyPause, preCopied.pauseMicroseconds)
            measure(figures.preCopyTotalPause, preCopied.totalPauseMicroseconds)
            measure(figures.deltaPause, delta.pauseMicroseconds)
            measure(figures.deltaStoreBytes, run.deltaBytes)
            measure(figures.deltaWritten, run.written)
            measure(figures.deltaDirty, delta.dirtyPages)
            measure(figures.storeOverRss, ratio1000(run.fullBytes, run.rss))
            measure(figures.storeOverPss, ratio1000(run.fullBytes, run.pss))
            if let criu = run.criu {
                measure(figures.criuFrozen, criu.frozenMicroseconds)
                measure(figures.criuFreezing, criu.freezingMicroseconds)
                measure(figures.criuBytes, criu.imageBytes)
                measure(figures.criuPages, criu.pagesWritten)
                measure(figures.criuMilliseconds, criu.milliseconds)
                measure(figures.fullOverCriuPause, ratio1000(full.pauseMicroseconds, criu.frozenMicroseconds))
                measure(figures.preCopyOverCriuPause, ratio1000(preCopied.pauseMicroseconds, criu.frozenMicroseconds))
                measure(figures.bytesOverCriu, ratio1000(run.fullBytes, criu.imageBytes))
            }
        }
        if let t = tree.full, let s = single.full {
            measure(TreeFigure.fullPauseRatio, ratio1000(t.pauseMicroseconds, s.pauseMicroseconds))
        }
        if let t = tree.preCopied, let s = single.preCopied {
            measure(TreeFigure.preCopyPauseRatio, ratio1000(t.pauseMicroseconds, s.pauseMicroseconds))
        }
        if let t = tree.delta, let s = single.delta {
            measure(TreeFigure.deltaPauseRatio, ratio1000(t.pauseMicroseconds, s.pauseMicroseconds))
        }

        for (name, run) in [("tree", tree), ("single", single)] {
            let criu =
                run.criu.map { "criu frozen \($0.frozenMicroseconds) us \($0.imageBytes) B \($0.milliseconds) ms" }
                ?? "no criu"
            note(
                "tree-iteration: \(name) \(run.processes) processes rss \(run.rss) B pss \(run.pss) B; "
                    + "full pause \(run.full?.pauseMicroseconds ?? -1) us copied \(run.full?.copiedPages ?? 0) pages +\(run.fullBytes) B in \(run.full?.milliseconds ?? -1) ms; "
                    + "pre-copy pause \(run.preCopied?.pauseMicroseconds ?? -1) us total \(run.preCopied?.totalPauseMicroseconds ?? -1) us; "
                    + "delta pause \(run.delta?.pauseMicroseconds ?? -1) us +\(run.deltaBytes) B written \(run.written) "
                    + "dirty \(run.delta?.dirtyPages ?? 0); \(criu)")
        }
    }
}
