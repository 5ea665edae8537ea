#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Incremental
import Store
import TargetMemory
import TargetProcess

// How chpox's costs grow with the size of the process (issue 16, goal 4), in one run:
//
// 1. For 1, 4, 16 GiB (powers of 4 up to $CHPOX_SCALE_GIB, default 16; that size itself if it is
//    not one), a DirtyTarget of that size started `mixed` (a third each untouched, text-like,
//    random), then, each step timed: a full base (default options: pre-copy, the best tracker),
//    a 1%-dirty delta, a restart of the delta until the process runs, a lazy restart until it
//    runs and until every page is in, GC keeping the last generation. Each restarted process's
//    memory is compared page for page with the target's. Before all of that, `cpx --json` (run
//    as a child) takes a full base of the same target into a store of its own: its peak resident
//    memory (wait4's ru_maxrss, taken by Sources/PeakRSS) against the target's size, goal <= 2%.
// 2. A chain of $CHPOX_SCALE_GENERATIONS generations (default 1000) of a $CHPOX_SCALE_CHAIN_MIB
//    MiB target (default 256), 1% of its pages dirtied before each delta: time per generation
//    (first 10 against last 10), `dumpinfo --chain`, restart of the newest and of the first
//    generation (each memory compared with the target's at that generation), GC keeping the
//    last 10, and a restart of the newest after it.
//
// $CHPOX_SCALE_PARTS (default "sizes chain") picks the parts. A size whose target would not fit in
// the memory available now (MemAvailable under 3/4 of its size plus 2 GiB) is refused, and the
// sizes above it with it. One target (or restarted process) lives at a time; stores are removed
// after each size.

TargetProcess.locateInjector()
TargetProcess.locateRestoreStub()
// A restart gives the process's pipes the restarter's stdio: a restarted DirtyTarget reads this
// process's stdin and exits at its end. A pipe nobody writes (its write end held open here) keeps
// it waiting, so that its memory can be read.
var idle: [Int32] = [0, 0]
guard pipe(&idle) == 0, dup2(idle[0], 0) == 0 else { fatalError("cannot make stdin an idle pipe") }
let environment = ProcessInfo.processInfo.environment
let largestGiB = Int(environment["CHPOX_SCALE_GIB"] ?? "") ?? 16
let chainGenerations = Int(environment["CHPOX_SCALE_GENERATIONS"] ?? "") ?? 1000
let chainMiB = Int(environment["CHPOX_SCALE_CHAIN_MIB"] ?? "") ?? 256
let parts = Set((environment["CHPOX_SCALE_PARTS"] ?? "sizes chain").split(separator: " ").map(String.init))
let gibibyte = 1 << 30
let pagesPerGiB = gibibyte / 4096

func tool(_ name: String) -> String {
    environment["CHPOX_" + name.uppercased()] ?? TargetProcess.binDirectory + "/" + name
}

/// The sizes of part 1: powers of 4 from 1 up to `largest`, and `largest`.
func sizes(upTo largest: Int) -> [Int] {
    var sizes: [Int] = []
    var size = 1
    while size < largest {
        sizes.append(size)
        size *= 4
    }
    return sizes + [largest]
}

/// A field of /proc/meminfo, in bytes.
func memInfo(_ field: String) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        return (Int(line.split(separator: " ")[1]) ?? 0) * 1024
    }
    return 0
}

/// Resident bytes of `pid` (/proc/PID/statm).
func residentBytes(_ pid: Int32) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * 4096 : 0
}

/// Peak resident memory of this process.
func ownPeakBytes() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_maxrss * 1024
}

/// Waits (up to 10 s) until no process has `pid`.
func waitGone(_ pid: Int32) {
    for _ in 0..<1000 where kill(pid, 0) == 0 || errno != ESRCH { usleep(10_000) }
}

