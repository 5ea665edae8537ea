#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Incremental
import ObjectStore
import S3Store
import Store
import TargetMemory
import TargetProcess

// The store on S3 against the local store, in one run (issue 17). Per iteration, two DirtyTargets
// of $CHPOX_S3_BENCH_MIB MiB (default 1024) started `mixed` (a third each untouched, text-like and
// random; both hold the same bytes and write the same pages), one per store, in turn (the order
// alternates between iterations):
//   full base, then `d 1%` and a delta, with one Checkpointer (default options, as cpx): wall
//   time of each `checkpoint()` (commit included: for S3, the uploads and the chain's swap),
//   pause; bytes the delta added (the store directory's files for the local store; for S3 the
//   objects new or replaced under the prefix, from a listing before and after) against
//   LZ4 of exactly the pages that changed, in the Store's 16-page frames
//   the target killed, then a restart of the delta generation until the process runs: the
//   store opened afresh (for S3 with an empty cache, so the restart downloads what it needs),
//   `Restorer.load`, `restart()`; the restarted memory compared page by page with the target's
// The S3 store is in a bucket of the run's own, under a prefix per iteration, deleted once
// measured, and RGW's garbage collector run (`radosgw-admin gc process`) so that the memstore
// OSD gets its memory back before the next iteration. Needs AWS_ENDPOINT_URL and keys (run-ratios
// reads them from the cluster's s3.env) and CHPOX_CEPH_DIR (the cluster's directory) for the gc.
// Medians over $CHPOX_S3_BENCH_ITERATIONS (default 3) iterations; ratios S3 / local are taken
// per iteration, then the median.

// A restarted target gets this process's stdin: a pipe nobody writes keeps it waiting, as the
// original did, until it is killed.
var idleInput: [Int32] = [0, 0]
guard pipe(&idleInput) == 0, dup2(idleInput[0], 0) == 0 else { fatalError("a pipe onto stdin failed") }

TargetProcess.locateInjector()
TargetProcess.locateRestoreStub()
let environment = ProcessInfo.processInfo.environment
let mebibytes = Int(environment["CHPOX_S3_BENCH_MIB"] ?? "") ?? 1024
let iterations = Int(environment["CHPOX_S3_BENCH_ITERATIONS"] ?? "") ?? 3
let dirtyPages = mebibytes * 256 / 100
let chain = "bench"

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

let client: S3Client
do {
    let bucket = "chpox-s3bench-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    client = try S3Client(configuration: try S3Configuration.fromEnvironment(environment), bucket: bucket)
    try client.createBucket()
} catch {
    print("s3bench: no S3 endpoint to benchmark against: \(error) (run-ratios --s3-only starts ../scripts/ceph.sh)")
    exit(2)
}

/// What one store did with its target.
struct Side {
    var baseWall = 0, basePause = 0, baseBytes = 0
    var deltaWall = 0, deltaPause = 0, deltaBytes = 0
    var changedPages = 0, lz4Bytes = 0, dirtyReported = 0
    /// Open + `Restorer.load` + `restart()`, and the open and load alone.
    var restart = 0, load = 0
    /// Bytes the restart's fresh cache held afterwards (S3 only).
    var downloaded = 0
    var differences = 0
    var samePid = false
    /// S3 only: the delta's new or replaced objects by directory (packs, index, ...): count, bytes.
    var uploads: [String: (count: Int, bytes: Int)] = [:]
    var objectsAfter = 0
    /// S3 only: the OSD's used bytes after the delta (the peak), and after the prefix was deleted.
    var clusterPeak: (used: Int, total: Int)?
    /// S3 only: the OSD's used bytes once the prefix was deleted and RGW's gc run, and how long
    /// until its counter (refreshed every few seconds) fell below a tenth of the store's bytes.
    var clusterAfter: (used: Int, total: Int)?
    var releaseWait = 0
    var restartSteps = ""
}

/// RGW alone, in the same iteration: the floor under the store's transfers.
struct Wire {
    /// Bytes per second of PUTs and GETs of pack-sized objects, one at a time.
    var putRate = 0.0, getRate = 0.0
    /// Median round trip of a PUT of a small object (a chain's size).
    var smallPut = 0
}

