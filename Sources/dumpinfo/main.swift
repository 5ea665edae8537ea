import ArgumentParser
import CommandSupport
import Foundation
import Incremental
import Reports
import Store

@main
struct DumpInfo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dumpinfo",
        abstract: "Show, compare and verify what a chpox store holds.",
        discussion: """
            Exactly one of --chain, --generation, --diff, --verify or --stats. Examples:

              dumpinfo --chain                    every generation of every chain
              dumpinfo --generation 7 --maps      the process at generation 7 and its memory map
              dumpinfo --diff 3 7                 what changed between generations 3 and 7
              dumpinfo --verify --deep            decompress and rehash every chunk

            --generation and --diff read the chain named by --name, or the store's only chain. Exit status 1 on an \
            error or when verify finds damage, 64 on bad arguments. With --json every form prints one JSON document \
            naming its schema (chpox.chain/1, chpox.generation/1, chpox.diff/1, chpox.verify/1, chpox.stats/1); \
            docs/json-schemas.md documents them.
            """)

    @OptionGroup var storeOptions: StoreOptions
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Print JSON for scripts: chpox.chain/1 (--chain), chpox.generation/1, chpox.diff/1, chpox.verify/1, "
                + "chpox.stats/1."))
    var json = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "One row per generation: number, id, time, kind, parent, tracker, pages, new chunks, bytes stored, "
                + "dedup, pause."))
    var chain = false
    @Option(
        name: .long, parsing: .unconditional,
        help: ArgumentHelp(
            "The process at this generation (a number, or 'latest'): command, threads, descriptors, signal handlers, "
                + "memory.",
            valueName: "n"))
    var generation: String?
    @Flag(name: .long, help: "With --generation: every thread's registers.")
    var regs = false
    @Flag(
        name: .long,
        help: "With --generation: every mapping (address, size, protection, backing, resident and stored pages).")
    var maps = false
    @Option(
        name: .long, parsing: .upToNextOption,
        help: ArgumentHelp(
            "What changed from generation A to B: pages per mapping, descriptors, threads, signals.", valueName: "a b"))
    var diff: [UInt64] = []
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Check the store: manifests, chain links, index, pack trailers, and that no image asks for more ids "
                + "than the store's owner has."))
    var verify = false
    @Flag(name: .long, help: "With --verify: also decompress and rehash every chunk.")
    var deep = false
    @Flag(
        name: .long,
        help: "With --verify: list every damaged chunk (without it, one line per damaged pack names the count).")
    var verbose = false
    @Flag(
        name: .long,
        help: "Store totals: chains, generations, chunks, packs, bytes, dedup across chains, garbage reclaimable.")
    var stats = false
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The chain (with --chain: only this one; with --generation and --diff: needed when the store holds "
                + "several)."))
    var name: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "With --generation: write this file as the generation kept it (its path when the tree wrote it) to "
                + "--to.", valueName: "path"))
    var extractFile: String?
    @Option(name: .long, help: ArgumentHelp("Where --extract-file writes (a new file).", valueName: "file"))
    var to: String?

    func validate() throws {
        guard [chain, generation != nil, !diff.isEmpty, verify, stats].filter({ $0 }).count == 1 else {
            throw ValidationError("give one of --chain, --generation, --diff, --verify or --stats")
        }
        if deep && !verify { throw ValidationError("--deep goes with --verify") }
        if verbose && !verify { throw ValidationError("--verbose goes with --verify") }
        if (regs || maps) && generation == nil { throw ValidationError("--regs and --maps go with --generation") }
        if !diff.isEmpty && diff.count != 2 { throw ValidationError("--diff takes two generation numbers: --diff A B") }
        if (extractFile == nil) != (to == nil) || (extractFile != nil && generation == nil) {
            throw ValidationError("--extract-file PATH goes with --generation N and --to FILE")
        }
        if let generation, generation != "latest", UInt64(generation) == nil {
            throw ValidationError("--generation takes a generation number or 'latest', not '\(generation)'")
        }
    }

    func run() throws {
        try reportingErrors("dumpinfo") {
            let store = try storeOptions.openToRead()
            if chain {
                let rows = try StoreReports.generationRows(store, chains: name.map { [$0] } ?? store.chainNames())
                print(json ? StoreReports.chainJSON(rows, store: store.location) : StoreReports.chainTable(rows))
            } else if let generation, let extractFile, let to {
                let detail = try GenerationDetail.load(
                    store, chain: try store.chainName(name), generation: UInt64(generation))
                guard let file = detail.image?.files?.first(where: { $0.path == extractFile }) else {
                    throw ValidationError(
                        "generation \(detail.entry.generation) kept no file \(extractFile) (dumpinfo --generation "
                            + "\(detail.entry.generation) lists the files it kept)")
                }
                let bytes = try RestoredFiles.contents(of: file, map: detail.map, store: store)
                guard FileManager.default.createFile(atPath: to, contents: Data(bytes)) else {
                    throw ValidationError("cannot write \(to)")
                }
                print("\(extractFile) at generation \(detail.entry.generation): \(bytes.count) bytes written to \(to)")
            } else if let generation {
                let detail = try GenerationDetail.load(
                    store, chain: try store.chainName(name), generation: UInt64(generation))
                print(
                    json
                        ? GenerationReports.json(detail, store: store.location)
                        : GenerationReports.text(detail, regs: regs, maps: maps))
            } else if diff.count == 2 {
                let changes = try GenerationDiff.load(
                    store, chain: try store.chainName(name), from: diff[0], to: diff[1])
                print(json ? DiffReports.json(changes, store: store.location) : DiffReports.text(changes))
            } else if verify {
                let progress = ProgressLine(deep ? "verifying packs (decompress and rehash)" : "reading pack trailers")
                var report = try store.verify(deep: deep, progress: progress.update)
                try report.auditImages(of: store)
                progress.finish()
                print(
                    json
                        ? StoreReports.verifyJSON(report, store: store.location)
                        : StoreReports.verifyText(report, store: store.location, verbose: verbose))
                if !report.isClean { throw ExitCode.failure }
            } else {
                let statistics = try StoreReports.statistics(store)
                print(json ? StoreReports.statisticsJSON(statistics) : StoreReports.statisticsText(statistics))
            }
        }
    }
}
