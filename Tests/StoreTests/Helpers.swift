import Foundation
import Store
import StoreTestSupport
import Syscall
@_exported import TestTools

/// A fresh store directory under /tmp, removed by `cleanup()`.
struct TemporaryStore {
    let path: String

    init(_ label: String = "store") {
        path = NSTemporaryDirectory() + "chpox-test-\(label)-\(UInt64.random(in: 0...UInt64.max))"
    }

    func open(create: Bool = true) throws -> Store { try Store(at: path, create: create) }

    func cleanup() { try? FileManager.default.removeItem(atPath: path) }

    func files(in subdirectory: String, suffix: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: "\(path)/\(subdirectory)").filter { $0.hasSuffix(suffix) }.sorted()
    }
}

/// Writes `rounds` generations of `memory` into `chain` and returns the memory at each.
@discardableResult
func writeChain(_ store: Store, chain: String, seed: UInt64, rounds: Int, pages: Int = 256, dirty: Int = 24) throws -> [SyntheticMemory] {
    var memory = SyntheticMemory(seed: seed, pages: pages, dirtyPerRound: dirty)
    var states: [SyntheticMemory] = []
    for round in 0..<rounds {
        let writer = try store.beginGeneration(chain: chain)
        let change = round == 0 ? nil : memory.advance()
        try memory.record(change, into: writer)
        try writer.commit(metadata: Array("round \(round)".utf8))
        states.append(memory)
    }
    return states
}

/// Rebuilds `generation` and checks every page's bytes against `memory`; returns a failure
/// description or nil.
func mismatch(_ store: Store, chain: String, generation: UInt64, expected memory: SyntheticMemory) throws -> String? {
    let map = try store.pageMap(chain: chain, generation: generation)
    let expected = memory.expectedMap()
    guard map == expected else {
        return "generation \(generation): \(map.pages.count) pages rebuilt, \(expected.pages.count) expected; first difference at \(zip(map.pages, expected.pages).first { $0 != $1 }.map { "\($0.0.page)" } ?? "end")"
    }
    var bad: String?
    try store.reader().readPages(map) { entry, bytes in
        if bad == nil && !bytes.elementsEqual(memory.bytes(of: entry.page)) { bad = "generation \(generation): page \(entry.page) differs" }
    }
    return bad
}
