import Foundation
import Store
import StoreTestSupport
import Syscall
import TestTools

/// Rebuilds `generation` and checks every page's bytes against `memory`; returns a failure
/// description or nil.
func mismatch(_ store: Store, chain: String, generation: UInt64, expected memory: SyntheticMemory) throws -> String? {
    let map = try store.pageMap(chain: chain, generation: generation)
    let expected = memory.expectedMap()
    guard map == expected else {
        let first = zip(map.pages, expected.pages).first { $0 != $1 }.map { "\($0.0.page)" } ?? "end"
        return
            "generation \(generation): \(map.pages.count) pages rebuilt, \(expected.pages.count) expected; "
            + "first difference at \(first)"
    }
    var bad: String?
    try store.reader().readPages(map) { entry, bytes in
        if bad == nil && !bytes.elementsEqual(memory.bytes(of: entry.page)) {
            bad = "generation \(generation): page \(entry.page) differs"
        }
    }
    return bad
}
