// chpox-store-writer STORE CHAIN SEED PAGES [ROUNDS | hold]
//
// STORE may be s3://BUCKET/PREFIX (its cache in $CHPOX_CACHE, settings from the environment).
// Writes generations of a SyntheticMemory into STORE's CHAIN, continuing the chain where it
// stands, until ROUNDS generations have been committed (forever without ROUNDS). Prints
// "committed N" after each commit. The crash tests kill it with SIGKILL at random instants.
//
// With `hold`, it starts one generation, puts random (incompressible) pages until the generation
// has published a pack and more pages are being written to the next one in tmp/, prints
// "published", and waits to be killed: a writer killed mid-generation after publishing packs.
import Foundation
import S3Store
import Store
import StoreTestSupport

#if canImport(Glibc)
import Glibc
#endif

let arguments = CommandLine.arguments
guard arguments.count >= 5, let seed = UInt64(arguments[3]), let pageCount = Int(arguments[4]) else {
    print("usage: chpox-store-writer STORE CHAIN SEED PAGES [ROUNDS]")
    exit(2)
}
let rounds = arguments.count > 5 ? Int(arguments[5]) ?? 0 : Int.max
let hold = arguments.count > 5 && arguments[5] == "hold"
do {
    let store =
        S3StoreLocation.isS3(arguments[1])
        ? try S3Store.open(arguments[1], create: true) : try Store(at: arguments[1], create: true)
    if hold {
        let packs = { (try? store.cachedNames(.pack))?.count ?? 0 }
        let before = packs()
        let writer = try store.beginGeneration(chain: arguments[2])
        var random = SplitMix(seed)
        var page = [UInt64](repeating: 0, count: 512)
        var number: UInt64 = 0
        var extra = 0
        // Frames reach a pack up to four batches of 1024 pages after they are put (filling,
        // compressing, appending, one spare): 5000 pages on, the next pack is being written in tmp/.
        while extra < 5000 {
            for k in page.indices { page[k] = random.next() }
            try page.withUnsafeBytes { try writer.put(firstPage: number, contents: $0) }
            number += 1
            if packs() > before { extra += 1 }
        }
        print("published")
        fflush(nil)
        while true { sleep(60) }
    }
    for _ in 0..<rounds {
        let writer = try store.beginGeneration(chain: arguments[2])
        var memory = SyntheticMemory(seed: seed, rounds: max(Int(writer.generation) - 1, 0), pages: pageCount)
        let change = writer.generation == 0 ? nil : memory.advance()
        try memory.record(change, into: writer)
        let entry = try writer.commit(metadata: Array("round \(memory.round)".utf8))
        print("committed \(entry.generation)")
    }
} catch {
    print("chpox-store-writer: \(error)")
    exit(1)
}