/// A progress line on stderr, with this process's peak resident memory so far (VmHWM): the
/// in-process checkpoints, restarts and GC are the library's, as cpx, ld-chpox and cpx gc run it.
func log(_ line: String) {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let peak = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }.map {
        $0.dropFirst("VmHWM:".count).trimmingCharacters(in: .whitespaces)
    }
    FileHandle.standardError.write(Data("scale: \(line) [this process's peak \(peak ?? "?")]\n".utf8))
}

/// One generation with `checkpointer`, timed as a whole.
func generation(_ checkpointer: Checkpointer) throws -> (Checkpointer.Generation, wall: Int) {
    try microseconds { try checkpointer.checkpoint() }
}

/// Kills a restarted process and waits until its pid is free.
func end(_ outcome: Restorer.Outcome) {
    try? outcome.child.send(SIGKILL)
    _ = try? outcome.child.wait()
    waitGone(outcome.pid)
}

/// `cpx --json` of `pid` into a fresh store, as a child of `PeakRSS` (which reports its peak
/// resident memory, wait4's ru_maxrss, untainted by this large process's own: see
/// Sources/PeakRSS/main.c): its wall time, the pause it reports, its peak. The store is removed
/// after.
func cpxBase(_ pid: Int32) throws -> (wall: Int, pause: Int, peak: Int) {
    let store = Scratch.root + "/cpx"
    defer { try? FileManager.default.removeItem(atPath: store) }
    let (run, wall) = try microseconds {
        try runToEnd(
            [tool("PeakRSS"), tool("cpx"), "--store", store, "--name", "scale", "--json", "\(pid)"],
            scratch: store + "-run")
    }
    guard run.status == 0 else {
        throw ScaleError("cpx of \(pid) failed (exit \(run.status)): \(run.errors.suffix(600))")
    }
    let peakLine = run.errors.split(separator: "\n").last { $0.hasPrefix("peak-rss-kib ") }
    guard let peak = peakLine.flatMap({ Int($0.dropFirst("peak-rss-kib ".count)) }) else {
        throw ScaleError("PeakRSS reported no peak: \(run.errors.suffix(600))")
    }
    for line in run.output.split(separator: "\n") {
        if let generation = try? JSONDecoder().decode(Checkpointer.Generation.self, from: Data(line.utf8)),
            generation.event == "generation"
        {
            return (wall, Int(generation.pauseMicroseconds), peak * 1024)
        }
    }
    throw ScaleError("cpx of \(pid) printed no generation: \(run.output.suffix(600))")
}

/// Restarts generation `generation` (nil: the newest) of `chain`, eagerly or lazily, compares the
/// restarted memory with `expected`, ends the process.
struct Restart {
    var load = 0, running = 0, allIn = 0, differences = 0
    var faults = 0, streamed = 0
    var samePid = false

    init(
        _ store: Store, chain: String, generation: UInt64?, lazy: Bool, target: TargetProcess, expected: MemoryDigest
    )
        throws
    {
        let (restorer, load) = try microseconds { try Restorer.load(store, chain: chain, generation: generation) }
        var options = Restorer.Options()
        options.lazy = lazy
        let started = ContinuousClock.now
        let (outcome, running) = try microseconds { try restorer.restart(options: options) }
        defer { end(outcome) }
        if let server = outcome.pageServer {
            let report = server.finish()
            if let failure = report.failure { throw ScaleError("lazy restart's page server failed: \(failure)") }
            (faults, streamed) = (report.faults, report.streamedPages)
        }
        let elapsed = (ContinuousClock.now - started).components
        allIn = Int(elapsed.seconds) * 1_000_000 + Int(elapsed.attoseconds / 1_000_000_000_000)
        (self.load, self.running, samePid) = (load, running, outcome.pid == outcome.originalPid)
        differences = try MemoryDigest(pid: outcome.pid, base: target.base, size: target.size).differences(
            from: expected)
    }
}

// MARK: - Part 1: sizes

