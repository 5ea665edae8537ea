import Foundation
import Incremental
import TestTools
import TrackerTestSupport

/// The churn workload started for a checkpoint test, with a scratch directory holding its
/// output file and a store, both removed at the end.
final class ChurnTarget {
    let directory: String
    let workload: WorkloadProcess
    var pid: Int32 { workload.pid }
    var store: String { directory + "/store" }

    init(_ name: String, megabytes: Int = 16, threads: Int = 3, seed: UInt64 = 1) throws {
        directory = NSTemporaryDirectory() + "chpox-\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        workload = try WorkloadProcess(
            executable: TestTools.path("chpox-churn-workload"),
            arguments: [
                "--megabytes", "\(megabytes)", "--threads", "\(threads)", "--file", directory + "/records",
                "--seed", "\(seed)", "--pace", "20000",
            ])
        let ready = try workload.line()
        guard ready.hasPrefix("ready") else { throw WorkloadProcess.WorkloadError.unexpected(ready) }
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// The workload's own proof that it is whole: memory, registers, signals, its file.
    func check() throws -> String { try workload.send("check") }

    /// Ends the workload; true if it exited cleanly.
    func quit() throws -> Bool { try workload.quit("quit") == .exited(0) }

    /// Waits until no chpox-inject helper works on the workload (one may outlive a killed cpx
    /// by the moment it takes to put everything back).
    func waitForHelpers() {
        for _ in 0..<2000 {
            let busy = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).contains { entry in
                guard Int32(entry) != nil,
                    let command = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(entry)/cmdline"))
                else { return false }
                let words = command.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                return words.first?.hasSuffix("chpox-inject") == true && words.last == "\(pid)"
            }
            if !busy { return }
            usleep(1000)
        }
    }
}
