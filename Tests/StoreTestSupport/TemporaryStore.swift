import Foundation
import Store

/// A fresh store directory under /tmp, removed by `cleanup()`.
public struct TemporaryStore {
    public let path: String

    public init(_ label: String = "store") {
        path = NSTemporaryDirectory() + "chpox-test-\(label)-\(UInt64.random(in: 0...UInt64.max))"
    }

    public func open(create: Bool = true) throws -> Store { try Store(at: path, create: create) }

    public func cleanup() { try? FileManager.default.removeItem(atPath: path) }

    public func files(in subdirectory: String, suffix: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: "\(path)/\(subdirectory)").filter { $0.hasSuffix(suffix) }
            .sorted()
    }
}

/// Writes `rounds` generations of `memory` into `chain` and returns the memory at each.
@discardableResult
public func writeChain(
    _ store: Store, chain: String, seed: UInt64, rounds: Int, pages: Int = 256, dirty: Int = 24
) throws -> [SyntheticMemory] {
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
