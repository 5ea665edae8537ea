import Foundation
import Store
import StoreTestSupport
import TestTools
import Testing

/// The commands as a user runs them: exit status, text and JSON.
@Suite(.serialized) struct CommandTests {
    static func run(_ tool: String, _ arguments: [String]) throws -> TestTools.Run {
        try TestTools.run(tool, arguments)
    }

    @Test func verifyChainStatsAndCheck() throws {
        let temporary = TemporaryStore("cli")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        try writeChain(store, chain: "app", seed: 4, rounds: 5, pages: 64)

        var run = try Self.run("dumpinfo", ["--store", temporary.path, "--verify", "--deep"])
        #expect(run.status == 0)
        #expect(run.output.contains("OK: no damage found"))

        run = try Self.run("dumpinfo", ["--store", temporary.path, "--chain", "--json"])
        #expect(run.status == 0)
        let chain = try JSONDocument.decode(ChainDocument.self, run.output)
        #expect(chain.schema == "chpox.chain/1")
        let rows = chain.generations
        #expect(rows.map(\.generation) == [0, 1, 2, 3, 4])
        #expect(rows.map(\.kind) == ["full", "delta", "delta", "delta", "delta"])
        #expect(rows[0].parent == nil)
        #expect(rows[1].parent == rows[0].id)

        run = try Self.run("dumpinfo", ["--store", temporary.path, "--chain"])
        #expect(run.output.split(separator: "\n").first?.hasPrefix("CHAIN  GEN  ID") == true)
        #expect(run.output.split(separator: "\n").count == 6)

        run = try Self.run("dumpinfo", ["--store", temporary.path, "--stats", "--json"])
        let stats = try JSONDocument.decode(StatsDocument.self, run.output)
        #expect(stats.schema == "chpox.stats/1")
        #expect(stats.generations == 5)

        // The store's only chain needs no --name.
        run = try Self.run("ld-chpox", ["--store", temporary.path, "--generation", "2", "--check"])
        #expect(run.status == 0, "\(run.errors)")
        #expect(run.output.contains("app generation 2:"))
        #expect(run.output.contains("every chunk verified"))
        run = try Self.run("ld-chpox", ["--store", temporary.path, "--generation", "2", "--check", "--json"])
        #expect(try JSONSchemaCheck().problems(run.output) == [])
        let check = try JSONDocument.decode(CheckDocument.self, run.output)
        #expect(check.processImage == false)
        #expect(check.chain == "app")
        #expect(check.generation == 2)

        run = try Self.run("cpx", ["gc", "--store", temporary.path, "--keep-last", "2", "--dry-run", "--json"])
        #expect(run.status == 0)
        let gc = try JSONDocument.decode(GarbageCollectionDocument.self, run.output)
        #expect(gc.schema == "chpox.gc/1")
        #expect(gc.dryRun)
        #expect(gc.dropped.map(\.generation) == [0, 1, 2])
        #expect(gc.keptGenerations == 2)
        #expect(try store.chain("app").entries.count == 5, "a dry run changes nothing")

        run = try Self.run("cpx", ["gc", "--store", temporary.path, "--keep-last", "2"])
        #expect(run.status == 0)
        #expect(run.output.contains("dropped app: generations 0, 1, 2"))
        #expect(try store.chain("app").entries.map(\.generation) == [3, 4])
    }

    @Test func damageAndBadInputGiveClearErrorsAndNonZeroExits() throws {
        let temporary = TemporaryStore("clibad")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        try writeChain(store, chain: "app", seed: 4, rounds: 3, pages: 32)
        let entry = try store.chain("app").entries[1]
        let file = "\(temporary.path)/manifests/\(entry.manifest.hex).gen"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count / 2] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: file))

        var run = try Self.run("dumpinfo", ["--store", temporary.path, "--verify"])
        #expect(run.status == 1)
        #expect(run.output.contains("DAMAGED app#1"))
        #expect(run.output.contains("app#2 (on 1)"))
        run = try Self.run("dumpinfo", ["--store", temporary.path, "--verify", "--json"])
        let report = try JSONDocument.decode(VerifyDocument.self, run.output)
        #expect(!report.clean)
        #expect(report.damaged.map(\.generation) == [1])
        #expect(report.dependents.map(\.generation) == [2])

        run = try Self.run("ld-chpox", ["--store", temporary.path, "--name", "app", "--generation", "2", "--check"])
        #expect(run.status != 0)
        #expect(run.errors.contains("generation 1 does not verify"))
        run = try Self.run("dumpinfo", ["--store", temporary.path + "/nope", "--chain"])
        #expect(run.status != 0)
        #expect(run.errors.contains("is not a chpox store"))
        run = try Self.run("ld-chpox", ["--store", temporary.path, "--name", "missing", "--check"])
        #expect(run.status != 0)
        #expect(run.errors.contains("no chain named 'missing'"))
        run = try Self.run("cpx", ["gc", "--store", temporary.path, "--keep-within", "soon"])
        #expect(run.status != 0)
        #expect(run.errors.contains("--keep-within takes a number and a unit"))
    }
}

