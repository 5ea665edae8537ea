// chpox-store-writer STORE CHAIN SEED PAGES [ROUNDS]
//
// Writes generations of a SyntheticMemory into STORE's CHAIN, continuing the chain where it
// stands, until ROUNDS generations have been committed (forever without ROUNDS). Prints
// "committed N" after each commit. The crash tests kill it with SIGKILL at random instants.
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
do {
    let store = try Store(at: arguments[1], create: true)
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
