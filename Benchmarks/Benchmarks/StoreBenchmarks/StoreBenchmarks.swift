#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Benchmark
import CBenchLZ4
import Store
import TargetProcess

// Every store figure is read against a baseline measured in the same run, on the same data:
// the box is shared and noisy, so absolute numbers from different runs do not compare.
// Throughputs are custom metrics in MB/s (10^6 bytes per second) over the 256 MiB data set,
// timed around exactly the work they name; `run-ratios` reads them from the JMH export.

/// Custom metrics, one name per figure (the JMH export keys them by name alone).
enum Figure {
    static let lz4 = BenchmarkMetric.custom("lz4 MB/s", polarity: .prefersLarger, useScalingFactor: false)
    static let lz4Decompress = BenchmarkMetric.custom(
        "lz4 decompress MB/s", polarity: .prefersLarger, useScalingFactor: false)
    static let xxh3 = BenchmarkMetric.custom("xxh3-128 MB/s", polarity: .prefersLarger, useScalingFactor: false)
    static let lz4Ratio = BenchmarkMetric.custom("lz4 ratio x100", polarity: .prefersLarger, useScalingFactor: false)
    static let putNew = BenchmarkMetric.custom("put new MB/s", polarity: .prefersLarger, useScalingFactor: false)
    static let putNewCommit = BenchmarkMetric.custom(
        "put new+commit MB/s", polarity: .prefersLarger, useScalingFactor: false)
    static let storeRatio = BenchmarkMetric.custom(
        "store ratio x100", polarity: .prefersLarger, useScalingFactor: false)
    static let memcpy = BenchmarkMetric.custom("memcpy MB/s", polarity: .prefersLarger, useScalingFactor: false)
    static let putStored = BenchmarkMetric.custom("put stored MB/s", polarity: .prefersLarger, useScalingFactor: false)
    static let putStoredCommit = BenchmarkMetric.custom(
        "put stored+commit MB/s", polarity: .prefersLarger, useScalingFactor: false)
    static let read = BenchmarkMetric.custom("read MB/s", polarity: .prefersLarger, useScalingFactor: false)
    static let pageMap = BenchmarkMetric.custom("pageMap us", polarity: .prefersSmaller, useScalingFactor: false)
    static let indexBytes = BenchmarkMetric.custom(
        "index milli-bytes/chunk", polarity: .prefersSmaller, useScalingFactor: false)
    static let gcPerMillion = BenchmarkMetric.custom(
        "gc ms/M chunks", polarity: .prefersSmaller, useScalingFactor: false)
    static let gcChunks = BenchmarkMetric.custom("gc chunks", polarity: .prefersSmaller, useScalingFactor: false)
}

/// Several iterations of a 256 MiB pass; the median is what `run-ratios` reports.
func configuration(_ figures: [BenchmarkMetric], iterations: Int = 5, warmup: Int = 1) -> Benchmark.Configuration {
    .init(
        metrics: [.wallClock, .throughput] + figures, timeUnits: .milliseconds, warmupIterations: warmup,
        maxDuration: .seconds(30), maxIterations: iterations)
}