/// The store commands on damaged stores and after GC: what they print is the point.
@Suite(.serialized) struct DamagedStoreCommandTests {
    static func run(_ tool: String, _ arguments: [String]) throws -> TestTools.Run {
        try TestTools.run(tool, arguments)
    }

    @Test func gcOnAStoreWithALostPackExitsOneAndItsDryRunSaysTheSame() throws {
        let fixture = try DamagedStoreFixture("cli-gc-lost-pack")
        defer { fixture.cleanup() }
        let pack = try #require(fixture.packsOf[5].first)
        try fixture.deletePack(pack)
        let chain = try fixture.store.chain("d")
        let store = fixture.temporary.path
        let dry = try Self.run("cpx", ["gc", "--store", store, "--keep-last", "3", "--dry-run"])
        let real = try Self.run("cpx", ["gc", "--store", store, "--keep-last", "3"])
        #expect(real.status == 1, "\(real.output)")
        #expect(dry.status == real.status)
        #expect(dry.errors == real.errors)
        #expect(real.errors.contains("packs/\(pack): missing"), "\(real.errors)")
        #expect(real.errors.contains("dumpinfo --verify"), "\(real.errors)")
        #expect(try fixture.store.chain("d") == chain, "nothing dropped")
    }

    @Test func verifyOfALostPackIsOneLinePerPackAndVerboseListsEveryChunk() throws {
        let fixture = try DamagedStoreFixture("cli-verify-lost-pack", rounds: 6, pages: 256)
        defer { fixture.cleanup() }
        let pack = try #require(fixture.packsOf[0].first)
        let chunks = try fixture.chunks(inPack: pack).map(\.hex).sorted()
        let users = try fixture.generations(using: try fixture.chunks(inPack: pack))
        #expect(chunks.count > 100)
        try fixture.deletePack(pack)
        let store = fixture.temporary.path

        let text = try Self.run("dumpinfo", ["--store", store, "--verify"])
        #expect(text.status == 1)
        let lines = text.output.split(separator: "\n")
        #expect(lines.count < 12, "\(lines.count) lines for one lost pack of \(chunks.count) chunks")
        #expect(lines.filter { $0.hasPrefix("  PROBLEM") && $0.contains(pack) }.count == 1, "\(text.output)")
        #expect(chunks.allSatisfy { !text.output.contains($0) }, "no chunk listed without --verbose")

        let verbose = try Self.run("dumpinfo", ["--store", store, "--verify", "--verbose"])
        #expect(verbose.status == 1, "\(verbose.errors)")
        #expect(chunks.allSatisfy { verbose.output.contains("chunk \($0)") }, "--verbose lists every chunk")

        let json = try Self.run("dumpinfo", ["--store", store, "--verify", "--json"])
        #expect(json.status == 1)
        #expect(try JSONSchemaCheck().problems(json.output) == [])
        let report = try JSONDocument.decode(VerifyDocument.self, json.output)
        let problem = try #require(report.problems.first { $0.file == "packs/\(pack)" })
        #expect(problem.chunks ?? [] == chunks, "the JSON keeps every chunk")
        #expect(Set((problem.generations ?? []).map { UInt64($0.generation) }) == Set(users))
    }

