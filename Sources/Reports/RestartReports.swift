import Incremental

/// What `ld-chpox --json` prints: one document per run, naming its schema (chpox.restart/1,
/// chpox.check/1, chpox.core/1; docs/json-schemas.md).
public enum RestartReports {
    struct Restart: Codable {
        var schema = "chpox.restart/\(StoreReports.schemaVersion)"
        var chain: String
        var generation: UInt64
        var pid: Int32
        var originalPid: Int32
        var samePid: Bool
        var mappings: Int
        var pagesWritten: Int
        var pagesCopied: Int
        var notices: [String]
        /// Every process restarted, the first one first.
        var processes: [Int32]
        /// Their saved pids, in the same order (their pids inside a new PID namespace).
        var originalProcesses: [Int32]
        /// The init of the new PID namespace the tree runs in, where its pids were taken.
        var pidNamespaceInit: Int32?
        /// The TCP connections made again closed (--tcp-close): "process PID fd N: LOCAL to REMOTE".
        var closedConnections: [String]?
        /// The files put back as they were at the generation, and where the file that was there went.
        var restoredFiles: [RestoredFile]?
        /// A lazy restart's page server (--lazy): what it filled, how, and how long it took.
        var lazy: Lazy?
        /// Where the time went until the process ran, step by step.
        var timings: [Timing]
    }

    struct Timing: Codable {
        var step: String
        var milliseconds: Double
    }

    struct Lazy: Codable {
        var faults: Int
        var zeroFaults: Int
        var faultPages: Int
        var streamedPages: Int
        var hintedPages: Int
        var forks: Int
        var layoutEvents: Int
        var milliseconds: Double
        var pagesOfEndedProcesses: Int
        var failure: String?
    }

    struct RestoredFile: Codable {
        var path: String
        var displaced: String?
    }

    public static func restartJSON(
        _ outcome: Restorer.Outcome, chain: String, generation: UInt64, lazy: LazyPageServer.Report? = nil
    ) -> String {
        StoreReports.jsonLine(
            Restart(
                chain: chain, generation: generation, pid: outcome.pid, originalPid: outcome.originalPid,
                samePid: outcome.pid == outcome.originalPid, mappings: outcome.mappings,
                pagesWritten: outcome.pagesWritten, pagesCopied: outcome.pagesCopied, notices: outcome.notices,
                processes: outcome.processes,
                originalProcesses: outcome.originalProcesses, pidNamespaceInit: outcome.namespaceInit,
                closedConnections: outcome.closedConnections.isEmpty ? nil : outcome.closedConnections,
                restoredFiles: outcome.restoredFiles.isEmpty
                    ? nil : outcome.restoredFiles.map { RestoredFile(path: $0.path, displaced: $0.displaced) },
                lazy: lazy.map {
                    Lazy(
                        faults: $0.faults, zeroFaults: $0.zeroFaults, faultPages: $0.faultPages,
                        streamedPages: $0.streamedPages, hintedPages: $0.hintedPages, forks: $0.forks,
                        layoutEvents: $0.layoutEvents, milliseconds: ($0.seconds * 1e6).rounded() / 1e3,
                        pagesOfEndedProcesses: $0.pagesOfEndedProcesses, failure: $0.failure)
                },
                timings: outcome.timings.steps.map {
                    Timing(step: $0.name, milliseconds: ($0.milliseconds * 1000).rounded() / 1000)
                }))
    }

    /// `ld-chpox --timings`: "running after 61.2 ms: store read 20.1 ms, checks 3.0 ms, ...".
    public static func timingsText(_ timings: RestartTimings) -> String {
        "running after \(Format.decimal(Double(timings.totalNanoseconds) / 1e6)) ms: "
            + timings.steps.map { "\($0.name) \(Format.decimal($0.milliseconds)) ms" }.joined(separator: ", ")
    }

    /// `ld-chpox --lazy`'s line once every page is in (or the server failed).
    public static func lazyText(_ report: LazyPageServer.Report, pid: Int32) -> String {
        if let failure = report.failure {
            return "the page server failed before every page of pid \(pid) was in (\(failure)): the restarted "
                + "processes were killed, none ran with a page it never had"
        }
        let ended =
            report.pagesOfEndedProcesses > 0
            ? "; \(report.pagesOfEndedProcesses) pages were never needed: their process ended first" : ""
        return "every page of pid \(pid) is in after \(Format.decimal(report.seconds * 1000)) ms: "
            + "\(report.faultPages) filled on \(report.faults) faults (\(report.zeroFaults) more given the zero "
            + "page), \(report.streamedPages) streamed"
            + (report.hintedPages > 0 ? " (\(report.hintedPages) first, as the last lazy restart touched them)" : "")
            + (report.forks > 0 ? "; \(report.forks) forks served" : "") + ended
    }

    struct Check: Codable {
        var schema = "chpox.check/\(StoreReports.schemaVersion)"
        var store: String
        var chain: String
        var generation: UInt64
        var pages: Int
        var bytes: Int
        var processImage: Bool
        var notRestored: [String]?
    }

    public static func checkJSON(
        store: String, chain: String, generation: UInt64, pages: Int, bytes: Int, processImage: Bool,
        notRestored: [String] = []
    ) -> String {
        StoreReports.json(
            Check(
                store: store, chain: chain, generation: generation, pages: pages, bytes: bytes,
                processImage: processImage, notRestored: notRestored.isEmpty ? nil : notRestored))
    }

    /// `ld-chpox --check`'s text: what was rebuilt and verified, and what a restart runs without.
    public static func checkText(
        chain: String, generation: UInt64, pages: Int, bytes: Int, notRestored: [String]
    ) -> String {
        let rebuilt = "\(chain) generation \(generation): \(pages) pages (\(Format.bytes(Int64(bytes)))) rebuilt"
        return
            ([rebuilt + "; every chunk verified"]
            + notRestored.map { "not restored (skipped at the checkpoint): \($0)" })
            .joined(separator: "\n")
    }

    struct Core: Codable {
        var schema = "chpox.core/\(StoreReports.schemaVersion)"
        var chain: String
        var generation: UInt64
        var file: String
        var executable: String
        var threads: Int
        var segments: Int
        var storedPages: Int
        var filePages: Int
        var bytes: Int64
    }

    public static func coreJSON(
        _ summary: CoreFile.Summary, chain: String, generation: UInt64, file: String, executable: String
    ) -> String {
        StoreReports.json(
            Core(
                chain: chain, generation: generation, file: file, executable: executable, threads: summary.threads,
                segments: summary.segments, storedPages: summary.storedPages, filePages: summary.filePages,
                bytes: summary.bytes))
    }
}
