#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Benchmark
import Foundation
import Incremental
import TargetProcess
import Store

// Restarts, each figure read against a baseline measured in the same iteration. Two benchmarks:
//   Restart 1 GiB mixed    a full base generation of a 1 GiB mixed DirtyTarget (a third each
//                          zero, text and random), taken once per run; each iteration times
//                          `store.reader().readPages(map)` over its page map (the baseline),
//                          the same pages copied, then written through /proc/self/mem, into a
//                          fresh mapping (information: the floors under the restart's fill),
//                          then `Restorer.restart()`, and kills the restarted process.
//   Restart rebuild depth 1-1000
//                          `store.pageMap(chain:generation:)` of the newest generation of chains
//                          1, 100 and 1,000 generations deep (a 262144-page base, then deltas
//                          each rewriting 1% of the pages at random), written once per run
//                          straight through GenerationWriter, no process; then `dumpinfo
//                          --diff` (GenerationDiff.load) of the deepest chain's two newest
//                          generations and of its first and newest, against its rebuild.
// Figures are custom metrics (one name each: the JMH export keys them by name alone); ratios
// are computed per iteration, in thousandths. `run-ratios` prints the restart table from their
// medians. See README.md.

enum Mixed {
    static let pages = 262_144  // 1 GiB of 4 KiB pages
}

enum RestartFigure {
    static func metric(_ name: String, _ polarity: BenchmarkMetric.Polarity = .prefersSmaller) -> BenchmarkMetric {
        .custom(name, polarity: polarity, useScalingFactor: false)
    }

    // Once per run: the generation restarted.
    static let checkpointMilliseconds = metric("restart checkpoint ms")
    static let mapPages = metric("restart map pages")
    static let zeroPages = metric("restart zero pages")
    static let mappings = metric("restart mappings")
    // Every iteration.
    /// Baseline: `store.reader().readPages(map)`, the visitor reading one word per page.
    static let read = metric("restart read us")
    /// Information: readPages again, each non-zero page written with pwrite through
    /// /proc/self/mem into a fresh 1 GiB anonymous mapping, as the restart filled the stub
    /// before it wrote in batches (PageFillPhase).
    static let readWrite = metric("restart read+write us")
    /// Information: the same with memcpy instead of pwrite (readPages and page faults).
    static let readCopy = metric("restart read+copy us")
    /// `Restorer.restart()`: stub start, mappings, fill, descriptors, registers; returns once
    /// the process runs again.
    static let restart = metric("restart us")
    static let pagesWritten = metric("restart pages written")
    /// 1 when the restarted process got the original pid back.
    static let samePid = metric("restart same pid", .prefersLarger)
    /// restart / read, x1000.
    static let ratio = metric("restart/read x1000")
    /// read+write / read and read+copy / read, x1000.
    static let readWriteRatio = metric("restart read+write/read x1000")
    static let readCopyRatio = metric("restart read+copy/read x1000")

    static let all = [
        checkpointMilliseconds, mapPages, zeroPages, mappings, read, readWrite, readCopy, restart, pagesWritten,
        samePid, ratio, readWriteRatio, readCopyRatio,
    ]
}

enum RebuildFigure {
    static let depths = [1, 100, 1000]
    static let basePages = 262_144  // 1 GiB
    static let deltaPages = basePages / 100  // 2621: 1%

    static func metric(_ name: String, _ polarity: BenchmarkMetric.Polarity = .prefersSmaller) -> BenchmarkMetric {
        .custom(name, polarity: polarity, useScalingFactor: false)
    }

    /// `pageMap` of the newest generation of the chain `depth` generations deep.
    static let rebuild = Dictionary(uniqueKeysWithValues: depths.map { ($0, metric("rebuild depth \($0) us")) })
    /// Its time / depth 1's, x1000.
    static let ratio = Dictionary(
        uniqueKeysWithValues: depths.dropFirst().map { ($0, metric("rebuild depth \($0)/1 x1000")) })
    /// Once per run: writing the three chains.
    static let buildMilliseconds = metric("rebuild chains build ms")
    static let mapPages = metric("rebuild map pages")
    static let snapshots = metric("rebuild snapshots")
    /// Information: `store.chain(_:)` of the deepest chain alone (its chain file, every
    /// generation's entry), part of every rebuild of it.
    static let chainFile = metric("rebuild chain file depth 1000 us")
    /// Information: `pageMap` of the deepest chain's newest generation that has a snapshot
    /// (the snapshot alone, no delta), and how many generations the newest is past it.
    static let snapshotRebuild = metric("rebuild snapshot alone us")
    static let deltasPastSnapshot = metric("rebuild deltas past snapshot")