    /// `cpx copy` between two local stores: the same chain (manifest ids) there, every
    /// generation rebuilding byte for byte, the JSON as documented; a second copy finds it all
    /// there; a destination whose chain differs is refused with exit 1.
    @Test func copyAChainToAnotherStore() throws {
        let source = TemporaryStore("cli-copy-from")
        let destination = TemporaryStore("cli-copy-to")
        defer {
            source.cleanup()
            destination.cleanup()
        }
        let states = try writeChain(try source.open(), chain: "job", seed: 12, rounds: 4)
        let first = try Self.run("cpx", ["copy", "--store", source.path, "--to", destination.path])
        #expect(first.status == 0, "\(first.errors)")
        #expect(first.output.hasPrefix("job: 4 generations copied to \(destination.path)"), "\(first.output)")
        let copied = try destination.open(create: false)
        #expect(try copied.chain("job") == source.open(create: false).chain("job"))
        for generation in 0..<4 {
            #expect(
                try mismatch(copied, chain: "job", generation: UInt64(generation), expected: states[generation]) == nil)
        }
        let again = try Self.run("cpx", ["copy", "--store", source.path, "--to", destination.path, "--json"])
        #expect(again.status == 0, "\(again.errors)")
        #expect(try JSONSchemaCheck().problems(again.output) == [])
        #expect(again.output.contains("\"generationsPresent\" : 4"), "\(again.output)")

        let other = TemporaryStore("cli-copy-other")
        defer { other.cleanup() }
        try writeChain(try other.open(), chain: "job", seed: 13, rounds: 1)
        let refused = try Self.run("cpx", ["copy", "--store", other.path, "--to", destination.path])
        #expect(refused.status == 1)
        #expect(refused.errors.contains("is not an earlier copy"), "\(refused.errors)")
    }

    @Test func chainListingAfterGCShowsThePagesAMergedGenerationRebuilds() throws {
        let temporary = TemporaryStore("cli-gc-pages")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        try writeChain(store, chain: "app", seed: 9, rounds: 8, pages: 96, dirty: 24)
        #expect(try Self.run("cpx", ["gc", "--store", temporary.path, "--keep-last", "3"]).status == 0)
        let rebuilt = try store.pageMap(chain: "app", generation: 5).pages.count

        let json = try Self.run("dumpinfo", ["--store", temporary.path, "--chain", "--json"])
        let rows = try JSONDocument.decode(ChainDocument.self, json.output).generations
        #expect(rows.map(\.generation) == [5, 6, 7])
        #expect(rows.first?.kind == "full")
        #expect(rows.first?.pagesWritten == rebuilt, "generation 5 rebuilds \(rebuilt) pages")

        // The table's PAGES cell (right-aligned under its header) says the same.
        let table = try Self.run("dumpinfo", ["--store", temporary.path, "--chain"]).output.split(separator: "\n")
        let header = try #require(table.first.map(String.init))
        let end = try #require(header.range(of: "PAGES")).upperBound
        let row = try #require(table.dropFirst().first.map(String.init))
        let cell = row[..<row.index(row.startIndex, offsetBy: header.distance(from: header.startIndex, to: end))]
        #expect(cell.split(separator: " ").last.map(String.init) == "\(rebuilt)", "\(header)\n\(row)")
    }
}

/// Every command's help says its exit statuses, gives examples, and names the JSON schema its
/// own --json prints (not another command's).
@Suite struct HelpTests {
    @Test func everyCommandsHelpSaysItsExitStatusExamplesAndItsOwnSchemas() throws {
        let cases: [([String], [String])] = [
            (["cpx"], []),
            (["cpx", "checkpoint"], ["chpox.checkpoint/1", "chpox.probe/1"]),
            (["cpx", "track"], ["chpox.track/1"]),
            (["cpx", "gc"], ["chpox.gc/1"]),
            (["cpx", "rebase"], ["chpox.rebase/1"]),
            (["cpx", "rebuild-index"], ["chpox.rebuild-index/1"]),
            (["cpx", "copy"], ["chpox.copy/1"]),
            (["ld-chpox"], ["chpox.restart/1", "chpox.check/1", "chpox.core/1"]),
            (["dumpinfo"], ["chpox.chain/1", "chpox.generation/1", "chpox.diff/1", "chpox.verify/1", "chpox.stats/1"]),
        ]
        for (command, schemas) in cases {
            let run = try TestTools.run(command[0], Array(command.dropFirst()) + ["--help"])
            #expect(run.status == 0, "\(command)")
            // Words a line break fell between read as one space.
            let text = run.output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            #expect(text.contains("Exit status"), "\(command)")
            #expect(text.contains("Example"), "\(command)")
            for schema in schemas { #expect(text.contains(schema), "\(command): \(schema)") }
            #expect(!text.contains("e.g. chpox.verify/1"), "\(command)")
        }
    }
}
