import Foundation
import Store
import StoreTestSupport
import Syscall
import Testing

@Suite struct RoundTripTests {
    @Test func everyGenerationOfSeveralChainsRebuildsExactly() throws {
        let temporary = TemporaryStore("roundtrip")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        let a = try writeChain(store, chain: "alpha", seed: 11, rounds: 12)
        let b = try writeChain(store, chain: "beta", seed: 12, rounds: 8, pages: 300, dirty: 60)
        #expect(try store.chainNames() == ["alpha", "beta"])
        for (g, memory) in a.enumerated() {
            #expect(try mismatch(store, chain: "alpha", generation: UInt64(g), expected: memory) == nil)
        }
        for (g, memory) in b.enumerated() {
            #expect(try mismatch(store, chain: "beta", generation: UInt64(g), expected: memory) == nil)
        }
        // A store opened afresh (another process) sees the same.
        let reopened = try temporary.open(create: false)
        #expect(try mismatch(reopened, chain: "alpha", generation: 11, expected: a[11]) == nil)
        #expect(try reopened.verify(deep: true).isClean)
    }

    @Test func zeroAndDuplicatePagesAreNotStored() throws {
        let temporary = TemporaryStore("dedup")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * Page.size, alignment: Page.size)
        defer { page.deallocate() }
        page.initializeMemory(as: UInt8.self, repeating: 0)
        for k in 0..<32 { page.storeBytes(of: UInt64(k % 4 + 1), toByteOffset: k * Page.size, as: UInt64.self) }
        let writer = try store.beginGeneration(chain: "d")
        try writer.put(firstPage: 100, contents: UnsafeRawBufferPointer(page))
        let entry = try writer.commit()
        let manifest = try store.manifest(entry.manifest)
        // 32 zero pages, 32 pages of 4 distinct contents.
        #expect(manifest.statistics.pagesWritten == 64)
        #expect(manifest.statistics.zeroPages == 32)
        #expect(manifest.statistics.newChunks == 4)
        let map = try store.pageMap(chain: "d", generation: 0)
        #expect(map.pages.count == 64)
        #expect(map.pages.filter { $0.chunk == .zeroPage }.count == 32)
    }

    @Test func identicalSecondChainAddsAlmostNothing() throws {
        let temporary = TemporaryStore("twin")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        try writeChain(store, chain: "first", seed: 5, rounds: 4)
        let firstBytes = try store.chain("first").entries.reduce(UInt64(0)) {
            $0 + (try store.manifest($1.manifest).statistics.storedBytes)
        }
        try writeChain(store, chain: "second", seed: 5, rounds: 4)
        let secondBytes = try store.chain("second").entries.reduce(UInt64(0)) {
            $0 + (try store.manifest($1.manifest).statistics.storedBytes)
        }
        #expect(firstBytes > 0)
        #expect(secondBytes == 0)
    }

    @Test func longChainRebuildsFromSnapshots() throws {
        let temporary = TemporaryStore("long")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        let states = try writeChain(store, chain: "long", seed: 3, rounds: 80, pages: 128, dirty: 6)
        // Snapshots every 32 generations bound the deltas a rebuild reads.
        #expect(try temporary.files(in: "snapshots", suffix: ".map").count == 2)
        for g in [0, 1, 31, 32, 33, 63, 64, 65, 79] {
            #expect(try mismatch(store, chain: "long", generation: UInt64(g), expected: states[g]) == nil)
        }
        // Without the cache, the chain alone gives the same maps.
        for name in try temporary.files(in: "snapshots", suffix: ".map") {
            try FileManager.default.removeItem(atPath: "\(temporary.path)/snapshots/\(name)")
        }
        #expect(try mismatch(store, chain: "long", generation: 79, expected: states[79]) == nil)
    }

    @Test func unmapThenMapInOneGeneration() throws {
        let temporary = TemporaryStore("remap")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        let pages = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 * Page.size, alignment: Page.size)
        defer { pages.deallocate() }
        for k in 0..<8 { pages.storeBytes(of: UInt64(k + 1), toByteOffset: k * Page.size, as: UInt64.self) }
        var writer = try store.beginGeneration(chain: "r")
        try writer.put(firstPage: 10, contents: UnsafeRawBufferPointer(pages))
        try writer.commit()
        writer = try store.beginGeneration(chain: "r")
        writer.unmap(PageRange(first: 10, count: 8))
        try writer.put(firstPage: 12, contents: UnsafeRawBufferPointer(rebasing: pages[0..<(2 * Page.size)]))
        try writer.commit()
        let map = try store.pageMap(chain: "r", generation: 1)
        #expect(map.pages.map(\.page) == [12, 13])
        #expect(try store.pageMap(chain: "r", generation: 0).pages.count == 8)
    }

    @Test func oneWriterPerChain() throws {
        let temporary = TemporaryStore("busy")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        let first = try store.beginGeneration(chain: "c")
        #expect(throws: StoreError.chainBusy(chain: "c", holder: getpid())) {
            _ = try store.beginGeneration(chain: "c")
        }
        // Another chain is independent.
        let other = try store.beginGeneration(chain: "other")
        other.abandon()
        first.abandon()
        #expect(try store.beginGeneration(chain: "c").generation == 0)
    }

    @Test func badNamesAndMissingThingsAreNamed() throws {
        let temporary = TemporaryStore("names")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        #expect(throws: StoreError.invalidChainName("../x")) { _ = try store.beginGeneration(chain: "../x") }
        #expect(throws: StoreError.noSuchChain("nope")) { _ = try store.chain("nope") }
        try writeChain(store, chain: "n", seed: 1, rounds: 1)
        #expect(throws: StoreError.noSuchGeneration(chain: "n", generation: 4)) {
            _ = try store.pageMap(chain: "n", generation: 4)
        }
    }
}