struct Iteration {
    var local = Side(), s3 = Side()
    var wire = Wire()
}

/// PUTs then GETs of four 32 MiB objects (a pack's size), one at a time, and ten PUTs of 139 bytes,
/// under a prefix of their own, deleted after.
func measureWire(iteration k: Int) throws -> Wire {
    let prefix = "wire/iteration-\(k)"
    defer { removeAll(prefix) }
    var generator = SplitMix64(seed: UInt64(k))
    var words = [UInt64](repeating: 0, count: 4 << 20)
    for n in words.indices { words[n] = generator.next() }
    let body = words.withUnsafeBytes { Array($0) }
    var wire = Wire()
    let (_, put) = try microseconds {
        for n in 0..<4 { _ = try client.put("\(prefix)/large-\(n)", body) }
    }
    let (_, get) = try microseconds {
        for n in 0..<4 {
            let read = try client.get("\(prefix)/large-\(n)")
            guard read.count == body.count else { throw BenchError("GET gave \(read.count) of \(body.count) bytes") }
        }
    }
    (wire.putRate, wire.getRate) = (
        Double(4 * body.count) / (Double(put) / 1e6), Double(4 * body.count) / (Double(get) / 1e6)
    )
    let small = Array(body.prefix(139))
    var times: [Int] = []
    for n in 0..<10 { times.append(try microseconds { _ = try client.put("\(prefix)/small-\(n)", small) }.1) }
    wire.smallPut = times.sorted()[times.count / 2]
    return wire
}

/// Waits (up to 10 s) until no process has `pid`.
func waitGone(_ pid: Int32) {
    for _ in 0..<1000 where kill(pid, 0) == 0 || errno != ESRCH { usleep(10_000) }
}

/// The objects under `prefix`, by key.
func listing(_ prefix: String) throws -> [String: ObjectInfo] {
    Dictionary(uniqueKeysWithValues: try client.list(prefix: prefix + "/").map { ($0.key, $0) })
}

/// Deletes every object under `prefix`, then has RGW collect their data at once (it keeps a
/// deleted object's data for hours by default), so the memstore OSD's memory comes back.
func removeAll(_ prefix: String) {
    for key in (try? client.list(prefix: prefix + "/"))?.map(\.key) ?? [] { try? client.delete(key) }
    guard let directory = environment["CHPOX_CEPH_DIR"] else { return }
    let collected = try? runToEnd(
        [
            "/usr/bin/radosgw-admin", "-c", directory + "/ceph.conf", "-n", "client.admin", "gc", "process",
            "--include-all",
        ],
        scratch: Scratch.root + "/gc")
    if collected?.status != 0 {
        print("  radosgw-admin gc process failed (\(collected?.status ?? -1)): \(collected?.errors.suffix(300) ?? "")")
    }
}

/// The OSD's used and total bytes (its `perf dump`, through its admin socket: with no manager
/// daemon in the cluster, `ceph df` reports nothing): the memstore holds every object in memory,
/// up to its cap (scripts/ceph.sh). Nil without CHPOX_CEPH_DIR or an answer.
func clusterUsage() -> (used: Int, total: Int)? {
    guard let directory = environment["CHPOX_CEPH_DIR"],
        let run = try? runToEnd(
            ["/usr/bin/ceph", "--admin-daemon", directory + "/run/osd.0.asok", "perf", "dump"],
            scratch: Scratch.root + "/perf"),
        run.status == 0,
        let json = try? JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any],
        let osd = json["osd"] as? [String: Any],
        let used = (osd["stat_bytes_used"] as? NSNumber)?.intValue,
        let total = (osd["stat_bytes"] as? NSNumber)?.intValue
    else { return nil }
    return (used, total)
}

