import Foundation
import Store
import StoreTestSupport
import Syscall
import TestTools
import Testing

/// A child writing generations is killed with SIGKILL at random instants; after each kill the
/// store verifies clean and every committed generation rebuilds exactly.
@Suite(.serialized) struct CrashTests {
    @Test(.timeLimit(.minutes(10))) func killedWriterLeavesOnlyCommittedGenerations() throws {
        let temporary = TemporaryStore("crash")
        defer { temporary.cleanup() }
        let writerTool = TestTools.path("chpox-store-writer")
        let seed: UInt64 = 99, pages = 160
        var rng = SplitMix(2024)
        var expected: [ChunkID: PageMap] = [:]  // by manifest id: computed once per generation
        var states: [SyntheticMemory] = [SyntheticMemory(seed: seed, pages: pages)]
        var kills = 0
        var lastCommitted: UInt64? = nil
        var interruptedMidGeneration = 0

        while kills < 50 {
            let child = try ChildProcess.spawn(
                writerTool, [temporary.path, "crash", "\(seed)", "\(pages)"],
                stdout: try FileDescriptor.open("/dev/null", [.writeOnly]))
            usleep(useconds_t(20_000 + rng.next() % 250_000))
            try child.send(SIGKILL)
            #expect(try child.wait() == .signalled(SIGKILL))
            kills += 1

            guard FileManager.default.fileExists(atPath: temporary.path + "/chains/crash.chain") else { continue }
            let store = try temporary.open(create: false)
            let chain = try store.chain("crash")
            // Generation numbers are contiguous: an interrupted generation is redone, not skipped.
            #expect(chain.entries.map(\.generation) == Array(0..<UInt64(chain.entries.count)))
            if chain.head?.generation == lastCommitted { interruptedMidGeneration += 1 }
            lastCommitted = chain.head?.generation
            while states.count < chain.entries.count {
                var next = states[states.count - 1]
                _ = next.advance()
                states.append(next)
            }
            for entry in chain.entries {
                let want = expected[entry.manifest] ?? states[Int(entry.generation)].expectedMap()
                expected[entry.manifest] = want
                #expect(
                    try store.pageMap(chain: "crash", generation: entry.generation) == want,
                    "generation \(entry.generation) after kill \(kills)")
            }
            if let head = chain.head {
                #expect(
                    try mismatch(
                        store, chain: "crash", generation: head.generation, expected: states[Int(head.generation)])
                        == nil)
            }
            let report = try store.verify(deep: true)
            #expect(report.isClean, "after kill \(kills): \(report.problems.prefix(3)) \(report.damaged)")
        }
        let store = try temporary.open(create: false)
        #expect(try store.chain("crash").entries.count > 5, "the writer should have committed several generations")
        // GC removes what the killed writers left behind and loses nothing.
        _ = try store.collectGarbage(RetentionPolicy())
        let report = try store.verify(deep: true)
        #expect(report.isClean)
        #expect(report.garbagePacks == 0)
        #expect(try temporary.files(in: "tmp", suffix: "").isEmpty)
        for entry in try store.chain("crash").entries {
            #expect(try store.pageMap(chain: "crash", generation: entry.generation) == expected[entry.manifest])
        }
    }
}