struct SizeFigures {
    var gib = 0
    var resident = 0, targetStart = 0
    var cpxWall = 0, cpxPause = 0, cpxPeak = 0
    var baseWall = 0, basePause = 0, baseTotalPause = 0, baseRounds = 0, baseBytes = 0
    var deltaWall = 0, deltaPause = 0, deltaDirty = 0, deltaBytes = 0
    var restart = Restart?.none, lazy = Restart?.none
    var gcWall = 0, gcBytesBefore = 0, gcBytesAfter = 0, gcDropped = 0
    var verifyClean = false
}

func measure(gib: Int) throws -> SizeFigures {
    var f = SizeFigures()
    f.gib = gib
    let pages = gib * pagesPerGiB
    let (target, start) = try microseconds { try TargetProcess(pages: pages, mixed: true, quiet: true) }
    defer { target.kill() }
    (f.targetStart, f.resident) = (start, residentBytes(target.pid))
    log("\(gib) GiB: target \(target.pid) started in \(start / 1000) ms, \(f.resident >> 20) MiB resident")

    (f.cpxWall, f.cpxPause, f.cpxPeak) = try cpxBase(target.pid)
    log("\(gib) GiB: cpx base \(f.cpxWall / 1000) ms, peak \(f.cpxPeak >> 20) MiB")

    let store = try Scratch.freshStore("scale-\(gib)")
    defer { Scratch.remove(store) }
    let checkpointer = try Checkpointer(pid: target.pid, store: store, options: .init(chain: "scale"))
    let (base, baseWall) = try generation(checkpointer)
    precondition(base.kind == "full")
    (f.baseWall, f.basePause, f.baseTotalPause) =
        (baseWall, Int(base.pauseMicroseconds), Int(base.totalPauseMicroseconds))
    (f.baseRounds, f.baseBytes) = (base.preCopyRounds, Scratch.bytes(under: store.path))
    log("\(gib) GiB: base \(baseWall / 1000) ms, pause \(f.basePause / 1000) ms")

    target.dirty(pages / 100)
    let (delta, deltaWall) = try generation(checkpointer)
    precondition(delta.kind == "delta")
    checkpointer.stop()
    (f.deltaWall, f.deltaPause, f.deltaDirty) = (deltaWall, Int(delta.pauseMicroseconds), Int(delta.dirtyPages))
    f.deltaBytes = Scratch.bytes(under: store.path) - f.baseBytes
    log("\(gib) GiB: delta \(deltaWall / 1000) ms, pause \(f.deltaPause / 1000) ms")

    let expected = try MemoryDigest(pid: target.pid, base: target.base, size: target.size)
    target.kill()
    waitGone(target.pid)
    f.restart = try Restart(store, chain: "scale", generation: nil, lazy: false, target: target, expected: expected)
    log("\(gib) GiB: restart \(f.restart!.running / 1000) ms, \(f.restart!.differences) pages differ")
    f.lazy = try Restart(store, chain: "scale", generation: nil, lazy: true, target: target, expected: expected)
    log("\(gib) GiB: lazy restart \(f.lazy!.running / 1000) ms, all in \(f.lazy!.allIn / 1000) ms")

    f.gcBytesBefore = Scratch.bytes(under: store.path)
    let (report, gcWall) = try microseconds { try store.collectGarbage(RetentionPolicy(keepLast: 1)) }
    (f.gcWall, f.gcBytesAfter, f.gcDropped) = (gcWall, Scratch.bytes(under: store.path), report.dropped.count)
    f.verifyClean = try store.verify().isClean
    log("\(gib) GiB: gc \(gcWall / 1000) ms")
    return f
}