    /// `dumpinfo --diff` of the deepest chain: `GenerationDiff.load` of its two newest
    /// generations (2,621 pages apart) and of its first and newest (every page), each / the
    /// two `pageMap` rebuilds it needs, timed in the same iteration, x1000 (goal for adjacent
    /// generations < 2: the comparison costs less than the rebuilds; first-newest, where every
    /// page changed and is listed, is information).
    static let diffAdjacent = metric("inspect diff adjacent us")
    static let diffWhole = metric("inspect diff first-newest us")
    static let diffAdjacentRatio = metric("inspect diff adjacent/rebuilds x1000")
    static let diffWholeRatio = metric("inspect diff first-newest/rebuilds x1000")
    static let rebuildsAdjacent = metric("inspect rebuilds adjacent us")
    static let rebuildsWhole = metric("inspect rebuilds first-newest us")
    static let diffAdjacentPages = metric("inspect diff adjacent pages")
    static let diffWholePages = metric("inspect diff first-newest pages")

    static let all =
        depths.map { rebuild[$0]! } + depths.dropFirst().map { ratio[$0]! }
        + [
            buildMilliseconds, mapPages, snapshots, chainFile, snapshotRebuild, deltasPastSnapshot,
            diffAdjacent, diffWhole, diffAdjacentRatio, diffWholeRatio, diffAdjacentPages, diffWholePages,
            rebuildsAdjacent, rebuildsWhole,
        ]
}

func ratio1000(_ a: Int, _ b: Int) -> Int { b > 0 ? Int((Double(a) / Double(b) * 1000).rounded()) : 0 }

/// The generation the restart benchmark restarts: a full base of a 1 GiB mixed target, taken
/// in its first iteration (the target is killed at once, freeing its pid) and kept for the run.
final class RestartSubject: @unchecked Sendable {
    let store: Store
    let generation: UInt64
    let image: ProcessImage
    let map: PageMap
    let checkpointMilliseconds: Int
    /// The region the fill floor writes into: the target's 1 GiB, wherever it was.
    let base: UInt64

    init() throws {
        let target = try TargetProcess(pages: Mixed.pages, mixed: true)
        defer { target.kill() }
        store = try Scratch.freshStore("restart")
        let checkpointer = try Checkpointer(pid: target.pid, store: store, options: .init(chain: "bench", tracker: nil))
        let taken: Checkpointer.Generation
        do {
            defer { checkpointer.stop() }
            taken = try checkpointer.checkpoint()
        }
        precondition(taken.kind == "full")
        // Its pid is free again before any restart.
        target.kill()
        generation = taken.generation
        checkpointMilliseconds = Int(taken.milliseconds)
        base = target.base
        let manifest = try store.manifest(chain: "bench", generation: generation)
        image = try ProcessImage(decoding: manifest.metadata, generation: generation)
        map = try store.pageMap(chain: "bench", generation: generation)
    }
}

/// Reads every page of `map` back from `store` (a new reader, as a restart makes), touching
/// one word of each; returns the checksum so the reads cannot be optimised away.
func readBack(_ store: Store, _ map: PageMap) throws -> UInt64 {
    var sum: UInt64 = 0
    try store.reader().readPages(map) { entry, bytes in
        sum &+= bytes.load(fromByteOffset: 8, as: UInt64.self) ^ entry.page
    }
    return sum
}

