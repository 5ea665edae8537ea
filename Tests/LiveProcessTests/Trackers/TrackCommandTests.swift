import Foundation
import SoftDirty
import Tracee
import TrackerTestSupport
import TestTools
import Testing

extension LiveProcess {
    /// `cpx --probe` and `cpx track` as a user runs them.
    @Suite struct TrackCommandTests {
        static func run(_ arguments: [String]) throws -> TestTools.Run {
            try TestTools.run("cpx", arguments)
        }

        @Test func probeReportsEveryTrackerAndTheAutomaticChoice() throws {
            let text = try Self.run(["--probe"])
            #expect(text.status == 0)
            for result in probe.results { #expect(text.output.contains("\(result.kind.rawValue): \(result.detail)")) }
            #expect(text.output.contains("auto: \(probe.best.rawValue)"))
            let json = try Self.run(["--probe", "--json"])
            let document = try JSONDocument.decode(ProbeDocument.self, json.output)
            #expect(document.schema == "chpox.probe/1")
            #expect(document.auto == probe.best.rawValue)
            #expect(document.trackers.map(\.name) == probe.results.map(\.kind.rawValue))
            #expect(document.trackers.map(\.supported) == probe.results.map(\.supported))
            #expect(document.trackers.map(\.detail) == probe.results.map(\.detail))
        }

        @Test func trackSamplesALiveProcessAndLeavesItWhole() throws {
            let workload = try DirtyWorkloadProcess(executable: Tools.path("chpox-dirty-workload"), seed: 9)
            try workload.round(0)
            let descriptors = try ProcFS.descriptors(workload.pid)
            let run = try Self.run(["track", "\(workload.pid)", "--count", "2", "--interval", "0.1", "--json"])
            #expect(run.status == 0, "\(run.errors)")
            let events = try JSONDocument.lines(TrackEvent.self, run.output)
            #expect(events.map(\.event) == ["sample", "sample", "sample"])
            let samples = events.compactMap(\.sample)
            #expect(samples.map(\.index) == [0, 1, 2])
            let schemas = try JSONSchemaCheck()
            for line in run.output.split(separator: "\n") { #expect(schemas.problems(String(line)) == []) }
            #expect(samples.first?.tracker == probe.best.rawValue)
            // Sample 0 reports everything; an idle process writes little afterwards.
            let first = try #require(samples.first)
            #expect(first.dirtyPages == first.mappedPages)
            #expect((samples.last?.dirtyPages ?? .max) < first.dirtyPages / 10)
            try workload.round(1)
            #expect(try workload.selfCheck() == "selfcheck ok")
            #expect(try ProcFS.descriptors(workload.pid) == descriptors)
        }

        @Test func badTargetsAndTrackersGiveClearErrors() throws {
            var run = try Self.run(["track", "999999", "--count", "1"])
            #expect(run.status != 0)
            #expect(run.errors.contains("no process with pid 999999"))
            run = try Self.run(["track", "1", "--tracker", "bogus"])
            #expect(run.status != 0)
            #expect(run.errors.contains("unknown tracker 'bogus'"))
            for result in probe.results where !result.supported {
                run = try Self.run(["track", "\(getpid())", "--tracker", result.kind.rawValue, "--count", "1"])
                #expect(run.status != 0)
                #expect(run.errors.contains("tracker \(result.kind.rawValue): \(result.detail)"))
            }
        }
    }
}
