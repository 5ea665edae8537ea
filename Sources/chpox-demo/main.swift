import ArgumentParser
import CommandSupport
import Foundation
import Incremental
import Reports
import Store
import StoreTestSupport
import Syscall

/// The README's main command, for now a tour of the store: a simulated process's memory is
/// checkpointed generation by generation, an earlier generation is rebuilt and compared with
/// what the memory held then, old generations are collected and the store verified.
@main
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chpox-demo",
        abstract: "Checkpoint a simulated process into a store, rebuild an earlier generation, collect and verify.")

    @OptionGroup var storeOptions: StoreOptions
    @Option(name: .long, help: "Generations to write.")
    var generations = 12
    @Option(name: .long, help: "Pages of simulated memory (4 KiB each).")
    var pages = 8192
    @Option(name: .long, help: "Generations to keep when collecting.")
    var keepLast = 4

    func validate() throws {
        guard generations >= 3, pages >= 64, keepLast >= 1 else {
            throw ValidationError("need --generations >= 3, --pages >= 64, --keep-last >= 1")
        }
    }

    func run() throws {
        try reportingErrors("chpox-demo") {
            let store = try storeOptions.open(create: true)
            let chain = "demo"
            let seed: UInt64 = 2026
            let start = (try? store.chain(chain).nextGeneration) ?? 0
            print("store: \(store.path)")
            let size = Format.bytes(Int64(Page.bytes(pages)))
            print("== checkpointing a simulated process (\(pages) pages, \(size)) into chain '\(chain)'")
            var memory = SyntheticMemory(
                seed: seed, rounds: max(Int(start) - 1, 0), pages: pages, dirtyPerRound: pages / 100)
            var snapshots: [UInt64: SyntheticMemory] = [:]
            for _ in 0..<generations {
                let writer = try store.beginGeneration(chain: chain)
                let change = writer.generation == 0 ? nil : memory.advance()
                try memory.record(change, into: writer)
                let entry = try writer.commit(metadata: Array("simulated round \(memory.round)".utf8))
                let s = try store.manifest(entry.manifest).statistics
                snapshots[entry.generation] = memory
                let kind = entry.kind == .full ? "full" : "delta"
                print(
                    "  generation \(entry.generation) (\(kind)): \(s.pagesWritten) pages, \(s.zeroPages) zero, "
                        + "\(s.newChunks) new chunks, \(Format.bytes(s.storedBytes)) stored"
                )
            }

            print("\n== dumpinfo --chain --name \(chain)")
            print(StoreReports.chainTable(try StoreReports.generationRows(store, chains: [chain])))

            let head = try store.chain(chain).head!.generation
            let earlier = head - UInt64(generations / 2)
            print("\n== rebuilding generation \(earlier) and comparing it with the memory at that round")
            let map = try store.pageMap(chain: chain, generation: earlier)
            let expected = snapshots[earlier]!
            var differing = 0
            try store.reader().readPages(map) { entry, bytes in
                if !bytes.elementsEqual(expected.bytes(of: entry.page)) { differing += 1 }
            }
            guard map.pages.count == expected.pages.count, differing == 0 else {
                throw StoreError.brokenChain(
                    chain: chain, generation: earlier, reason: "\(differing) pages differ from the simulated memory")
            }
            print("  \(map.pages.count) pages, byte for byte identical to the memory at generation \(earlier)")

            print("\n== cpx gc --keep-last \(keepLast)")
            print(StoreReports.gcText(try store.collectGarbage(RetentionPolicy(keepLast: keepLast, chains: [chain]))))
            let kept = try store.chain(chain).entries.map(\.generation)
            let last = try store.pageMap(chain: chain, generation: head)
            let verdict = last == memory.expectedMap() ? "identical" : "DIFFERENT"
            print(
                "  kept generations \(kept.map(String.init).joined(separator: ", ")); "
                    + "generation \(head) still rebuilds: \(verdict)"
            )

            print("\n== dumpinfo --verify --deep")
            let report = try store.verify(deep: true)
            print(StoreReports.verifyText(report, store: store.path))
            print("\n== dumpinfo --stats")
            print(StoreReports.statisticsText(try StoreReports.statistics(store)))
            if !report.isClean { throw ExitCode.failure }
        }
    }
}
