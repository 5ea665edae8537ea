import Foundation
import Store
import StoreTestSupport
import TestTools
import Testing

/// dumpinfo as people and scripts read it, on the fixture store (InspectFixture): the text
/// against golden files in Tests/IncrementalTests/Golden (`CHPOX_UPDATE_GOLDEN=1 swift test --filter
/// InspectTests` rewrites them; review the diff), and every JSON document against
/// docs/json-schemas.md.
@Suite(.serialized) struct InspectTests {
    static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")

    /// Runs dumpinfo on a fresh fixture store; the store's path reads `<store>`.
    static func dumpinfo(_ arguments: [String], in temporary: TemporaryStore) throws -> TestTools.Run {
        var run = try TestTools.run("dumpinfo", ["--store", temporary.path] + arguments)
        run.output = run.output.replacingOccurrences(of: temporary.path, with: "<store>")
        return run
    }

    static func fixture() throws -> TemporaryStore {
        let temporary = TemporaryStore("inspect")
        try InspectFixture.build(try temporary.open())
        return temporary
    }

    static let goldenCases: [(file: String, arguments: [String])] = [
        ("chain.txt", ["--chain"]),
        ("generation-0.txt", ["--generation", "0"]),
        ("generation-1-regs-maps.txt", ["--generation", "latest", "--regs", "--maps"]),
        ("diff-0-1.txt", ["--diff", "0", "1"]),
        ("stats.txt", ["--stats"]),
        ("verify.txt", ["--verify", "--deep"]),
    ]

    @Test func humanOutputMatchesGoldenFiles() throws {
        let temporary = try Self.fixture()
        defer { temporary.cleanup() }
        let update = ProcessInfo.processInfo.environment["CHPOX_UPDATE_GOLDEN"] == "1"
        for (file, arguments) in Self.goldenCases {
            let run = try Self.dumpinfo(arguments, in: temporary)
            #expect(run.status == 0, "dumpinfo \(arguments): \(run.errors)")
            let url = Self.golden.appendingPathComponent(file)
            if update {
                try FileManager.default.createDirectory(at: Self.golden, withIntermediateDirectories: true)
                try run.output.write(to: url, atomically: true, encoding: .utf8)
                continue
            }
            let expected = try String(contentsOf: url, encoding: .utf8)
            if run.output != expected {
                let got = run.output.split(separator: "\n", omittingEmptySubsequences: false)
                let want = expected.split(separator: "\n", omittingEmptySubsequences: false)
                let line = (0..<min(got.count, want.count)).first { got[$0] != want[$0] } ?? min(got.count, want.count)
                let gotLine = line < got.count ? String(got[line]) : "<end>"
                let wantLine = line < want.count ? String(want[line]) : "<end>"
                let command = "dumpinfo \(arguments.joined(separator: " "))"
                Issue.record(
                    """
                    \(command) differs from Golden/\(file) at line \(line + 1):
                    got:      \(gotLine)
                    expected: \(wantLine)
                    """
                )
            }
        }
    }

    @Test func everyJSONDocumentMatchesItsDocumentedSchema() throws {
        let temporary = try Self.fixture()
        defer { temporary.cleanup() }
        let schemas = try JSONSchemaCheck()
        for arguments in Self.goldenCases.map(\.arguments) {
            let run = try Self.dumpinfo(arguments + ["--json"], in: temporary)
            #expect(run.status == 0, "dumpinfo \(arguments) --json: \(run.errors)")
            #expect(schemas.problems(run.output) == [], "dumpinfo \(arguments.joined(separator: " ")) --json")
        }
        for arguments in [
            ["gc", "--store", temporary.path, "--keep-last", "1", "--dry-run", "--json"], ["--probe", "--json"],
            ["rebase", "--store", temporary.path, "--generation", "1", "--json"],
            ["rebuild-index", "--store", temporary.path, "--json"],
        ] {
            let run = try TestTools.run("cpx", arguments)
            #expect(run.status == 0, "cpx \(arguments): \(run.errors)")
            #expect(schemas.problems(run.output) == [], "cpx \(arguments.joined(separator: " "))")
        }
    }