func sizeTables(_ runs: [SizeFigures]) {
    func ms(_ us: Int) -> String { String(format: "%.0f ms", Double(us) / 1000) }
    func msPerGiB(_ us: Int, _ gib: Int) -> String { String(format: "%.1f ms", Double(us) / 1000 / Double(gib)) }
    func mb(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }
    func mbPerGiB(_ bytes: Int, _ gib: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6 / Double(gib)) }
    /// Per GiB at the largest size against per GiB at the smallest: about 1 is linear.
    func growth(_ value: (SizeFigures) -> Int) -> String {
        guard let first = runs.first, let last = runs.last, value(first) > 0 else { return "-" }
        let ratio = (Double(value(last)) / Double(last.gib)) / (Double(value(first)) / Double(first.gib))
        let verdict = ratio < 0.8 ? "sub-linear" : ratio <= 1.25 ? "linear" : "worse than linear"
        return String(format: "%.2f (%@)", ratio, verdict)
    }
    let rows: [(String, (SizeFigures) -> Int, Bool)] = [
        ("target resident", { $0.resident }, false),
        ("full base, wall", { $0.baseWall }, true),
        ("full base, pause (final stop)", { $0.basePause }, true),
        ("full base, total pause (pre-copy too)", { $0.baseTotalPause }, true),
        ("full base, bytes stored", { $0.baseBytes }, false),
        ("1% delta, wall", { $0.deltaWall }, true),
        ("1% delta, pause", { $0.deltaPause }, true),
        ("1% delta, bytes stored", { $0.deltaBytes }, false),
        ("restart: load (rebuild page map)", { $0.restart?.load ?? 0 }, true),
        ("restart until running", { $0.restart?.running ?? 0 }, true),
        ("lazy restart until running", { $0.lazy?.running ?? 0 }, true),
        ("lazy restart until all in", { $0.lazy?.allIn ?? 0 }, true),
        ("GC keepLast 1", { $0.gcWall }, true),
        ("cpx full base, wall", { $0.cpxWall }, true),
    ]
    print("")
    print("| figure | " + runs.map { "\($0.gib) GiB | per GiB" }.joined(separator: " | ") + " | growth per GiB |")
    print("|---|" + runs.map { _ in "---|---" }.joined(separator: "|") + "|---|")
    for (label, value, isTime) in rows {
        let cells = runs.map { run in
            isTime
                ? "\(ms(value(run))) | \(msPerGiB(value(run), run.gib))"
                : "\(mb(value(run))) | \(mbPerGiB(value(run), run.gib))"
        }
        print("| \(label) | " + cells.joined(separator: " | ") + " | \(growth(value)) |")
    }
    print("")
    print("growth per GiB: (figure / GiB at \(runs.last!.gib) GiB) / (figure / GiB at \(runs.first!.gib) GiB)")
    print("")
    print("| cpx peak memory | " + runs.map { "\($0.gib) GiB" }.joined(separator: " | ") + " | goal |")
    print("|---|" + runs.map { _ in "---" }.joined(separator: "|") + "|---|")
    print("| peak RSS (ru_maxrss) | " + runs.map { mb($0.cpxPeak) }.joined(separator: " | ") + " | |")
    print(
        "| of the target's size | "
            + runs.map { String(format: "%.2f%%", 100 * Double($0.cpxPeak) / Double($0.gib * gibibyte)) }.joined(
                separator: " | ") + " | <= 2% |")
    print(
        "| of its resident memory | "
            + runs.map { String(format: "%.2f%%", 100 * Double($0.cpxPeak) / Double(max(1, $0.resident))) }.joined(
                separator: " | ") + " | |")
    print("| cpx pause | " + runs.map { ms($0.cpxPause) }.joined(separator: " | ") + " | |")
    print("")
    for run in runs {
        let restart = run.restart!, lazy = run.lazy!
        print(
            "\(run.gib) GiB: target started in \(ms(run.targetStart)); base \(run.baseRounds) pre-copy rounds; "
                + "delta \(run.deltaDirty) pages reported dirty (\(run.gib * pagesPerGiB / 100) written); "
                + "restart \(restart.differences) pages differ\(restart.samePid ? "" : " (new pid)"); "
                + "lazy \(lazy.differences) pages differ, \(lazy.faults) faults, \(lazy.streamed) pages streamed; "
                + "GC dropped \(run.gcDropped) generation(s), \(mb(run.gcBytesBefore)) -> \(mb(run.gcBytesAfter)), "
                + "verify \(run.verifyClean ? "clean" : "NOT CLEAN")")
    }
}

