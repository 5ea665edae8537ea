// chpox-tracker-proof probe
// chpox-tracker-proof prove TRACKER WORKLOAD ROUNDS SEED
// chpox-tracker-proof collect-loop PID TRACKER
//
// `probe` prints what this kernel supports. `prove` runs TrackerProof and exits 0 only with
// zero missed pages (the QEMU guests run this). `collect-loop` attaches to PID and collects
// forever, printing "collected N" each time (the kill tests SIGKILL it at random instants).
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
    for result in probe.results { print("\(result.kind.rawValue): \(result.supported ? "yes" : "no"): \(result.detail)") }
    print("best: \(probe.best.rawValue)")
case "prove":
    guard arguments.count == 6, let kind = TrackerKind(rawValue: arguments[2]), let rounds = Int(arguments[4]), let seed = UInt64(arguments[5]) else {
        fail("usage: prove TRACKER WORKLOAD ROUNDS SEED")
    }
    do {
        let outcome = try TrackerProof.run(kind, workloadPath: arguments[3], rounds: rounds, seed: seed)
        print("PROOF \(outcome)")
        exit(outcome.missedPages == 0 ? 0 : 1)
    } catch {
        fail("\(error)")
    }
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
