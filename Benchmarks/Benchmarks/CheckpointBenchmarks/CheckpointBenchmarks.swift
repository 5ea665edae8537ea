#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Benchmark
import Foundation
import Incremental
import TargetMemory
import TargetProcess
import Store

// Live checkpoints of a 1 GiB mixed DirtyTarget (a third each zero, text and random pages),
// each figure read against a baseline measured in the same iteration: process_vm_readv of the
// target's resident pages plus raw LZ4 of them in the Store's 64 KiB frames. Every iteration
// starts three targets in turn (all started alike, so they hold the same bytes):
//   A  baseline; full base without pre-copy into store 1 (chain "bench")
//   B  full base with pre-copy into store 2; then `d 2621` (1%) and a delta generation
//   C  full base into store 1 under chain "twin": what an identical process adds
// Figures are custom metrics (one name each: the JMH export keys them by name alone); ratios
// are computed per iteration, in thousandths. The benchmark's wall clock is the 1% delta
// generation alone. `run-ratios` prints the checkpoint table from
// their medians. See README.md.

enum Mixed {
    static let pages = 262_144  // 1 GiB of 4 KiB pages
    static let dirtyPages = pages / 100  // 2621: the 1% delta
}

enum CheckpointFigure {
    static func metric(_ name: String, _ polarity: BenchmarkMetric.Polarity = .prefersSmaller) -> BenchmarkMetric {
        .custom(name, polarity: polarity, useScalingFactor: false)
    }

    // Baseline (target A): resident pages found (PAGEMAP_SCAN), read with process_vm_readv
    // in 64 MiB batches, LZ4-compressed in 16-page frames.
    static let residentPages = metric("ckpt resident pages")
    static let baseline = metric("ckpt baseline us")
    static let baselineRead = metric("ckpt baseline read us")
    static let baselineLZ4Bytes = metric("ckpt baseline lz4 bytes")
    /// Not a goal's baseline: the resident pages read at once into a new buffer of their size,
    /// as the final stop of a base without pre-copy copies them (the floor under its pause).
    static let baselineReadAtOnce = metric("ckpt baseline read at once us")
    // b. Full base without pre-copy (target A, store 1).
    static let fullMilliseconds = metric("ckpt full ms")
    static let fullPause = metric("ckpt full pause us")
    static let fullTotalPause = metric("ckpt full total pause us")
    static let fullCopied = metric("ckpt full copied pages")
    static let fullStoreBytes = metric("ckpt full store bytes")
    /// (resident bytes / generation time) / (resident bytes / baseline time), x1000.
    static let fullThroughputRatio = metric("ckpt full throughput ratio x1000", .prefersLarger)
    // c. Full base with pre-copy (target B, store 2).
    static let preCopyMilliseconds = metric("ckpt precopy ms")
    static let preCopyPause = metric("ckpt precopy pause us")
    static let preCopyTotalPause = metric("ckpt precopy total pause us")
    static let preCopyRounds = metric("ckpt precopy rounds")
    static let preCopyCopied = metric("ckpt precopy copied pages")
    // d. 1% delta (target B, store 2, after `d 2621`).
    static let deltaMilliseconds = metric("ckpt delta ms")
    static let deltaPause = metric("ckpt delta pause us")
    static let deltaTotalPause = metric("ckpt delta total pause us")
    static let deltaRounds = metric("ckpt delta rounds")
    static let deltaCopied = metric("ckpt delta copied pages")
    static let deltaDirty = metric("ckpt delta dirty pages")
    static let deltaChanged = metric("ckpt delta changed pages")
    static let deltaStoreBytes = metric("ckpt delta store bytes")
    static let deltaLZ4Bytes = metric("ckpt delta lz4 bytes")
    /// delta pause / full base pause without pre-copy, x1000.
    static let deltaPauseRatio = metric("ckpt delta pause ratio x1000")
    /// store bytes added by the delta / LZ4 bytes of the changed pages, x1000.
    static let deltaBytesRatio = metric("ckpt delta bytes ratio x1000")
    /// pre-copy base pause / delta pause, x1000.
    static let preCopyPauseRatio = metric("ckpt precopy/delta pause x1000")
    // e. An identical process (target C) into store 1 under another chain.
    static let twinMilliseconds = metric("ckpt twin ms")
    static let twinStoreBytes = metric("ckpt twin store bytes")
    static let twinNewChunks = metric("ckpt twin new chunks")
    /// store bytes added by the twin / store bytes added by the first base, x1000.
    static let twinBytesRatio = metric("ckpt twin bytes ratio x1000")

