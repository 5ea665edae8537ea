import ArgumentParser
import CommandSupport
import Foundation
import Incremental

@main
struct DumpInfo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dumpinfo",
        abstract: "Show and verify what a chpox store holds.",
        discussion: """
        Exactly one of --chain, --verify or --stats. Exit status 1 when verify finds damage. JSON documents name their schema (chpox.chain/1, chpox.verify/1, chpox.stats/1).
        """)

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions
    @Flag(name: .long, help: "One row per generation: number, id, time, kind, parent, pages, new chunks, bytes stored, dedup.")
    var chain = false
    @Flag(name: .long, help: "Check the store: manifests, chain links, index, pack trailers.")
    var verify = false
    @Flag(name: .long, help: "With --verify: also decompress and rehash every chunk.")
    var deep = false
    @Flag(name: .long, help: "Store totals: chains, generations, chunks, packs, bytes, savings.")
    var stats = false
    @Option(name: .long, help: "Only this chain (with --chain).")
    var name: String?

    func validate() throws {
        guard [chain, verify, stats].filter({ $0 }).count == 1 else { throw ValidationError("give one of --chain, --verify or --stats") }
        if deep && !verify { throw ValidationError("--deep goes with --verify") }
    }

    func run() throws {
        try reportingErrors("dumpinfo") {
            let store = try storeOptions.open()
            if chain {
                let rows = try StoreReports.generationRows(store, chains: name.map { [$0] } ?? store.chainNames())
                print(output.json ? StoreReports.chainJSON(rows, store: store.path) : StoreReports.chainTable(rows))
            } else if verify {
                let progress = ProgressLine(deep ? "verifying packs (decompress and rehash)" : "reading pack trailers")
                let report = try store.verify(deep: deep, progress: progress.update)
                progress.finish()
                print(output.json ? StoreReports.verifyJSON(report, store: store.path) : StoreReports.verifyText(report, store: store.path))
                if !report.isClean { throw ExitCode.failure }
            } else {
                let statistics = try StoreReports.statistics(store)
                print(output.json ? StoreReports.statisticsJSON(statistics) : StoreReports.statisticsText(statistics))
            }
        }
    }
}