/// The restart's fill without the restart: readPages, then every page that is not zero written
/// into a fresh anonymous mapping of the target's size, at the page's offset from the target's
/// region (pages outside that region are skipped: the target's own stack, heap and libraries
/// are a few hundred pages), with one pwrite through /proc/self/mem each as the restart does
/// (`procMem`), or with memcpy: the page faults alone.
func readAndWrite(_ store: Store, _ map: PageMap, regionBase: UInt64, procMem: Bool) throws -> Int {
    let size = Mixed.pages * 4096
    guard let region = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
        region != MAP_FAILED
    else { fatalError("mmap: \(String(cString: strerror(errno)))") }
    defer { munmap(region, size) }
    let fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC)
    precondition(fd >= 0, "open /proc/self/mem: \(String(cString: strerror(errno)))")
    defer { close(fd) }
    let firstPage = regionBase / 4096
    let address = UInt64(UInt(bitPattern: region))
    var written = 0
    try store.reader().readPages(map) { entry, bytes in
        guard entry.chunk != .zeroPage, entry.page >= firstPage, entry.page < firstPage + UInt64(Mixed.pages) else {
            return
        }
        let offset = address + (entry.page - firstPage) * 4096
        written += 1
        guard procMem else {
            UnsafeMutableRawPointer(bitPattern: UInt(offset))!.copyMemory(
                from: bytes.baseAddress!, byteCount: bytes.count)
            return
        }
        let done = pwrite(fd, bytes.baseAddress, bytes.count, off_t(Int64(bitPattern: offset)))
        precondition(done == bytes.count, "pwrite /proc/self/mem: \(String(cString: strerror(errno)))")
    }
    return written
}

/// Three chains in one store, written straight through GenerationWriter: "depth1" a 262144-page (1 GiB)
/// base; "depth100" and "depth1000" the same base, then deltas that each rewrite 2621 (1%) distinct
/// random pages (a seeded SplitMix64) with contents no generation had before (page number and
/// generation in the first 16 bytes, the rest a constant: LZ4 shrinks them to a few dozen
/// bytes, so the chains cost little disk; a rebuild never looks at contents).
final class RebuildChains: @unchecked Sendable {
    let store: Store
    /// The newest generation of each chain, by depth.
    var newest: [Int: UInt64] = [:]
    var buildMilliseconds = 0
    var snapshots = 0
    /// The deepest chain's newest generation with a snapshot beside it.
    var snapshotGeneration: UInt64 = 0

    init() throws {
        store = try Scratch.freshStore("rebuild")
        let start = ContinuousClock.now
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { page.deallocate() }
        page.initializeMemory(as: UInt8.self, repeating: 0x5A)
        func put(_ writer: GenerationWriter, _ number: UInt64, stamp: UInt64) throws {
            page.storeBytes(of: number, toByteOffset: 0, as: UInt64.self)
            page.storeBytes(of: stamp, toByteOffset: 8, as: UInt64.self)
            try writer.put(firstPage: number, contents: UnsafeRawBufferPointer(page))
        }
        let first: UInt64 = 0x10_0000  // page numbers as a process's would be: the base at 4 GiB
        for depth in RebuildFigure.depths {
            let chain = "depth\(depth)"
            let writer = try store.beginGeneration(chain: chain)
            for k in 0..<UInt64(RebuildFigure.basePages) { try put(writer, first + k, stamp: 0) }
            newest[depth] = try writer.commit().generation
        }
        var random = SplitMix64(seed: 0x5EED_C4B0)
        var chosen = Set<UInt64>()
        for step in 1..<UInt64(RebuildFigure.depths.max()!) {
            chosen.removeAll(keepingCapacity: true)
            while chosen.count < RebuildFigure.deltaPages {
                chosen.insert(random.next() % UInt64(RebuildFigure.basePages))
            }
            let pages = chosen.sorted()
            for depth in RebuildFigure.depths where UInt64(depth) > step {
                let writer = try store.beginGeneration(chain: "depth\(depth)")
                for k in pages { try put(writer, first + k, stamp: step) }
                newest[depth] = try writer.commit().generation
            }
        }
        buildMilliseconds = Int((ContinuousClock.now - start) / .milliseconds(1))
        snapshots = Scratch.count(in: "\(store.path)/snapshots")
        let names = Set((try? FileManager.default.contentsOfDirectory(atPath: "\(store.path)/snapshots")) ?? [])
        let deepest = try store.chain("depth\(RebuildFigure.depths.max()!)")
        snapshotGeneration = deepest.entries.last { names.contains("\($0.manifest.hex).map") }?.generation ?? 0
    }
}