    static let all = [
        residentPages, baseline, baselineRead, baselineLZ4Bytes, baselineReadAtOnce,
        fullMilliseconds, fullPause, fullTotalPause, fullCopied, fullStoreBytes, fullThroughputRatio,
        preCopyMilliseconds, preCopyPause, preCopyTotalPause, preCopyRounds, preCopyCopied,
        deltaMilliseconds, deltaPause, deltaTotalPause, deltaRounds, deltaCopied, deltaDirty, deltaChanged,
        deltaStoreBytes, deltaLZ4Bytes, deltaPauseRatio, deltaBytesRatio, preCopyPauseRatio,
        twinMilliseconds, twinStoreBytes, twinNewChunks, twinBytesRatio,
    ]
}

/// Checkpoints `target` once into `store` (a new checkpointer, stopped afterwards); returns
/// the generation and the bytes it added under the store's directory.
func checkpointOnce(
    _ target: TargetProcess, _ store: Store, chain: String, preCopy: Bool
) throws -> (Checkpointer.Generation, Int) {
    var options = Checkpointer.Options(chain: chain, tracker: nil)
    options.preCopy = preCopy
    let checkpointer = try Checkpointer(pid: target.pid, store: store, options: options)
    defer { checkpointer.stop() }
    let before = Scratch.bytes(under: store.path)
    let generation = try checkpointer.checkpoint()
    return (generation, Scratch.bytes(under: store.path) - before)
}

func ratio1000(_ a: Double, _ b: Double) -> Int { b > 0 ? Int((a / b * 1000).rounded()) : 0 }

let checkpointIterations = 3