/// One target through one store: base, 1% delta, restart of the delta from a fresh open.
func measure(s3: Bool, iteration k: Int) throws -> Side {
    var side = Side()
    let prefix = "run/iteration-\(k)"
    let url = "s3://\(client.bucket)/\(prefix)"
    let localPath = Scratch.root + "/local-\(k)"
    let writeCache = Scratch.root + "/write-cache-\(k)"
    let restartCache = Scratch.root + "/restart-cache-\(k)"
    defer {
        for path in [localPath, writeCache, restartCache] { try? FileManager.default.removeItem(atPath: path) }
        if s3 { removeAll(prefix) }
    }
    func open(cache: String, create: Bool) throws -> Store {
        s3
            ? try S3Store.open(url, cacheRoot: cache, create: create, trusted: true, environment: environment)
            : try Store(at: localPath, create: create)
    }
    func bytesStored() throws -> (bytes: Int, objects: [String: ObjectInfo]) {
        guard s3 else { return (Scratch.bytes(under: localPath), [:]) }
        let objects = try listing(prefix)
        return (objects.values.reduce(0) { $0 + Int($1.size) }, objects)
    }

    let target = try TargetProcess(pages: mebibytes * 256, mixed: true, quiet: true)
    defer { target.kill() }
    let memory = TargetMemory(target: target)
    let expected: MemoryDigest
    let deltaGeneration: UInt64
    do {
        let store = try open(cache: writeCache, create: true)
        let checkpointer = try Checkpointer(pid: target.pid, store: store, options: .init(chain: chain, tracker: nil))
        defer { checkpointer.stop() }
        let empty = try bytesStored()
        let (base, baseWall) = try microseconds { try checkpointer.checkpoint() }
        guard base.kind == "full" else { throw BenchError("the first generation is a \(base.kind)") }
        let afterBase = try bytesStored()
        (side.baseWall, side.basePause, side.baseBytes) = (
            baseWall, Int(base.pauseMicroseconds), afterBase.bytes - empty.bytes
        )

        let hashes = try memory.hashes()
        target.dirty(dirtyPages)
        let (delta, deltaWall) = try microseconds { try checkpointer.checkpoint() }
        guard delta.kind == "delta" else { throw BenchError("the second generation is a \(delta.kind)") }
        let afterDelta = try bytesStored()
        (side.deltaWall, side.deltaPause) = (deltaWall, Int(delta.pauseMicroseconds))
        side.dirtyReported = Int(delta.dirtyPages)
        deltaGeneration = delta.generation
        if s3 {
            // New objects, and those replaced (the chain; a lease renewed): what was uploaded.
            for (key, object) in afterDelta.objects where afterBase.objects[key]?.etag != object.etag {
                let directory = String(key.dropFirst(prefix.count + 1).prefix { $0 != "/" })
                side.uploads[directory, default: (0, 0)].count += 1
                side.uploads[directory, default: (0, 0)].bytes += Int(object.size)
            }
            side.deltaBytes = side.uploads.values.reduce(0) { $0 + $1.bytes }
            side.objectsAfter = afterDelta.bytes
            side.clusterPeak = clusterUsage()
        } else {
            side.deltaBytes = afterDelta.bytes - afterBase.bytes
        }

        let changed = try memory.changed(since: hashes)
        var compressor = FrameCompressor()
        defer { compressor.deallocate() }
        changed.bytes.withUnsafeBytes { compressor.compress($0) }
        (side.changedPages, side.lz4Bytes) = (changed.count, compressor.bytes)
        expected = try MemoryDigest(pid: target.pid, base: target.base, size: target.size)
    }
    let pid = target.pid
    target.kill()
    waitGone(pid)

    // The restart as ld-chpox makes it: the store opened (for S3: an empty cache), the generation
    // loaded (chain, manifest, index segments), the process made again, its pages read from packs
    // (for S3: each downloaded whole the first time it is needed).
    let started = ContinuousClock.now
    let (restorer, load) = try microseconds {
        try Restorer.load(try open(cache: restartCache, create: false), chain: chain, generation: deltaGeneration)
    }
    let outcome = try restorer.restart()
    let elapsed = (ContinuousClock.now - started).components
    side.restart = Int(elapsed.seconds) * 1_000_000 + Int(elapsed.attoseconds / 1_000_000_000_000)
    side.load = load
    defer {
        try? outcome.child.send(SIGKILL)
        _ = try? outcome.child.wait()
        waitGone(outcome.pid)
    }
    side.samePid = outcome.pid == pid
    side.restartSteps = outcome.timings.steps.filter { $0.milliseconds >= 1 }.map {
        "\($0.name) \(Int($0.milliseconds.rounded()))"
    }.joined(
        separator: ", ")
    side.differences = try MemoryDigest(pid: outcome.pid, base: target.base, size: target.size).differences(
        from: expected)
    if s3 { side.downloaded = Scratch.bytes(under: restartCache) }
    return side
}