let restartIterations = 5
let rebuildIterations = 15

let benchmarks: @Sendable () -> Void = {
    TargetProcess.locateInjector()
    TargetProcess.locateRestoreStub()

    nonisolated(unsafe) var subject: RestartSubject?
    Benchmark(
        "Restart 1 GiB mixed",
        configuration: .init(
            metrics: [.wallClock, .throughput] + RestartFigure.all, timeUnits: .milliseconds,
            warmupIterations: 0, maxDuration: .seconds(300), maxIterations: restartIterations)
    ) { benchmark in
        func measure(_ metric: BenchmarkMetric, _ value: some BinaryInteger) {
            benchmark.measurement(metric, Int(value))
        }

        if subject == nil {
            let made = try RestartSubject()
            subject = made
            measure(RestartFigure.checkpointMilliseconds, made.checkpointMilliseconds)
            measure(RestartFigure.mapPages, made.map.pages.count)
            measure(RestartFigure.zeroPages, made.map.pages.reduce(0) { $0 + ($1.chunk == .zeroPage ? 1 : 0) })
            measure(RestartFigure.mappings, made.image.mappings.count)
        }
        let s = subject!

        // The benchmark's own wall clock (and throughput) is the baseline read: package-benchmark
        // records throughput only for a measured stretch under 2 s, and the JMH export run-ratios
        // reads leaves out a benchmark without it.
        benchmark.startMeasurement()
        let (sum, readTime) = try microseconds { try readBack(s.store, s.map) }
        benchmark.stopMeasurement()
        blackHole(sum)
        let (_, readCopyTime) = try microseconds {
            try readAndWrite(s.store, s.map, regionBase: s.base, procMem: false)
        }
        let (filled, readWriteTime) = try microseconds {
            try readAndWrite(s.store, s.map, regionBase: s.base, procMem: true)
        }

        let restorer = Restorer(image: s.image, map: s.map, store: s.store, generation: s.generation)
        let (outcome, restartTime) = try microseconds { try restorer.restart() }
        // Its stdio are this process's now: nothing to say to it; it is ours to kill.
        try? outcome.child.send(SIGKILL)
        _ = try? outcome.child.wait()

        measure(RestartFigure.read, readTime)
        measure(RestartFigure.readWrite, readWriteTime)
        measure(RestartFigure.readCopy, readCopyTime)
        measure(RestartFigure.restart, restartTime)
        measure(RestartFigure.pagesWritten, outcome.pagesWritten)
        measure(RestartFigure.samePid, outcome.pid == outcome.originalPid ? 1 : 0)
        measure(RestartFigure.ratio, ratio1000(restartTime, readTime))
        measure(RestartFigure.readWriteRatio, ratio1000(readWriteTime, readTime))
        measure(RestartFigure.readCopyRatio, ratio1000(readCopyTime, readTime))
        note(
            "restart-iteration: read \(readTime / 1000) ms, read+copy \(readCopyTime / 1000) ms, read+write \(readWriteTime / 1000) ms (\(filled) pages), "
                + "restart \(restartTime / 1000) ms (\(outcome.pagesWritten) pages written, \(outcome.mappings) mappings, "
                + "pid \(outcome.pid)\(outcome.pid == outcome.originalPid ? " same" : ", was \(outcome.originalPid)")); "
                + "map \(s.map.pages.count) pages, checkpoint \(s.checkpointMilliseconds) ms, store \(Scratch.bytes(under: s.store.path) >> 20) MiB"
        )
    }

    nonisolated(unsafe) var chains: RebuildChains?
    Benchmark(
        "Restart rebuild depth 1-1000",
        configuration: .init(
            metrics: [.wallClock, .throughput] + RebuildFigure.all, timeUnits: .microseconds,
            warmupIterations: 1, maxDuration: .seconds(300), maxIterations: rebuildIterations)
    ) { benchmark in
        func measure(_ metric: BenchmarkMetric, _ value: some BinaryInteger) {
            benchmark.measurement(metric, Int(value))
        }

        if chains == nil {
            let made = try RebuildChains()
            chains = made
            note(
                "rebuild-chains: \(RebuildFigure.depths.map { "depth\($0) newest generation \(made.newest[$0]!)" }.joined(separator: ", ")); "
                    + "written in \(made.buildMilliseconds) ms, \(made.snapshots) snapshots, store \(Scratch.bytes(under: made.store.path) >> 20) MiB"
            )
        }
        let c = chains!
        measure(RebuildFigure.buildMilliseconds, c.buildMilliseconds)
        measure(RebuildFigure.snapshots, c.snapshots)
        var times: [Int: Int] = [:]
        for depth in RebuildFigure.depths {
            let chain = "depth\(depth)"
            let generation = c.newest[depth]!
            if depth == RebuildFigure.depths.last! { benchmark.startMeasurement() }
            let (map, time) = try microseconds { try c.store.pageMap(chain: chain, generation: generation) }
            if depth == RebuildFigure.depths.last! { benchmark.stopMeasurement() }
            precondition(map.pages.count == RebuildFigure.basePages)
            times[depth] = time
            measure(RebuildFigure.rebuild[depth]!, time)
            if depth == RebuildFigure.depths.first! { measure(RebuildFigure.mapPages, map.pages.count) }
        }
        let deepest = "depth\(RebuildFigure.depths.last!)"
        let (_, snapshotTime) = try microseconds {
            try c.store.pageMap(chain: deepest, generation: c.snapshotGeneration)
        }
        measure(RebuildFigure.snapshotRebuild, snapshotTime)
        measure(RebuildFigure.deltasPastSnapshot, c.newest[RebuildFigure.depths.last!]! - c.snapshotGeneration)
        let (_, chainTime) = try microseconds { try c.store.chain("depth\(RebuildFigure.depths.last!)") }
        measure(RebuildFigure.chainFile, chainTime)
        for depth in RebuildFigure.depths.dropFirst() {
            measure(RebuildFigure.ratio[depth]!, ratio1000(times[depth]!, times[RebuildFigure.depths.first!]!))
        }
        let newest = c.newest[RebuildFigure.depths.last!]!
        func rebuilds(_ a: UInt64, _ b: UInt64) throws -> Int {
            try microseconds { try c.store.pageMap(chain: deepest, generation: a) }.1
                + microseconds { try c.store.pageMap(chain: deepest, generation: b) }.1
        }
        let adjacentRebuilds = try rebuilds(newest - 1, newest)
        let (adjacent, adjacentTime) = try microseconds {
            try GenerationDiff.load(c.store, chain: deepest, from: newest - 1, to: newest)
        }
        let wholeRebuilds = try rebuilds(0, newest)
        let (whole, wholeTime) = try microseconds {
            try GenerationDiff.load(c.store, chain: deepest, from: 0, to: newest)
        }
        measure(RebuildFigure.rebuildsAdjacent, adjacentRebuilds)
        measure(RebuildFigure.rebuildsWhole, wholeRebuilds)
        measure(RebuildFigure.diffAdjacent, adjacentTime)
        measure(RebuildFigure.diffWhole, wholeTime)
        measure(RebuildFigure.diffAdjacentRatio, ratio1000(adjacentTime, adjacentRebuilds))
        measure(RebuildFigure.diffWholeRatio, ratio1000(wholeTime, wholeRebuilds))
        measure(RebuildFigure.diffAdjacentPages, adjacent.changedPages)
        measure(RebuildFigure.diffWholePages, whole.changedPages)
        note(
            "rebuild-iteration: " + RebuildFigure.depths.map { "depth \($0) \(times[$0]!) us" }.joined(separator: ", ")
                + "; of depth \(RebuildFigure.depths.last!): generation \(c.snapshotGeneration) (a snapshot) \(snapshotTime) us, "
                + "chain file \(chainTime) us; diff \(newest - 1)-\(newest) \(adjacentTime) us (\(adjacent.changedPages) pages; its rebuilds \(adjacentRebuilds) us), "
                + "diff 0-\(newest) \(wholeTime) us (\(whole.changedPages) pages; its rebuilds \(wholeRebuilds) us)")
    }
}