    @Test func schemaCheckFindsUndocumentedMissingAndMistypedFields() throws {
        let schemas = try JSONSchemaCheck()
        #expect(schemas.schemas.keys.contains("chpox.generation/1"))
        #expect(schemas.schemas.keys.contains("chpox.checkpoint/1 event generation"))
        let good =
            #"{"schema": "chpox.probe/1", "auto": "hash", "#
            + #""trackers": [{"name": "hash", "supported": true, "detail": "x"}]}"#
        #expect(schemas.problems(good) == [])
        let extra = #"{"schema": "chpox.probe/1", "auto": "hash", "trackers": [], "surprise": 1}"#
        #expect(schemas.problems(extra).contains { $0.contains("surprise is printed but not documented") })
        let missing = #"{"schema": "chpox.probe/1", "trackers": []}"#
        #expect(
            schemas.problems(missing).contains { $0.contains("auto is documented as always present but is missing") })
        let mistyped =
            #"{"schema": "chpox.probe/1", "auto": "hash", "#
            + #""trackers": [{"name": "hash", "supported": "yes", "detail": "x"}]}"#
        #expect(
            schemas.problems(mistyped).contains { $0.contains("trackers[].supported is string, documented as boolean") }
        )
    }

    @Test func diffNamesExactlyTheChangesTheFixtureMade() throws {
        let temporary = try Self.fixture()
        defer { temporary.cleanup() }
        let run = try Self.dumpinfo(["--diff", "0", "1", "--json"], in: temporary)
        let document = try JSONDocument.decode(DiffDocument.self, run.output)
        #expect(document.changedPages == Int(InspectFixture.expectedChangedPages))
        let got = document.mappings.map { "\($0.change) \($0.start) \($0.changedPages)" }
        let want = InspectFixture.expectedMappings.map { "\($0.0) 0x\(String($0.1, radix: 16)) \($0.2)" }
        #expect(got == want)
        let anonymous = try #require(document.mappings.first)
        #expect(anonymous.ranges.map { "\($0.start)+\($0.pages)" } == ["0x10002000+3", "0x10009000+1", "0x1000c000+1"])
        func subjects(_ changes: [DiffDocument.Change]) -> [String] { changes.map { "\($0.change) \($0.subject)" } }
        #expect(subjects(document.descriptors) == ["changed fd 1", "removed fd 3", "added fd 4"])
        #expect(subjects(document.threads) == ["changed thread 1001", "removed thread 1002"])
        #expect(
            subjects(document.signals) == [
                "added SIGINT", "changed SIGUSR1", "changed pending signals (process)", "changed ITIMER_REAL",
            ])
        #expect(subjects(document.process) == ["changed umask"])
        let fd1 = try #require(document.descriptors.first)
        #expect(fd1.before == "offset 4096 size 4096")
        #expect(fd1.after == "offset 8192 size 8192")
    }

    @Test func badArgumentsAreRefusedWithAReason() throws {
        let temporary = try Self.fixture()
        defer { temporary.cleanup() }
        var run = try Self.dumpinfo(["--generation", "7"], in: temporary)
        #expect(run.status == 1, "\(run.errors)")
        #expect(run.errors.contains("no generation 7"), "\(run.errors)")
        run = try Self.dumpinfo(["--diff", "0"], in: temporary)
        #expect(run.status == 64, "\(run.errors)")
        #expect(run.errors.contains("--diff takes two generation numbers"), "\(run.errors)")
        run = try Self.dumpinfo(["--generation", "soon"], in: temporary)
        #expect(run.status == 64, "\(run.errors)")
        #expect(run.errors.contains("a generation number or 'latest'"), "\(run.errors)")
        run = try Self.dumpinfo(["--maps"], in: temporary)
        #expect(run.status == 64, "\(run.errors)")
        // A second chain: --generation and --diff must be told which.
        let writer = try temporary.open().beginGeneration(chain: "other")
        try InspectFixture.put(writer, address: 0x1000_0000, pages: 0..<1, salt: 0)
        try writer.commit()
        run = try Self.dumpinfo(["--generation", "0"], in: temporary)
        #expect(run.status == 1, "\(run.errors)")
        #expect(run.errors.contains("holds 2 chains (fixture, other): name one with --name"), "\(run.errors)")
        run = try Self.dumpinfo(["--generation", "0", "--name", "other"], in: temporary)
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("no process image"), "\(run.output)")
        // Its one page is also the fixture's: shared across chains.
        run = try Self.dumpinfo(["--stats", "--json"], in: temporary)
        let stats = try JSONDocument.decode(StatsDocument.self, run.output)
        let referenced = try #require(stats.referencedChunks)
        let across = try #require(stats.dedupAcrossChains)
        #expect(abs(across - Double(referenced + 1) / Double(referenced)) < 1e-9)
    }
}
