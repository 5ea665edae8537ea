import ArgumentParser
import CommandSupport
import Foundation
import Incremental

@main
struct Cpx: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cpx",
        abstract: "Checkpoint processes into a chpox store, and maintain the store.",
        discussion: """
        Checkpointing a live process (`cpx <pid>`, `cpx --interval`) arrives with the
        checkpointer; the store maintenance commands below work on any store.
        """,
        subcommands: [GC.self, Rebase.self, RebuildIndex.self])
}

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Drop old generations and reclaim the space only they used.",
        discussion: """
        A dropped generation's changes are merged into the next kept one, so every kept
        generation still rebuilds byte for byte, under the same number. The newest generation
        of a chain is always kept. Without a retention option, gc only sweeps garbage left by
        interrupted writes. Safe while `cpx` writes into the same store: gc waits for the
        generation in flight, and writers wait for gc at their next generation.
        """)

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions
    @Option(name: .long, help: "Apply retention to this chain only (default: every chain).")
    var name: String?
    @Option(name: .long, help: "Keep the newest N generations.")
    var keepLast: Int?
    @Option(name: .long, help: ArgumentHelp("Keep generations created within this long (90s, 30m, 12h, 7d, 2w).", valueName: "duration"))
    var keepWithin: String?
    @Option(name: .long, parsing: .upToNextOption, help: "Keep these generation numbers.")
    var keep: [UInt64] = []
    @Option(name: .long, help: "Repack packs whose dead share is over this fraction.")
    var repackThreshold: Double = 0.3
    @Flag(name: .long, help: "Report what would be dropped and freed; change nothing.")
    var dryRun = false

    func validate() throws {
        if let keepLast, keepLast < 1 { throw ValidationError("--keep-last must be at least 1") }
        if let keepWithin, Format.duration(keepWithin) == nil { throw ValidationError("--keep-within takes a number and a unit: 90s, 30m, 12h, 7d, 2w") }
        if !(0...1).contains(repackThreshold) { throw ValidationError("--repack-threshold is a fraction between 0 and 1") }
    }

    func run() throws {
        try reportingErrors("cpx gc") {
            let store = try storeOptions.open()
            let policy = RetentionPolicy(keepLast: keepLast, keepWithinNanoseconds: keepWithin.flatMap(Format.duration),
                                         keep: Set(keep), chains: name.map { [$0] })
            if let name { _ = try store.chain(name) }
            let report = try store.collectGarbage(policy, dryRun: dryRun, repackThreshold: repackThreshold)
            print(output.json ? StoreReports.gcJSON(report, store: store.path) : StoreReports.gcText(report))
        }
    }
}

struct Rebase: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Store a generation's whole page map, so it and later ones rebuild without older generations.",
        discussion: "Older generations stay; `cpx gc --keep-last` can then drop them cheaply.")

    @OptionGroup var storeOptions: StoreOptions
    @Option(name: .long, help: "The chain.")
    var name: String
    @Option(name: .long, help: "The generation to make full (default: the oldest).")
    var generation: UInt64?

    func run() throws {
        try reportingErrors("cpx rebase") {
            let store = try storeOptions.open()
            let chain = try store.chain(name)
            guard let target = generation ?? chain.entries.first?.generation else { throw StoreError.noSuchChain(name) }
            let entry = try store.rebase(chain: name, generation: target)
            print("\(name) generation \(entry.generation) is now full (manifest \(entry.manifest.short))")
        }
    }
}

struct RebuildIndex: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild-index",
        abstract: "Rebuild the chunk index from the packs alone (after index damage).")

    @OptionGroup var storeOptions: StoreOptions

    func run() throws {
        try reportingErrors("cpx rebuild-index") {
            let store = try storeOptions.open()
            let result = try store.rebuildIndex()
            print("indexed \(result.chunks) chunks from \(result.packs) packs")
            for problem in result.skipped { print("skipped \(problem.file): \(problem.message)") }
            if !result.skipped.isEmpty { throw ExitCode.failure }
        }
    }
}
