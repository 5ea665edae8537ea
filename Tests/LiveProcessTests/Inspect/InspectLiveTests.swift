import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// dumpinfo and `cpx gc` on chains of real processes: the diff of two generations against
    /// the pages the program is known to have written, and retention while `cpx --interval`
    /// keeps writing.
    @Suite struct InspectLiveTests {
        /// Pages (by address) of the diff's ranges that fall inside [start, start + size).
        static func changedPages(_ diff: DiffDocument, in start: UInt64, size: UInt64) throws -> Set<UInt64> {
            var pages = Set<UInt64>()
            for mapping in diff.mappings {
                for range in mapping.ranges {
                    let first = try #require(JSONDocument.hex(range.start), "\(range.start)")
                    for k in 0..<UInt64(range.pages) where (start..<(start + size)).contains(first + k * 4096) {
                        pages.insert(first + k * 4096)
                    }
                }
            }
            return pages
        }

        @Test(.timeLimit(.minutes(2))) func diffOfTwoGenerationsIsExactlyThePagesTheProgramWrote() throws {
            let directory = NSTemporaryDirectory() + "chpox-inspect-diff-\(getpid())"
            try? FileManager.default.removeItem(atPath: directory)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let workload = try WorkloadProcess(executable: TestTools.path("chpox-dirty-workload"), seed: 17)
            try workload.round(0)
            let words = try workload.send("a").split(separator: " ")
            let main = try #require(UInt64(words[1].dropFirst(2), radix: 16))
            let shadow = try #require(UInt64(words[3].dropFirst(2), radix: 16))
            let size: UInt64 = 4096 * 4096
            let schemas = try JSONSchemaCheck()

            var generator = SystemRandomNumberGenerator()
            var written: [Set<UInt64>] = []
            for generation in 0..<3 {
                let run = try TestTools.run("cpx", ["--store", store, "--name", "w", "\(workload.pid)"])
                #expect(run.status == 0, "\(run.errors)")
                if generation == 2 { break }
                // Scattered pages and one run of neighbours, different each time.
                var pages = Set((0..<30).map { _ in UInt64.random(in: 0..<4000, using: &generator) })
                let run0 = UInt64.random(in: 0..<4000, using: &generator)
                pages.formUnion(run0..<(run0 + 7))
                #expect(try workload.send("w " + pages.sorted().map(String.init).joined(separator: " ")) == "ok")
                written.append(pages)
            }
            for (a, pages) in written.enumerated() {
                let run = try TestTools.run("dumpinfo", ["--store", store, "--diff", "\(a)", "\(a + 1)", "--json"])
                #expect(run.status == 0, "\(run.errors)")
                #expect(schemas.problems(run.output) == [])
                let diff = try JSONDocument.decode(DiffDocument.self, run.output)
                for (name, base) in [("main region", main), ("shadow", shadow)] {
                    let got = try Self.changedPages(diff, in: base, size: size),
                        want = Set(pages.map { base + $0 * 4096 })
                    let same = got == want
                    #expect(
                        same,
                        """
                        \(name), \(a) -> \(a + 1): \(got.subtracting(want).count) pages too many, \
                        \(want.subtracting(got).count) missing of \(want.count)
                        """
                    )
                }
                // The text names the same count for the mapping holding the region.
                let text = try TestTools.run("dumpinfo", ["--store", store, "--diff", "\(a)", "\(a + 1)"]).output
                #expect(text.contains("pages changed"))
            }
            // Across both steps: the union (a page written twice is one change).
            let run = try TestTools.run("dumpinfo", ["--store", store, "--diff", "0", "2", "--json"])
            let union = written.reduce(Set<UInt64>()) { $0.union($1) }
            let same =
                try Self.changedPages(JSONDocument.decode(DiffDocument.self, run.output), in: main, size: size)
                == Set(union.map { main + $0 * 4096 })
            #expect(same, "0 -> 2 is the union of what was written")

            // The generation itself: the process as dumpinfo shows it.
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "2", "--json"])
            #expect(schemas.problems(shown.output) == [])
            let process = try #require(try JSONDocument.decode(GenerationDocument.self, shown.output).process)
            #expect(process.pid == Int(workload.pid))
            let holding = try #require(
                process.mappings.first { m in
                    guard let start = JSONDocument.hex(m.start), let end = JSONDocument.hex(m.end) else { return false }
                    return start <= main && main + size <= end
                })
            #expect(holding.storedPages >= 4096, "the whole main region is stored")
            #expect((holding.residentPages ?? 0) >= 4096, "and was resident")
            let text = try TestTools.run("dumpinfo", ["--store", store, "--generation", "2", "--maps", "--regs"])
            #expect(text.status == 0)
            #expect(text.output.contains("MEMORY MAP"))
            #expect(text.output.contains("orig_rax"))
            #expect(try workload.selfCheck() == "selfcheck ok")
        }
    }
}
