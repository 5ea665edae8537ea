import Foundation
import Syscall
import TestTools
import Testing
import Tracee
import TrackerTestSupport

extension LiveProcess {
    /// `ld-chpox --lazy`: the process runs before its memory is in, its pages filled on first
    /// touch through a userfaultfd while the rest stream in. The dirty-page workload proves its
    /// memory against its shadow copy after it moves, forks and empties pages still missing;
    /// the server's end kills the restarted process rather than let it run on zeros. (Every
    /// other restart test runs lazily too in the test command's second pass: CHPOX_TEST_LAZY.)
    @Suite struct LazyRestartTests {
        static let isRoot = getuid() == 0

        /// A dirty workload after three rounds, checkpointed into `store` as chain "dirty", ended.
        static func checkpointedWorkload(store: String, seed: UInt64) throws {
            let original = try WorkloadProcess(executable: TestTools.path("chpox-dirty-workload"), seed: seed)
            for n in 0..<3 { try original.round(n) }
            #expect(try original.selfCheck() == "selfcheck ok")
            try RestartTests.checkpoint(original.pid, store: store, name: "dirty")
            RestartTests.end(original)
        }

        /// Whether process `pid` ends (a zombie, or gone) within four seconds.
        static func ends(_ pid: Int32) -> Bool {
            for _ in 0..<400 {
                let state = (try? ProcFS.state(pid)) ?? "X"
                if state == "Z" || state == "X" { return true }
                usleep(10_000)
            }
            return false
        }

        static func lazyRestart(store: String, extra: [String]) throws -> WorkloadProcess {
            try WorkloadProcess(
                executable: TestTools.path("ld-chpox"),
                arguments: ["--store", store, "--name", "dirty", "--wait", "--lazy"] + extra)
        }

        @Test(.enabled(if: isRoot, "a lazy restart needs root"), .timeLimit(.minutes(2)))
        func pagesStillMissingAreServedThroughMoveForkAndMadvise() throws {
            let directory = try RestartTests.scratch("lazy-events")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            try Self.checkpointedWorkload(store: store, seed: 21)
            // Nothing is streamed for a minute: every page comes by a fault or not at all.
            let restarted = try Self.lazyRestart(store: store, extra: ["--lazy-stream-after", "60", "--json"])
            #expect(try restarted.send("m") == "moved")  // the main region moves while its pages are missing
            #expect(try restarted.send("f") == "fork ok")  // a child's copy, missing pages and all
            #expect(try restarted.selfCheck() == "selfcheck ok")
            for n in 3..<8 { try restarted.round(n) }  // mremaps, munmaps, MADV_DONTNEED, forks
            #expect(try restarted.selfCheck() == "selfcheck ok")
            #expect(try restarted.send("f") == "fork ok")
            #expect(try restarted.quit() == .exited(0))
            // The document comes once every page is in: here, once the process has ended.
            let document = try JSONDocument.decode(RestartDocument.self, try restarted.line())
            let lazy = try #require(document.lazy)
            #expect(lazy.failure == nil)
            #expect(lazy.faults > 0)
            #expect(lazy.forks >= 2, "the two forks of \"f\" were served")
            #expect(lazy.layoutEvents >= 1, "the move of the main region was followed")
            #expect(lazy.streamedPages < lazy.faultPages + 16, "next to nothing streamed in the minute held")
        }