let benchmarks: @Sendable () -> Void = {
    TargetProcess.locateInjector()

    Benchmark(
        "Checkpoint 1 GiB mixed",
        configuration: .init(
            metrics: [.wallClock, .throughput] + CheckpointFigure.all, timeUnits: .milliseconds,
            warmupIterations: 0, maxDuration: .seconds(300), maxIterations: checkpointIterations)
    ) { benchmark in
        func measure(_ metric: BenchmarkMetric, _ value: some BinaryInteger) {
            benchmark.measurement(metric, Int(value))
        }

        // Target A: the baseline, then a full base without pre-copy.
        let a = try TargetProcess(pages: Mixed.pages, mixed: true)
        defer { a.kill() }
        let memoryA = TargetMemory(target: a)
        var compressor = FrameCompressor()
        defer { compressor.deallocate() }
        var residentPages = 0
        var readTime = 0
        let (_, baselineTime) = try microseconds {
            let resident = try memoryA.resident()
            residentPages = resident.reduce(0) { $0 + Int($1.pageCount) }
            let start = ContinuousClock.now
            var lz4Time = Duration.zero
            try memoryA.read(resident) { _, pages in
                let compressing = ContinuousClock.now
                compressor.compress(pages)
                lz4Time += ContinuousClock.now - compressing
            }
            let (seconds, attoseconds) = (ContinuousClock.now - start - lz4Time).components
            readTime = Int(seconds) * 1_000_000 + Int(attoseconds / 1_000_000_000_000)
        }
        let residentBytes = Double(residentPages) * 4096
        measure(CheckpointFigure.residentPages, residentPages)
        measure(CheckpointFigure.baseline, baselineTime)
        measure(CheckpointFigure.baselineRead, readTime)
        measure(CheckpointFigure.baselineLZ4Bytes, compressor.bytes)
        let (_, readAtOnceTime) = try microseconds { try memoryA.readAtOnce(memoryA.resident()) }
        measure(CheckpointFigure.baselineReadAtOnce, readAtOnceTime)

        let store1 = try Scratch.freshStore("store1")
        defer { Scratch.remove(store1) }
        let (full, fullBytes) = try checkpointOnce(a, store1, chain: "bench", preCopy: false)
        precondition(full.kind == "full")
        a.kill()
        measure(CheckpointFigure.fullMilliseconds, full.milliseconds)
        measure(CheckpointFigure.fullPause, full.pauseMicroseconds)
        measure(CheckpointFigure.fullTotalPause, full.totalPauseMicroseconds)
        measure(CheckpointFigure.fullCopied, full.copiedPages)
        measure(CheckpointFigure.fullStoreBytes, fullBytes)
        // Throughputs over the same resident bytes: the ratio is baseline time / generation time.
        measure(
            CheckpointFigure.fullThroughputRatio,
            ratio1000(residentBytes / Double(max(full.milliseconds, 1)), residentBytes / (Double(baselineTime) / 1000)))

        // Target B: a full base with pre-copy into a new store, then the 1% delta.
        let b = try TargetProcess(pages: Mixed.pages, mixed: true)
        defer { b.kill() }
        let store2 = try Scratch.freshStore("store2")
        defer { Scratch.remove(store2) }
        let checkpointer = try Checkpointer(pid: b.pid, store: store2, options: .init(chain: "bench", tracker: nil))
        defer { checkpointer.stop() }
        let preCopied = try checkpointer.checkpoint()
        precondition(preCopied.kind == "full")
        measure(CheckpointFigure.preCopyMilliseconds, preCopied.milliseconds)
        measure(CheckpointFigure.preCopyPause, preCopied.pauseMicroseconds)
        measure(CheckpointFigure.preCopyTotalPause, preCopied.totalPauseMicroseconds)
        measure(CheckpointFigure.preCopyRounds, preCopied.preCopyRounds)
        measure(CheckpointFigure.preCopyCopied, preCopied.copiedPages)

        let memoryB = TargetMemory(target: b)
        let before = try memoryB.hashes()
        let storeBefore = Scratch.bytes(under: store2.path)
        b.dirty(Mixed.dirtyPages)
        // The benchmark's own wall clock (and throughput) is this generation alone: package-
        // benchmark records throughput only for a measured stretch under 2 s, and the JMH
        // export run-ratios reads leaves out a benchmark without it.
        benchmark.startMeasurement()
        let delta = try checkpointer.checkpoint()
        benchmark.stopMeasurement()
        precondition(delta.kind == "delta")
        let deltaBytes = Scratch.bytes(under: store2.path) - storeBefore
        let changed = try memoryB.changed(since: before)
        var deltaCompressor = FrameCompressor()
        defer { deltaCompressor.deallocate() }
        changed.bytes.withUnsafeBytes { deltaCompressor.compress($0) }
        checkpointer.stop()
        b.kill()
        measure(CheckpointFigure.deltaMilliseconds, delta.milliseconds)
        measure(CheckpointFigure.deltaPause, delta.pauseMicroseconds)
        measure(CheckpointFigure.deltaTotalPause, delta.totalPauseMicroseconds)
        measure(CheckpointFigure.deltaRounds, delta.preCopyRounds)
        measure(CheckpointFigure.deltaCopied, delta.copiedPages)
        measure(CheckpointFigure.deltaDirty, delta.dirtyPages)
        measure(CheckpointFigure.deltaChanged, changed.count)
        measure(CheckpointFigure.deltaStoreBytes, deltaBytes)
        measure(CheckpointFigure.deltaLZ4Bytes, deltaCompressor.bytes)
        measure(
            CheckpointFigure.deltaPauseRatio, ratio1000(Double(delta.pauseMicroseconds), Double(full.pauseMicroseconds))
        )
        measure(CheckpointFigure.deltaBytesRatio, ratio1000(Double(deltaBytes), Double(deltaCompressor.bytes)))
        measure(
            CheckpointFigure.preCopyPauseRatio,
            ratio1000(Double(preCopied.pauseMicroseconds), Double(delta.pauseMicroseconds)))

        // Target C: the same process again, into store 1 beside A's base.
        let c = try TargetProcess(pages: Mixed.pages, mixed: true)
        defer { c.kill() }
        let (twin, twinBytes) = try checkpointOnce(c, store1, chain: "twin", preCopy: true)
        precondition(twin.kind == "full")
        c.kill()
        measure(CheckpointFigure.twinMilliseconds, twin.milliseconds)
        measure(CheckpointFigure.twinStoreBytes, twinBytes)
        measure(CheckpointFigure.twinNewChunks, twin.newChunks)
        measure(CheckpointFigure.twinBytesRatio, ratio1000(Double(twinBytes), Double(fullBytes)))

        note(
            "checkpoint-iteration: resident \(residentPages) pages, baseline \(baselineTime / 1000) ms (read \(readTime / 1000) ms, "
                + "at once \(readAtOnceTime / 1000) ms), "
                + "lz4 \(compressor.bytes) B; full \(full.milliseconds) ms pause \(full.pauseMicroseconds) us +\(fullBytes) B; "
                + "pre-copy \(preCopied.milliseconds) ms pause \(preCopied.pauseMicroseconds) us total \(preCopied.totalPauseMicroseconds) us "
                + "rounds \(preCopied.preCopyRounds); delta \(delta.milliseconds) ms pause \(delta.pauseMicroseconds) us total \(delta.totalPauseMicroseconds) us "
                + "copied \(delta.copiedPages) changed \(changed.count) +\(deltaBytes) B lz4 \(deltaCompressor.bytes) B; "
                + "twin +\(twinBytes) B new chunks \(twin.newChunks)")
    }
}