func usage(_ usage: (used: Int, total: Int)?) -> String {
    usage.map { "\(mb($0.used)) of \(mb($0.total))" } ?? "?"
}
func mb(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }
func ms(_ us: Int) -> String { String(format: "%.0f ms", Double(us) / 1000) }

nonisolated(unsafe) var runs: [Iteration] = []
print(
    "S3 against local: \(mebibytes) MiB DirtyTarget, mixed, base and 1% delta (\(dirtyPages) pages written), "
        + "\(iterations) iterations; RGW at \(client.configuration.endpoint), bucket \(client.bucket)")
for k in 0..<iterations {
    var run = Iteration()
    run.wire = try measureWire(iteration: k)
    // Alternately first: neither store always finds the page cache and the machine as the other left them.
    for s3 in k % 2 == 0 ? [false, true] : [true, false] {
        var side = try measure(s3: s3, iteration: k)
        // After measure's cleanup: the prefix deleted and RGW's gc run; the memory must come back
        // before the next iteration writes as much again.
        if s3 {
            let (usage, waited) = microseconds {
                var usage = clusterUsage()
                for _ in 0..<60 where (usage?.used ?? 0) > side.objectsAfter / 10 {
                    usleep(500_000)
                    usage = clusterUsage()
                }
                return usage
            }
            (side.clusterAfter, side.releaseWait) = (usage, waited)
        }
        if s3 { run.s3 = side } else { run.local = side }
    }
    for (name, side) in [("local", run.local), ("s3", run.s3)] {
        print(
            "iteration \(k) \(name): base \(ms(side.baseWall)) (pause \(ms(side.basePause)), +\(mb(side.baseBytes))), "
                + "delta \(ms(side.deltaWall)) (pause \(ms(side.deltaPause)), \(side.dirtyReported) dirty, "
                + "\(side.changedPages) changed, +\(side.deltaBytes) B, LZ4 \(side.lz4Bytes) B), restart \(ms(side.restart)) "
                + "(open+load \(ms(side.load)); \(side.restartSteps))"
                + (name == "s3" ? ", downloaded \(mb(side.downloaded)) of \(mb(side.objectsAfter))" : "")
                + (name == "s3"
                    ? "; OSD used \(usage(side.clusterPeak)) after the delta, \(usage(side.clusterAfter)) \(ms(side.releaseWait)) after it was deleted"
                    : "")
                + ", \(side.differences) pages differ\(side.samePid ? "" : ", new pid")")
    }
    let uploads = run.s3.uploads.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.count) (\($0.value.bytes) B)" }
    print("iteration \(k) s3 delta uploaded: \(uploads.joined(separator: ", "))")
    print(
        "iteration \(k) RGW alone: PUT \(mb(Int(run.wire.putRate)))/s, GET \(mb(Int(run.wire.getRate)))/s (32 MiB objects, "
            + "one at a time), PUT of 139 B \(String(format: "%.1f", Double(run.wire.smallPut) / 1000)) ms")
    runs.append(run)
}
try? client.deleteBucket()

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1
        ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
func median(_ path: KeyPath<Side, Int>, _ side: KeyPath<Iteration, Side>) -> Double {
    median(runs.map { Double($0[keyPath: side][keyPath: path]) })
}
/// Median of the per-iteration ratios S3 / local.
func ratio(_ path: KeyPath<Side, Int>) -> String {
    String(format: "%.2fx", median(runs.map { Double($0.s3[keyPath: path]) / Double(max(1, $0.local[keyPath: path])) }))
}
/// Median of the per-iteration ratios of one side's bytes to its LZ4 of the changed pages.
func perLZ4(_ side: KeyPath<Iteration, Side>) -> String {
    String(
        format: "%.3fx",
        median(runs.map { Double($0[keyPath: side].deltaBytes) / Double(max(1, $0[keyPath: side].lz4Bytes)) }))
}
func msMedian(_ path: KeyPath<Side, Int>, _ side: KeyPath<Iteration, Side>) -> String {
    String(format: "%.0f ms", median(path, side) / 1000)
}
func mbMedian(_ path: KeyPath<Side, Int>, _ side: KeyPath<Iteration, Side>) -> String {
    String(format: "%.2f MB", median(path, side) / 1e6)
}