// MARK: - Part 2: a long chain

struct ChainFigures {
    var walls: [Int] = [], pauses: [Int] = [], dirty: [Int] = []
    var storeBytes = 0
    var listing = 0, listingLines = 0, chainRead = 0
    var newest: Restart?, first: Restart?, newestAfterGC: Restart?
    var gcWall = 0, gcBytesBefore = 0, gcBytesAfter = 0, gcDropped = 0, gcKept = 0
    var verifyClean = false
}

func measureChain() throws -> ChainFigures {
    var f = ChainFigures()
    let pages = chainMiB * 256
    let target = try TargetProcess(pages: pages, mixed: true, quiet: true)
    defer { target.kill() }
    let store = try Scratch.freshStore("scale-chain")
    defer { Scratch.remove(store) }
    let checkpointer = try Checkpointer(pid: target.pid, store: store, options: .init(chain: "long"))
    var firstDigest: MemoryDigest?
    var firstGeneration: UInt64 = 0
    for k in 0..<chainGenerations {
        if k > 0 { target.dirty(pages / 100) }
        let (g, wall) = try generation(checkpointer)
        f.walls.append(wall)
        f.pauses.append(Int(g.pauseMicroseconds))
        f.dirty.append(Int(g.dirtyPages))
        if k == 0 {
            firstGeneration = g.generation
            firstDigest = try MemoryDigest(pid: target.pid, base: target.base, size: target.size)
        }
        if (k + 1) % 100 == 0 { log("chain: \(k + 1) generations, the last \(wall / 1000) ms") }
    }
    checkpointer.stop()
    let newestDigest = try MemoryDigest(pid: target.pid, base: target.base, size: target.size)
    target.kill()
    waitGone(target.pid)
    f.storeBytes = Scratch.bytes(under: store.path)

    let (listing, listingTime) = try microseconds {
        try runToEnd([tool("dumpinfo"), "--store", store.path, "--chain"], scratch: Scratch.root + "/dumpinfo")
    }
    guard listing.status == 0 else { throw ScaleError("dumpinfo --chain failed: \(listing.errors.suffix(600))") }
    (f.listing, f.listingLines) = (listingTime, listing.output.split(separator: "\n").count)
    f.chainRead = try microseconds { try store.chain("long") }.1

    f.newest = try Restart(store, chain: "long", generation: nil, lazy: false, target: target, expected: newestDigest)
    f.first = try Restart(
        store, chain: "long", generation: firstGeneration, lazy: false, target: target, expected: firstDigest!)

    f.gcBytesBefore = f.storeBytes
    let (report, gcWall) = try microseconds { try store.collectGarbage(RetentionPolicy(keepLast: 10)) }
    (f.gcWall, f.gcBytesAfter) = (gcWall, Scratch.bytes(under: store.path))
    (f.gcDropped, f.gcKept) = (report.dropped.count, report.keptGenerations)
    f.verifyClean = try store.verify().isClean
    f.newestAfterGC = try Restart(
        store, chain: "long", generation: nil, lazy: false, target: target, expected: newestDigest)
    return f
}

