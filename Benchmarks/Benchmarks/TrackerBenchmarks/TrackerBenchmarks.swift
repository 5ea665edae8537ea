#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Benchmark
import Foundation
import SoftDirty
import TargetProcess
import Tracee

// Cost of one collect-and-reset over a 1 GiB target with 0.1%, 1% and 10% of its pages dirty,
// for each tracker, against reading the whole 1 GiB with process_vm_readv in the same run.
// Figures are custom metrics in microseconds; `run-ratios` reads their medians from the JMH
// export and prints the tracker table. See README.md.

/// The dirty fractions measured, of the target's pages.
struct Fraction: Sendable {
    let label: String
    let pages: Int

    static let all = [
        Fraction(label: "0.1%", pages: DirtyTarget.pages / 1000),
        Fraction(label: "1%", pages: DirtyTarget.pages / 100),
        Fraction(label: "10%", pages: DirtyTarget.pages / 10),
    ]
}

/// Custom metrics, one name per figure (the JMH export keys them by name alone).
enum TrackerFigure {
    static func metric(_ name: String) -> BenchmarkMetric {
        .custom(name, polarity: .prefersSmaller, useScalingFactor: false)
    }

    /// process_vm_readv of the whole region, the process frozen, freeze and thaw not counted.
    static let fullRead = metric("full read us")
    /// The same with FrozenProcess init and thaw.
    static let fullReadFrozen = metric("full read+freeze us")
    /// FrozenProcess init and thaw alone.
    static let freezeThaw = metric("freeze+thaw us")
    /// 1 when the tracker is supported here, 0 when not (then it has no other figure).
    static func supported(_ kind: TrackerKind) -> BenchmarkMetric { metric("\(kind.rawValue) supported") }
    /// `collect` alone, the process frozen.
    static func collect(_ kind: TrackerKind, _ fraction: Fraction) -> BenchmarkMetric {
        metric("\(kind.rawValue) \(fraction.label) collect us")
    }
    /// FrozenProcess init + collect + thaw: how long the target stood still.
    static func freeze(_ kind: TrackerKind, _ fraction: Fraction) -> BenchmarkMetric {
        metric("\(kind.rawValue) \(fraction.label) freeze us")
    }
    /// `report.dirty.pageCount`: what the tracker reported (the pages asked for, plus the few
    /// the target's own stack and libc touched while it answered).
    static func reported(_ kind: TrackerKind, _ fraction: Fraction) -> BenchmarkMetric {
        metric("\(kind.rawValue) \(fraction.label) reported pages")
    }

    static func all(_ kind: TrackerKind) -> [BenchmarkMetric] {
        [supported(kind)] + Fraction.all.flatMap { [collect(kind, $0), freeze(kind, $0), reported(kind, $0)] }
    }
}

/// The DirtyTarget child process: 1 GiB of written pages, dirtying K more on request. One
/// for the whole run, started on first use; it exits with this process.
enum DirtyTarget {
    static let pages = 262_144  // 1 GiB of 4 KiB pages
    static let shared: TargetProcess = {
        do { return try TargetProcess(pages: pages) } catch { fatalError("cannot start DirtyTarget: \(error)") }
    }()
}

let trackerIterations = 5

func trackerConfiguration(_ figures: [BenchmarkMetric], warmup: Int = 0) -> Benchmark.Configuration {
    // .throughput: the JMH export leaves out benchmarks without it.
    .init(
        metrics: [.wallClock, .throughput] + figures, timeUnits: .milliseconds, warmupIterations: warmup,
        maxDuration: .seconds(60), maxIterations: trackerIterations)
}

let benchmarks: @Sendable () -> Void = {
    TargetProcess.locateInjector()

    // The baseline: the whole 1 GiB read with process_vm_readv in 64 MiB chunks, frozen.
    Benchmark(
        "Tracker full read 1 GiB (baseline)",
        configuration: trackerConfiguration(
            [TrackerFigure.fullRead, TrackerFigure.fullReadFrozen, TrackerFigure.freezeThaw], warmup: 1)
    ) { benchmark in
        let target = DirtyTarget.shared
        let memory = ProcessMemory(pid: target.pid)
        let chunk = 64 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)  // fault it in outside the timing
        var got = 0
        var readTime = 0
        let (_, frozenTime) = try microseconds {
            let frozen = try FrozenProcess(pid: target.pid)
            defer { frozen.thaw() }
            (_, readTime) = try microseconds {
                var address = target.base
                while address < target.base + target.size {
                    got += try memory.read(from: address, into: buffer)
                    address += UInt64(chunk)
                }
            }
        }
        precondition(UInt64(got) == target.size, "read \(got) of \(target.size) bytes")
        blackHole(buffer[chunk - 1])
        benchmark.measurement(TrackerFigure.fullRead, readTime)
        benchmark.measurement(TrackerFigure.fullReadFrozen, frozenTime)
        let (_, freezeTime) = try microseconds {
            try FrozenProcess(pid: target.pid).thaw()
        }
        benchmark.measurement(TrackerFigure.freezeThaw, freezeTime)
    }

    // Each iteration starts the tracker, takes the base collect (everything dirty), then for
    // each fraction dirties that many pages and times one freeze + collect + thaw.
    let probe = TrackerProbe()
    for kind in [TrackerKind.softDirty, .uffdWP, .hash] {
        Benchmark(
            "Tracker \(kind.rawValue) collect 1 GiB", configuration: trackerConfiguration(TrackerFigure.all(kind))
        ) { benchmark in
            let result = probe.result(kind)
            guard result.supported else {
                note("tracker-probe: \(kind.rawValue) not supported: \(result.detail)")
                benchmark.measurement(TrackerFigure.supported(kind), 0)
                return
            }
            benchmark.measurement(TrackerFigure.supported(kind), 1)
            let target = DirtyTarget.shared
            let tracker = try TrackerSelection.start(kind, pid: target.pid, probe: probe)
            defer { tracker.stop() }
            do {  // the base collect
                let frozen = try FrozenProcess(pid: target.pid)
                defer { frozen.thaw() }
                _ = try tracker.collect(frozen)
            }
            for fraction in Fraction.all {
                target.dirty(fraction.pages)
                var collectTime = 0
                var report: DirtyReport?
                let (_, freezeTime) = try microseconds {
                    let frozen = try FrozenProcess(pid: target.pid)
                    defer { frozen.thaw() }
                    (report, collectTime) = try microseconds { try tracker.collect(frozen) }
                }
                let reported = Int(report!.dirty.pageCount)
                precondition(
                    reported >= fraction.pages,
                    "\(kind.rawValue) reported \(reported) of \(fraction.pages) pages written")
                benchmark.measurement(TrackerFigure.collect(kind, fraction), collectTime)
                benchmark.measurement(TrackerFigure.freeze(kind, fraction), freezeTime)
                benchmark.measurement(TrackerFigure.reported(kind, fraction), reported)
            }
        }
    }
}