print("")
print("| | local store | store on S3 (RGW) | S3 / local |")
print("|---|---|---|---|")
for (label, path) in [
    ("full base, wall", \Side.baseWall), ("1% delta, wall", \Side.deltaWall),
    ("restart of the delta, until running", \Side.restart),
] {
    print("| \(label) | \(msMedian(path, \.local)) | \(msMedian(path, \.s3)) | \(ratio(path)) |")
}
print(
    "| restart: open + load (chain, manifest, index) | \(msMedian(\.load, \.local)) | \(msMedian(\.load, \.s3)) | \(ratio(\.load)) |"
)
print(
    "| full base, pause | \(msMedian(\.basePause, \.local)) | \(msMedian(\.basePause, \.s3)) | \(ratio(\.basePause)) |")
print(
    "| 1% delta, pause | \(msMedian(\.deltaPause, \.local)) | \(msMedian(\.deltaPause, \.s3)) | \(ratio(\.deltaPause)) |"
)
print(
    "| full base, bytes stored | \(mbMedian(\.baseBytes, \.local)) | \(mbMedian(\.baseBytes, \.s3)) | \(ratio(\.baseBytes)) |"
)
print(
    "| 1% delta, bytes stored (S3: uploaded) | \(mbMedian(\.deltaBytes, \.local)) | \(mbMedian(\.deltaBytes, \.s3)) | \(ratio(\.deltaBytes)) |"
)
print("| LZ4 of the delta's changed pages | \(mbMedian(\.lz4Bytes, \.local)) | \(mbMedian(\.lz4Bytes, \.s3)) | - |")
print("| **1% delta bytes / LZ4 of its changed pages** (goal ~1.0x) | \(perLZ4(\.local)) | **\(perLZ4(\.s3))** | - |")
print(
    "| restart: downloaded into the empty cache | - | \(mbMedian(\.downloaded, \.s3)) of \(mbMedian(\.objectsAfter, \.s3)) | - |"
)
/// Median over the iterations of `value`.
func medianOf(_ value: (Iteration) -> Double) -> Double { median(runs.map(value)) }
let putRate = medianOf { $0.wire.putRate }, getRate = medianOf { $0.wire.getRate }
print(
    "| RGW alone: PUT, GET of 32 MiB objects, one at a time | - | "
        + String(format: "%.0f MB/s, %.0f MB/s | - |", putRate / 1e6, getRate / 1e6))
print(
    "| RGW alone: PUT of 139 B | - | \(String(format: "%.1f ms", medianOf { Double($0.wire.smallPut) } / 1000)) | - |")
// Where the S3 side's extra time goes, against RGW alone in the same iteration.
let baseUpload = medianOf {
    Double($0.s3.baseWall - $0.local.baseWall) / (Double($0.s3.baseBytes) / $0.wire.putRate * 1e6)
}
let restartDownload = medianOf {
    Double($0.s3.restart - $0.local.restart) / (Double($0.s3.downloaded) / $0.wire.getRate * 1e6)
}
let deltaTrips = medianOf { Double($0.s3.deltaWall - $0.local.deltaWall) / Double(max(1, $0.wire.smallPut)) }
print("| full base: S3's extra wall / its bytes PUT one at a time | - | \(String(format: "%.2fx", baseUpload)) | - |")
print(
    "| restart: S3's extra wall / the bytes downloaded, GET one at a time | - | \(String(format: "%.2fx", restartDownload)) | - |"
)
print("| 1% delta: S3's extra wall, in small PUT round trips | - | \(String(format: "%.0f", deltaTrips)) | - |")
let differing = runs.map { $0.local.differences + $0.s3.differences }.reduce(0, +)
print("")
print(
    "pages of the restarted processes that differ from the target's at the delta: \(differing) (every iteration, both stores)"
)
if runs.contains(where: { !$0.local.samePid || !$0.s3.samePid }) {
    print("(some restarts took a new pid: its pid was still held)")
}
if differing > 0 { exit(1) }