let benchmarks: @Sendable () -> Void = {
    let data = Workload.base
    let bytes = data.byteCount

    // 1. New pages. Baseline: LZ4_compress_default over the same 64 KiB blocks (the Store's
    //    16-page frames), single-threaded like the Store's writer.
    Benchmark(
        "LZ4 compress 64 KiB blocks (baseline)",
        configuration: configuration([Figure.lz4, Figure.lz4Ratio, Figure.lz4Decompress])
    ) { benchmark in
        let block = 16 * pageSize
        let blocks = bytes / block
        let bound = Int(LZ4_compressBound(Int32(block)))
        // Room for every block at its worst; only the pages written are ever touched.
        let packed = UnsafeMutableRawBufferPointer.allocate(byteCount: blocks * bound, alignment: 16)
        defer { packed.deallocate() }
        var lengths = [Int](repeating: 0, count: blocks)
        var compressed = 0
        let time = seconds {
            for k in 0..<blocks {
                let length = Int(
                    LZ4_compress_default(
                        data.bytes.baseAddress! + k * block, packed.baseAddress! + compressed,
                        Int32(block), Int32(bound)))
                lengths[k] = length
                compressed += length
            }
        }
        benchmark.measurement(Figure.lz4, megabytesPerSecond(bytes, time))
        benchmark.measurement(Figure.lz4Ratio, bytes * 100 / max(compressed, 1))

        // Not a goal's baseline: the floor under the Store's read path.
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: block, alignment: pageSize)
        defer { out.deallocate() }
        var offset = 0
        let decompressTime = seconds {
            for length in lengths {
                let produced = LZ4_decompress_safe(
                    packed.baseAddress! + offset, out.baseAddress!, Int32(length), Int32(block))
                precondition(produced == Int32(block))
                offset += length
            }
        }
        benchmark.measurement(Figure.lz4Decompress, megabytesPerSecond(bytes, decompressTime))
    }

    Benchmark(
        "Store put new pages", configuration: configuration([Figure.putNew, Figure.putNewCommit, Figure.storeRatio])
    ) { benchmark in
        let store = try Scratch.freshStore("new")
        defer { Scratch.remove(store) }
        benchmark.startMeasurement()
        let writer = try store.beginGeneration(chain: "new")
        let putTime = try seconds { try Workload.put(data, into: writer) }
        let commitTime = try seconds { try writer.commit() }
        benchmark.stopMeasurement()
        benchmark.measurement(Figure.putNew, megabytesPerSecond(bytes, putTime))
        benchmark.measurement(Figure.putNewCommit, megabytesPerSecond(bytes, putTime + commitTime))
        let statistics = writer.currentStatistics
        benchmark.measurement(Figure.storeRatio, Int(statistics.newLogicalBytes * 100 / max(statistics.storedBytes, 1)))
    }

    // 2, 3. Stored pages and reads. Baseline: memcpy of the same 256 MiB.
    Benchmark(
        "memcpy (baseline)", configuration: configuration([Figure.memcpy, Figure.xxh3], iterations: 10, warmup: 2)
    ) { benchmark in
        let target = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: pageSize)
        defer { target.deallocate() }
        target.initializeMemory(as: UInt8.self, repeating: 1)  // fault it in outside the timing
        let time = seconds { memcpy(target.baseAddress!, data.bytes.baseAddress!, bytes) }
        blackHole(target[bytes - 1])
        benchmark.measurement(Figure.memcpy, megabytesPerSecond(bytes, time))

        // Not a goal's baseline: the floor under hashing every page (put and read both do).
        var fold: UInt64 = 0
        let hashTime = seconds {
            for k in 0..<data.count { fold ^= ChunkID(hashing: data.page(k)).low }
        }
        blackHole(fold)
        benchmark.measurement(Figure.xxh3, megabytesPerSecond(bytes, hashTime))
    }

    // A second chain with the same content: every page is hashed and found in the index.
    Benchmark("Store put stored pages", configuration: configuration([Figure.putStored, Figure.putStoredCommit])) {
        benchmark in
        let store = Workload.baseStore
        benchmark.startMeasurement()
        let writer = try store.beginGeneration(chain: "again-\(UInt64.random(in: 0..<UInt64.max))")
        let putTime = try seconds { try Workload.put(data, into: writer) }
        let commitTime = try seconds { try writer.commit() }
        benchmark.stopMeasurement()
        precondition(writer.currentStatistics.newChunks == 0, "stored pages were written again")
        benchmark.measurement(Figure.putStored, megabytesPerSecond(bytes, putTime))
        benchmark.measurement(Figure.putStoredCommit, megabytesPerSecond(bytes, putTime + commitTime))
    }

    // Rebuild the page map of generation 0 and read every page back (decompress and rehash).
    // The visitor only touches a word per page: what a restorer does with the bytes is not
    // the Store's cost. Packs are in the page cache (warm read).
    Benchmark("Store rebuild and read generation", configuration: configuration([Figure.read, Figure.pageMap])) {
        benchmark in
        let store = Workload.baseStore
        var sum: UInt64 = 0
        var map: PageMap?
        let mapTime = try seconds { map = try store.pageMap(chain: "base", generation: 0) }
        let readTime = try seconds {
            try store.reader().readPages(map!) { _, page in sum &+= page.load(as: UInt64.self) }
        }
        blackHole(sum)
        precondition(map!.pages.count == Workload.pageCount)
        benchmark.measurement(Figure.read, megabytesPerSecond(bytes, mapTime + readTime))
        benchmark.measurement(Figure.pageMap, Int(mapTime * 1e6))
    }

    // 4a. Index bytes per chunk of the base store: every page is a distinct, non-zero chunk.
    Benchmark("Store index size", configuration: configuration([Figure.indexBytes], iterations: 1, warmup: 0)) {
        benchmark in
        let store = Workload.baseStore
        let indexBytes = try Workload.bytes(in: "\(store.path)/index", suffix: ".idx")
        benchmark.measurement(Figure.indexBytes, indexBytes * 1000 / Workload.pageCount)
    }

    // 4b. GC: a full generation and three that each rewrite a random quarter of the pages, then
    //     GC keeping the last; reported per million chunks in the index before GC.
    Benchmark(
        "Store GC keepLast 1",
        configuration: configuration([Figure.gcPerMillion, Figure.gcChunks], iterations: 3, warmup: 0)
    ) { benchmark in
        let store = try Scratch.freshStore("gc")
        defer { Scratch.remove(store) }
        var writer = try store.beginGeneration(chain: "gc")
        try Workload.put(data, into: writer)
        try writer.commit()
        for delta in Workload.deltas {
            writer = try store.beginGeneration(chain: "gc")
            try Workload.put(delta, into: writer)
            try writer.commit()
        }
        benchmark.startMeasurement()
        let report = try store.collectGarbage(RetentionPolicy(keepLast: 1))
        benchmark.stopMeasurement()
        let chunks = report.liveChunks + report.deadChunks
        benchmark.measurement(Figure.gcPerMillion, Int(report.seconds * 1000 / (Double(chunks) / 1e6)))
        benchmark.measurement(Figure.gcChunks, chunks)
    }
}
