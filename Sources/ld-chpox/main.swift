import ArgumentParser
import CommandSupport
import Foundation
import Incremental

@main
struct LdChpox: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ld-chpox",
        abstract: "Rebuild a generation from its chain (and, with the restorer, restart it).",
        discussion: """
        This build can rebuild and verify any generation (--check). Restarting a process from a generation arrives with the restorer; until then ld-chpox without --check refuses.
        """)

    @OptionGroup var storeOptions: StoreOptions
    @Option(name: .long, help: "The chain (the process's name in the store).")
    var name: String
    @Option(name: .long, help: "The generation (default: the newest).")
    var generation: UInt64?
    @Flag(name: .long, help: "Rebuild the generation and verify every chunk; start nothing.")
    var check = false

    func run() throws {
        guard check else {
            FileHandle.standardError.write(Data("ld-chpox: restarting a process is not built yet; use --check to rebuild and verify a generation\n".utf8))
            throw ExitCode.failure
        }
        try reportingErrors("ld-chpox") {
            let store = try storeOptions.open()
            let chain = try store.chain(name)
            guard let target = generation ?? chain.head?.generation else { throw StoreError.noSuchChain(name) }
            let map = try store.pageMap(chain: name, generation: target)
            var bytes = 0
            try store.reader().readPages(map) { _, page in bytes += page.count }
            print("\(name) generation \(target): \(map.pages.count) pages (\(Format.bytes(Int64(bytes)))) rebuilt; every chunk verified")
        }
    }
}
