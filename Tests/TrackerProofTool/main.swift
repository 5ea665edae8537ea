// chpox-tracker-proof probe
// chpox-tracker-proof prove TRACKER WORKLOAD ROUNDS SEED
// chpox-tracker-proof collect-loop PID TRACKER
//
// chpox-tracker-proof guest WORKLOAD ROUNDS [CHURN GENERATIONS]
//
// `probe` prints what this kernel supports. `guest` is the suite a QEMU guest runs: every tracker the kernel has
// (soft-dirty through pagemap and, where present, PAGEMAP_SCAN), and the probe's refusal of the ones it lacks; with
// CHURN (the churn workload), the checkpointer's proof with soft-dirty over GENERATIONS generations; it ends with
// "GUEST N passed, M failed". `prove` runs TrackerProof and exits 0 only with zero missed pages (the QEMU guests run
// this). `collect-loop` attaches to PID and collects forever, printing "collected N" each time (the kill tests SIGKILL
// it at random instants).
import CheckpointTestSupport
import SoftDirty
import Tracee
import TrackerTestSupport

#if canImport(Glibc)
import Glibc
#endif

let arguments = CommandLine.arguments
func fail(_ message: String) -> Never {
    print("chpox-tracker-proof: \(message)")
    exit(1)
}

switch arguments.count > 1 ? arguments[1] : "" {
case "probe":
    let probe = TrackerProbe()
    for result in probe.results {
        print("\(result.kind.rawValue): \(result.supported ? "yes" : "no"): \(result.detail)")
    }
    print("best: \(probe.best.rawValue)")
case "prove":
    guard arguments.count == 6, let kind = TrackerKind(rawValue: arguments[2]), let rounds = Int(arguments[4]),
        let seed = UInt64(arguments[5])
    else {
        fail("usage: prove TRACKER WORKLOAD ROUNDS SEED")
    }
    do {
        let outcome = try TrackerProof.run(kind, workloadPath: arguments[3], rounds: rounds, seed: seed)
        print("PROOF \(outcome)")
        exit(outcome.missedPages == 0 ? 0 : 1)
    } catch {
        fail("\(error)")
    }
case "guest":
    guard arguments.count == 4 || arguments.count == 6, let rounds = Int(arguments[3]) else {
        fail("usage: guest WORKLOAD ROUNDS [CHURN GENERATIONS]")
    }
    let workload = arguments[2]
    let probe = TrackerProbe()
    for result in probe.results {
        print("probe \(result.kind.rawValue): \(result.supported ? "yes" : "no"): \(result.detail)")
    }
    var passed = 0, failed = 0
    func check(_ name: String, _ ok: Bool, _ detail: String) {
        print("\(ok ? "PASS" : "FAIL") \(name): \(detail)")
        if ok { passed += 1 } else { failed += 1 }
    }
    func prove(_ label: String, _ start: (Int32) throws -> any DirtyTracker) {
        do {
            let outcome = try TrackerProof.run(
                label, start: start, workloadPath: workload, rounds: rounds, seed: 7,
                log: { if getenv("CHPOX_DEBUG") != nil { print("debug \($0)") } })
            check(label, outcome.missedPages == 0 && outcome.rounds == rounds && outcome.changedPages > 0, "\(outcome)")
        } catch {
            check(label, false, "\(error)")
        }
    }
    let softDirty = probe.result(.softDirty)
    check("soft-dirty probe", softDirty.supported, softDirty.detail)
    if softDirty.supported {
        prove("soft-dirty (pagemap bit 55)") { pid in try SoftDirtyTracker(pid: pid, preferScan: false) }
        let scan = (try? Pagemap(pid: getpid()))?.hasScan() ?? false
        if scan { prove("soft-dirty (PAGEMAP_SCAN)") { pid in try SoftDirtyTracker(pid: pid, preferScan: true) } }
    }
    let uffd = probe.result(.uffdWP)
    if uffd.supported {
        prove("uffd-wp") { pid in try UffdTracker(pid: pid) }
    } else {
        check("uffd-wp probe refuses", uffd.detail.contains("WP_ASYNC"), uffd.detail)
    }
    prove("hash") { pid in try HashTracker(pid: pid) }
    if arguments.count == 6, let generations = Int(arguments[5]), softDirty.supported {
        // The checkpointer with the tracker only the guests have; a new run halfway.
        for preCopy in [true, false] {
            let label = "checkpoint with soft-dirty\(preCopy ? ", pre-copy" : "")"
            do {
                let outcome = try CheckpointProof.run(
                    .softDirty, churnPath: arguments[4], directory: "/tmp/chpox-proof-\(preCopy)",
                    generations: generations, newRunAt: preCopy ? generations / 2 : nil, preCopy: preCopy,
                    megabytes: 8, threads: 2, paceMicroseconds: 100_000, seed: preCopy ? 61 : 62)
                check(label, outcome.failures.isEmpty && outcome.generations == generations, "\(outcome)")
            } catch {
                check(label, false, "\(error)")
            }
        }
    }
    print("GUEST \(passed) passed, \(failed) failed")
    exit(failed == 0 ? 0 : 1)
case "collect-loop":
    guard arguments.count == 4, let pid = Int32(arguments[2]), let kind = TrackerKind(rawValue: arguments[3]) else {
        fail("usage: collect-loop PID TRACKER")
    }
    do {
        let tracker: any DirtyTracker = try TrackerSelection.start(kind, pid: pid)
        print("tracking")
        var n = 0
        while true {
            let frozen = try FrozenProcess(pid: pid)
            _ = try tracker.collect(frozen)
            frozen.thaw()
            n += 1
            print("collected \(n)")
            fflush(nil)
        }
    } catch {
        fail("\(error)")
    }
default:
    fail("usage: probe | prove TRACKER WORKLOAD ROUNDS SEED | collect-loop PID TRACKER")
}