        @Test(.enabled(if: isRoot, "a lazy restart needs root"), .timeLimit(.minutes(2)))
        func aStreamedRestartMatchesItsShadowAndLearnsWhatWasTouchedFirst() throws {
            let directory = try RestartTests.scratch("lazy-stream")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            try Self.checkpointedWorkload(store: store, seed: 22)
            // First lazy restart: touched pages are remembered for the chain.
            let first = try Self.lazyRestart(store: store, extra: ["--lazy-stream-after", "60", "--json"])
            #expect(try first.selfCheck() == "selfcheck ok")
            #expect(try first.quit() == .exited(0))
            let touched = try #require(try JSONDocument.decode(RestartDocument.self, try first.line()).lazy)
            #expect(touched.faults > 0)
            let order = store + "/chains/dirty.touched"
            let attributes = try FileManager.default.attributesOfItem(atPath: order)
            #expect((attributes[.posixPermissions] as? Int) == 0o600)
            // Second: streamed at once, the pages touched first before the others. Its document
            // comes once every page is in: between the workload's answers, or after them.
            let second = try Self.lazyRestart(store: store, extra: ["--json"])
            var document: String?
            func answer(_ command: String) throws -> String {
                try second.write(command)
                var line = try second.line()
                if line.hasPrefix("{") {
                    document = line
                    line = try second.line()
                }
                return line
            }
            #expect(try answer("c") == "selfcheck ok")
            #expect(try answer("r 3") == "ok 3")
            #expect(try answer("c") == "selfcheck ok")
            #expect(try second.quit() == .exited(0))
            if document == nil { document = try second.line() }
            let text = try #require(document)
            let streamed = try #require(try JSONDocument.decode(RestartDocument.self, text).lazy)
            #expect(streamed.failure == nil)
            #expect(streamed.faultPages + streamed.streamedPages > 0)
            #expect(streamed.hintedPages + streamed.faultPages > 0)
        }

        @Test(.enabled(if: isRoot, "a lazy restart needs root"), .timeLimit(.minutes(2)))
        func pagesOnBothSidesOfAMappingBoundaryAreFilled() throws {
            // Mappings side by side whose stored pages a fault's 16-page block (and a streamed run)
            // spans. The kernel fills no run across mappings (ENOENT for the whole run): each page
            // must still come.
            let answer = try MappingRestartTests.answerAfterRestart(
                "lazy-split", script: CopyFillTests.mappingBoundaries,
                restartWith: ["--lazy", "--lazy-stream-after", "60"])
            #expect(answer == "wrong []")
        }

        @Test(.enabled(if: isRoot, "a lazy restart needs root"), .timeLimit(.minutes(2)))
        func killingThePageServerKillsTheProcessInsteadOfLettingItRunOnZeros() throws {
            let directory = try RestartTests.scratch("lazy-kill")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            try Self.checkpointedWorkload(store: store, seed: 23)
            let server = try Self.lazyRestart(store: store, extra: ["--lazy-stream-after", "60"])
            #expect(try server.send("a").hasPrefix("main "))  // running, most pages still missing
            let restarted = try #require(RestartTests.child(of: server.pid))
            let guardian = try #require(RestartTests.children(of: server.pid).first { RestartTests.isGuardian($0) })
            try server.child.send(SIGKILL)
            #expect(try server.child.wait() == .signalled(SIGKILL))
            // The guardian kills it (and ends): it never answers from memory it did not get.
            try? server.write("c")
            #expect(
                Self.ends(restarted),
                "the restarted process (pid \(restarted)) still runs after its page server was killed")
            #expect((try? server.line()) == nil, "it answered after its server died")
            #expect(Self.ends(guardian), "the guardian (pid \(guardian)) is still there")
        }

        @Test(.enabled(if: isRoot, "a lazy restart needs root"), .timeLimit(.minutes(2)))
        func thePlanSaysWhatIsFilledLazilyAndTheDelayGoesWithLazy() throws {
            let directory = try RestartTests.scratch("lazy-plan")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            try Self.checkpointedWorkload(store: store, seed: 24)
            let plan = try TestTools.run("ld-chpox", ["--store", store, "--name", "dirty", "--plan", "--lazy"])
            #expect(plan.status == 0, "\(plan.errors)")
            #expect(plan.output.contains("with a userfaultfd of the process"), "\(plan.output)")
            let refused = try TestTools.run(
                "ld-chpox", ["--store", store, "--name", "dirty", "--lazy-stream-after", "5"])
            #expect(refused.status == 64)
            #expect(refused.errors.contains("--lazy-stream-after goes with --lazy"), "\(refused.errors)")
        }
    }
}