func chainTable(_ f: ChainFigures) {
    func ms(_ us: Int) -> String { String(format: "%.1f ms", Double(us) / 1000) }
    func mean(_ values: ArraySlice<Int>) -> Int { values.isEmpty ? 0 : values.reduce(0, +) / values.count }
    func median(_ values: ArraySlice<Int>) -> Int { values.isEmpty ? 0 : values.sorted()[values.count / 2] }
    let n = f.walls.count
    let early = 1..<min(11, n), late = max(1, n - 10)..<n
    print("")
    print("| chain of \(n) generations, \(chainMiB) MiB | figure |")
    print("|---|---|")
    print("| full base, wall | \(ms(f.walls[0])) |")
    print(
        "| delta wall, generations 1-10 (mean, median) | \(ms(mean(f.walls[early]))), \(ms(median(f.walls[early]))) |")
    print(
        "| delta wall, last 10 (mean, median) | \(ms(mean(f.walls[late]))), \(ms(median(f.walls[late]))) |")
    print("| delta pause, generations 1-10 (median) | \(ms(median(f.pauses[early]))) |")
    print("| delta pause, last 10 (median) | \(ms(median(f.pauses[late]))) |")
    print("| the whole chain, wall | \(String(format: "%.1f s", Double(f.walls.reduce(0, +)) / 1e6)) |")
    print("| store size | \(String(format: "%.1f MB", Double(f.storeBytes) / 1e6)) |")
    print(
        "| `dumpinfo --chain` (\(f.listingLines) lines) | \(ms(f.listing)), "
            + "\(String(format: "%.2f", Double(f.listing) / 1000 / Double(max(1, n)))) ms a generation |")
    print("| `store.chain` (the chain file alone) | \(ms(f.chainRead)) |")
    for (label, restart) in [
        ("newest", f.newest!), ("first generation", f.first!), ("newest, after GC", f.newestAfterGC!),
    ] {
        print(
            "| restart \(label): load (rebuild) + until running | \(ms(restart.load)) + \(ms(restart.running)); "
                + "\(restart.differences) pages differ |")
    }
    print(
        "| GC keepLast 10 | \(ms(f.gcWall)); \(f.gcDropped) dropped, \(f.gcKept) kept; "
            + "\(String(format: "%.1f MB -> %.1f MB", Double(f.gcBytesBefore) / 1e6, Double(f.gcBytesAfter) / 1e6)); "
            + "verify \(f.verifyClean ? "clean" : "NOT CLEAN") |")
    let byHundred = stride(from: 0, to: n, by: 100).map { start -> String in
        let slice = f.walls[max(1, start)..<min(n, start + 100)]
        return slice.isEmpty ? "-" : String(format: "%.0f", Double(mean(slice)) / 1000)
    }
    print("")
    print("mean delta wall per 100 generations (ms): \(byHundred.joined(separator: " "))")
    print(
        "pages reported dirty per delta: median \(median(f.dirty[1...])), written \(chainMiB * 256 / 100) (plus the "
            + "target's own bookkeeping)")
}

// MARK: - Run

print(
    "scale: DirtyTarget mixed (a third each untouched, text-like, random); sizes up to \(largestGiB) GiB; chain of "
        + "\(chainGenerations) generations of \(chainMiB) MiB; \(ProcessInfo.processInfo.activeProcessorCount) cores, "
        + "\(memInfo("MemTotal") >> 30) GiB memory, \(memInfo("MemAvailable") >> 30) GiB available")
if parts.contains("sizes") {
    var runs: [SizeFigures] = []
    for gib in sizes(upTo: largestGiB) {
        let available = memInfo("MemAvailable")
        guard available >= gib * gibibyte * 3 / 4 + 2 * gibibyte else {
            print(
                "scale: \(gib) GiB refused: \(available >> 20) MiB available, the target needs about "
                    + "\(gib * 3 / 4 + 2) GiB (its resident two thirds and room); smaller sizes only")
            break
        }
        runs.append(try measure(gib: gib))
    }
    if !runs.isEmpty { sizeTables(runs) }
}
if parts.contains("chain") {
    chainTable(try measureChain())
}
print("")
print("peak memory of this benchmark process: \(ownPeakBytes() >> 20) MiB")

struct ScaleError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
