#if canImport(Glibc)
import Glibc
#endif
import CBenchLZ4
import Foundation
import Incremental
import Store
import TargetProcess

// Files kept with generations: a process holds a file of $CHPOX_FILE_MIB MiB (default 1024) open
// for writing; between generations 1% of it is rewritten in place, in runs of 64 KiB and then of
// 4 KiB at random offsets. Figures, each against a baseline of the same run:
//   bytes stored by the generation (packs, index, manifest) / LZ4 size of the rewritten bytes
//     (in 64 KiB frames, as the store frames pages)                          goal <= 1.2
//   the generation's pause / the pause of the same generation without files (cpx --no-files)
// The data is text-like (words of a seeded SplitMix64), so LZ4 shrinks it as it does logs.

let mebibytes = Int(ProcessInfo.processInfo.environment["CHPOX_FILE_MIB"] ?? "") ?? 1024
let size = mebibytes << 20
let words = (0..<1024).map { k -> [UInt8] in
    var rng = SplitMix64(seed: UInt64(k) &+ 77)
    return Array((0..<(3 + Int(rng.next() % 8))).map { _ in UInt8(97 + rng.next() % 26) }) + [32]
}

/// `count` bytes of text-like data from `rng`.
func text(_ count: Int, _ rng: inout SplitMix64) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(count + 16)
    while out.count < count {
        let r = rng.next()
        out += words[Int(r % 1024)]
        if r >> 60 == 0 { out.append(10) }
    }
    return Array(out.prefix(count))
}

func lz4Size(_ bytes: [UInt8]) -> Int {
    let frame = 65536
    let bound = Int(LZ4_compressBound(Int32(frame)))
    var output = [CChar](repeating: 0, count: bound)
    var total = 0
    bytes.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            let length = min(frame, raw.count - offset)
            let packed = LZ4_compress_default(
                (raw.baseAddress! + offset).assumingMemoryBound(to: CChar.self), &output, Int32(length), Int32(bound))
            total += min(Int(packed), length)
            offset += length
        }
    }
    return total
}

TargetProcess.locateInjector()
let directory = Scratch.root
let path = directory + "/data"
nonisolated(unsafe) var rng = SplitMix64(seed: 2026)
do {
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    for _ in 0..<(size >> 20) { _ = text(1 << 20, &rng).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
    fsync(fd)
    close(fd)
}
// The process: a sleep holding the file open for reading and writing as its descriptor 3.
let target = Process()
target.executableURL = URL(fileURLWithPath: "/bin/sh")
target.arguments = ["-c", "exec 3<>\(path); exec sleep 100000"]
try target.run()
defer { target.terminate() }
usleep(300_000)
let pid = target.processIdentifier

/// Rewrites 1% of the file in runs of `run` bytes; returns the LZ4 size of the new bytes.
func rewriteOnePercent(run: Int) -> (bytes: Int, lz4: Int) {
    let fd = open(path, O_WRONLY)
    defer { close(fd) }
    var changed = 0
    var lz4 = 0
    while changed < size / 100 {
        let offset = Int(rng.next() % UInt64(size - run))
        let bytes = text(run, &rng)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        changed += run
        lz4 += lz4Size(bytes)
    }
    return (changed, lz4)
}

func checkpointer(_ store: Store, files: Bool) throws -> Checkpointer {
    var options = Checkpointer.Options(chain: "bench", tracker: nil)
    options.recordFiles = files
    options.fileLimit = 4 << 30
    // Foundation's Process leaves the end of a socket pair in the child: not what is measured.
    options.skipUnsupported = true
    return try Checkpointer(pid: pid, store: store, options: options)
}

let withFiles = try Scratch.freshStore("files")
let withoutFiles = try Scratch.freshStore("nofiles")
let keeping = try checkpointer(withFiles, files: true)
let notKeeping = try checkpointer(withoutFiles, files: false)
defer {
    keeping.stop()
    notKeeping.stop()
}

func generation(_ c: Checkpointer, _ store: Store) throws -> (Checkpointer.Generation, Int) {
    let before = Scratch.bytes(under: store.path)
    let g = try c.checkpoint()
    return (g, Scratch.bytes(under: store.path) - before)
}

func ms(_ microseconds: Int64) -> String { String(format: "%.1f ms", Double(microseconds) / 1000) }

print("file benchmark: \(mebibytes) MiB file of text-like bytes, 1% rewritten in place between generations")
let (base, baseBytes) = try generation(keeping, withFiles)
let (baseWithout, _) = try generation(notKeeping, withoutFiles)
print(
    "base (full): \(base.milliseconds) ms, pause \(ms(base.pauseMicroseconds)) "
        + "(without files \(ms(baseWithout.pauseMicroseconds))), \(baseBytes) bytes stored "
        + "(file LZ4 ~\(lz4Size(Array(FileManager.default.contents(atPath: path)!.prefix(64 << 20))) * mebibytes / 64))"
)
var rows: [String] = []
for run in [65536, 4096] {
    let (changed, lz4) = rewriteOnePercent(run: run)
    let (g, stored) = try generation(keeping, withFiles)
    let (h, _) = try generation(notKeeping, withoutFiles)
    let ratio = Double(stored) / Double(lz4)
    let packRatio = Double(g.storedBytes) / Double(lz4)
    rows.append(
        "1% in \(run / 1024) KiB runs: \(changed) bytes changed, LZ4 \(lz4); stored \(stored) bytes "
            + "(packs \(g.storedBytes)): \(String(format: "%.2f", ratio))x (packs \(String(format: "%.2f", packRatio))x, "
            + "goal <= 1.2x); pause \(ms(g.pauseMicroseconds)) against \(ms(h.pauseMicroseconds)) without files "
            + "(+\(ms(g.pauseMicroseconds - h.pauseMicroseconds)), read while running: \(g.filesReadEarly) of \(g.filesRead)); "
            + "generation \(g.milliseconds) ms")
    print(rows.last!)
}
// A generation that read the file within a second of its last write reads it again (its times
// cannot tell a later write in the same tick); the one after a generation a second later skips it.
sleep(2)
_ = try generation(keeping, withFiles)
_ = try generation(notKeeping, withoutFiles)
let (same, sameBytes) = try generation(keeping, withFiles)
let (sameWithout, _) = try generation(notKeeping, withoutFiles)
print(
    "unchanged file: \(sameBytes) bytes stored, pause \(ms(same.pauseMicroseconds)) against "
        + "\(ms(sameWithout.pauseMicroseconds)) without files (filesRead \(same.filesRead))")
