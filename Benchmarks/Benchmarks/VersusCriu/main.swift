#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Incremental
import Store
import TargetProcess

// chpox against CRIU 4.2 on the same process, in one run: a DirtyTarget of $CHPOX_VS_MIB MiB
// (default 1024) started `mixed` (a third each untouched, text-like and random pages), then
//   chpox full base, stop-and-copy (no pre-copy) into a fresh store: wall time, pause, bytes
//   chpox full base, pre-copy, into another: wall time, pause (final stop)
//   criu dump --leave-running --shell-job: wall time (spawn to exit), frozen time, image bytes
// the target killed (its pid free), then, page cache warm for both:
//   chpox restart (Restorer, as ld-chpox) of the stop-and-copy base, until the process runs
//   chpox lazy restart (ld-chpox --lazy) of it: until the process runs, and until every page is in
//   criu restore -d --shell-job of the dump, until it returns (the process runs, detached)
// each restarted process killed before the next. $CHPOX_VS_ITERATIONS (default 3) iterations,
// medians printed with the ratio chpox / CRIU and the goal of issue 16.

// A restarted target gets this process's stdin, and ends at its end of file: a pipe nobody
// writes keeps it waiting, as the original did, until it is killed (a lazy restart's "every
// page in" would otherwise be the target's exit).
var idleInput: [Int32] = [0, 0]
guard pipe(&idleInput) == 0, dup2(idleInput[0], 0) == 0 else { fatalError("a pipe onto stdin failed") }

TargetProcess.locateInjector()
TargetProcess.locateRestoreStub()
guard let criu = CriuDump.located else {
    print("versus-criu: \(CriuDump.missing)")
    exit(2)
}
let environment = ProcessInfo.processInfo.environment
let mebibytes = Int(environment["CHPOX_VS_MIB"] ?? "") ?? 1024
let iterations = Int(environment["CHPOX_VS_ITERATIONS"] ?? "") ?? 3

struct Iteration {
    var fullWall = 0, fullPause = 0, preWall = 0, prePause = 0, chpoxBytes = 0
    var criuWall = 0, criuFrozen = 0, criuBytes = 0
    var chpoxRestart = 0, criuRestore = 0
    var lazyRestart = 0, lazyAllIn = 0, lazyFaults = 0
    var samePid = false
}

/// Waits (up to 10 s) until no process has `pid` (a restored one we did not start is reaped by
/// init, late on this machine).
func waitGone(_ pid: Int32) {
    for _ in 0..<1000 where kill(pid, 0) == 0 || errno != ESRCH { usleep(10_000) }
}

func checkpoint(_ pid: Int32, _ store: Store, preCopy: Bool) throws -> (Checkpointer.Generation, Int) {
    var options = Checkpointer.Options(chain: "bench", tracker: nil)
    options.preCopy = preCopy
    let checkpointer = try Checkpointer(pid: pid, store: store, options: options)
    defer { checkpointer.stop() }
    let (generation, wall) = try microseconds { try checkpointer.checkpoint() }
    precondition(generation.kind == "full")
    return (generation, wall)
}

func iteration(_ k: Int) throws -> Iteration {
    var figures = Iteration()
    let target = try TargetProcess(pages: mebibytes * 256, mixed: true)
    let pid = target.pid
    let full = try Scratch.freshStore("vs-full")
    let pre = try Scratch.freshStore("vs-precopy")
    defer {
        Scratch.remove(full)
        Scratch.remove(pre)
    }
    let (fullGeneration, fullWall) = try checkpoint(pid, full, preCopy: false)
    (figures.fullWall, figures.fullPause) = (fullWall, Int(fullGeneration.pauseMicroseconds))
    figures.chpoxBytes = Scratch.bytes(under: full.path)
    let (preGeneration, preWall) = try checkpoint(pid, pre, preCopy: true)
    (figures.preWall, figures.prePause) = (preWall, Int(preGeneration.pauseMicroseconds))
    let images = Scratch.root + "/vs-criu"
    defer { try? FileManager.default.removeItem(atPath: images) }
    switch criu.dump(pid, into: images, keepImages: true) {
    case .success(let dump):
        (figures.criuWall, figures.criuFrozen, figures.criuBytes) =
            (dump.milliseconds * 1000, dump.frozenMicroseconds, dump.imageBytes)
    case .failure(let failure): throw failure
    }
    target.kill()

    // As ld-chpox: the generation read from the store (manifest, page map) is part of the restart,
    // as CRIU's restore reads its image files.
    let (restorer, load) = try microseconds {
        try Restorer.load(full, chain: "bench", generation: fullGeneration.generation)
    }
    let (outcome, restartOnly) = try microseconds { try restorer.restart() }
    let restart = load + restartOnly
    figures.chpoxRestart = restart
    figures.samePid = outcome.pid == pid
    try? outcome.child.send(SIGKILL)
    _ = try? outcome.child.wait()
    waitGone(pid)

    // Lazily: the process runs first, its memory comes on touch and streams in meanwhile.
    var lazyOptions = Restorer.Options()
    lazyOptions.lazy = true
    let (lazyRestorer, lazyLoad) = try microseconds {
        try Restorer.load(full, chain: "bench", generation: fullGeneration.generation)
    }
    let (lazyOutcome, lazyRestartOnly) = try microseconds { try lazyRestorer.restart(options: lazyOptions) }
    let lazyRestart = lazyLoad + lazyRestartOnly
    print(
        "  lazy restart: "
            + lazyOutcome.timings.steps.map { "\($0.name) \(Int($0.milliseconds.rounded())) ms" }.joined(
                separator: ", "))
    let (lazyReport, allIn) = microseconds { lazyOutcome.pageServer?.finish() }
    figures.lazyRestart = lazyRestart
    figures.lazyAllIn = lazyRestart + allIn
    figures.lazyFaults = lazyReport?.faults ?? 0
    if let failure = lazyReport?.failure { throw CriuDump.DumpFailure("lazy restart: \(failure)") }
    try? lazyOutcome.child.send(SIGKILL)
    _ = try? lazyOutcome.child.wait()
    waitGone(pid)

    let (restored, restore) = try microseconds {
        try runToEnd(
            [criu.path, "restore", "-D", images, "-d", "--shell-job", "-o", "restore.log"],
            scratch: Scratch.root + "/vs-criu-restore")
    }
    guard restored.status == 0 else {
        let log = (try? String(contentsOfFile: images + "/restore.log", encoding: .utf8)) ?? ""
        let errors = log.split(separator: "\n").filter { $0.hasPrefix("Error") }.suffix(4)
        throw CriuDump.DumpFailure("criu restore failed (\(restored.status)): \(errors.joined(separator: " | "))")
    }
    figures.criuRestore = restore
    kill(pid, SIGKILL)
    waitGone(pid)
    print(
        "iteration \(k): chpox full \(fullWall / 1000) ms (pause \(figures.fullPause / 1000) ms), pre-copy "
            + "\(preWall / 1000) ms (pause \(figures.prePause / 1000) ms), \(figures.chpoxBytes) bytes; criu dump "
            + "\(figures.criuWall / 1000) ms (frozen \(figures.criuFrozen / 1000) ms), \(figures.criuBytes) bytes; "
            + "restart chpox \(restart / 1000) ms\(figures.samePid ? "" : " (new pid)"), lazily \(lazyRestart / 1000) ms "
            + "(all in at \(figures.lazyAllIn / 1000) ms, \(figures.lazyFaults) faults), criu \(restore / 1000) ms")
    return figures
}

nonisolated(unsafe) var runs: [Iteration] = []
print(
    "versus CRIU: \(mebibytes) MiB DirtyTarget, mixed (a third each untouched, text-like, random), \(iterations) iterations"
)
for k in 0..<iterations { runs.append(try iteration(k)) }

func median(_ values: [Int]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1
        ? Double(sorted[sorted.count / 2]) : Double(sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
/// Median of the per-iteration ratios.
func ratio(_ a: KeyPath<Iteration, Int>, _ b: KeyPath<Iteration, Int>) -> String {
    let values = runs.map { Double($0[keyPath: a]) / Double(max(1, $0[keyPath: b])) }.sorted()
    return String(format: "%.2fx", values[values.count / 2])
}
func ms(_ path: KeyPath<Iteration, Int>) -> String {
    String(format: "%.0f ms", median(runs.map { $0[keyPath: path] }) / 1000)
}
func mb(_ path: KeyPath<Iteration, Int>) -> String {
    String(format: "%.0f MB", median(runs.map { $0[keyPath: path] }) / 1e6)
}

print("")
print("| | chpox | CRIU 4.2 | chpox / CRIU | goal |")
print("|---|---|---|---|---|")
print(
    "| full dump, wall (stop-and-copy) | \(ms(\.fullWall)) | \(ms(\.criuWall)) | \(ratio(\.fullWall, \.criuWall)) | <= 1.0x (0.5x) |"
)
print(
    "| full dump, wall (pre-copy) | \(ms(\.preWall)) | \(ms(\.criuWall)) | \(ratio(\.preWall, \.criuWall)) | <= 1.0x (0.5x) |"
)
print(
    "| pause (stop-and-copy) | \(ms(\.fullPause)) | \(ms(\.criuFrozen)) | \(ratio(\.fullPause, \.criuFrozen)) | <= 1.0x |"
)
print("| pause (pre-copy) | \(ms(\.prePause)) | \(ms(\.criuFrozen)) | \(ratio(\.prePause, \.criuFrozen)) | - |")
print("| bytes on disk | \(mb(\.chpoxBytes)) | \(mb(\.criuBytes)) | \(ratio(\.chpoxBytes, \.criuBytes)) | - |")
print(
    "| restart until running | \(ms(\.chpoxRestart)) | \(ms(\.criuRestore)) | \(ratio(\.chpoxRestart, \.criuRestore)) | <= 0.5x |"
)
print(
    "| restart until running, lazy | \(ms(\.lazyRestart)) | \(ms(\.criuRestore)) | \(ratio(\.lazyRestart, \.criuRestore)) | <= 0.1x |"
)
print(
    "| lazy restart until every page is in | \(ms(\.lazyAllIn)) | \(ms(\.criuRestore)) | \(ratio(\.lazyAllIn, \.criuRestore)) | - |"
)
if runs.contains(where: { !$0.samePid }) { print("(some chpox restarts took a new pid: its pid was still held)") }
