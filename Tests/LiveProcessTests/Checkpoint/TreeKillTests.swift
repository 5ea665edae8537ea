#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Syscall
import TestTools
import Testing
import Tracee
import TrackerTestSupport

extension LiveProcess {
    /// `cpx` is killed with SIGKILL at random instants while it freezes and copies a tree of four
    /// processes (`chpox-tree-workload`: a root, two children, a grandchild, two threads each):
    /// from the instant it starts (trackers and their helpers set up in each process) to the
    /// whole length of a generation, one-shot and with `--interval` (pre-copy rounds, the final
    /// stop, later generations). After every kill each process of the tree runs on unharmed:
    /// no thread stopped or traced, the same threads, memory map and descriptor table as before
    /// (the workload maps and opens nothing once ready), no range left registered with a
    /// userfaultfd, no chpox-inject helper left, no process added to the tree; and the tree still
    /// works (each member verifies its memory, has received every real-time signal the root
    /// queued to it, frozen or not, and answers the root through a pipe).
    @Suite struct TreeKillTests {
        /// What of one process must come through a kill exactly as it was.
        struct Fixed: Equatable, CustomStringConvertible {
            var threads: [Int32]
            var maps: [String]
            var descriptors: [String]

            init(_ pid: Int32) throws {
                threads = try ProcFS.threads(pid)
                maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)
                    .split(separator: "\n").map(String.init)
                descriptors = try ProcFS.descriptors(pid).map { "\($0) -> \(ProcFS.descriptorTarget(pid, $0) ?? "?")" }
            }

            var description: String { "threads \(threads)\nmaps:\n\(maps.joined(separator: "\n"))\nfds \(descriptors)" }

            /// What differs from `before`, one line for each thing that differs.
            func differences(from before: Fixed) -> [String] {
                var found: [String] = []
                if threads != before.threads { found.append("threads \(threads), were \(before.threads)") }
                let added = maps.filter { !before.maps.contains($0) }
                let removed = before.maps.filter { !maps.contains($0) }
                if !added.isEmpty || !removed.isEmpty { found.append("maps: added \(added), removed \(removed)") }
                if descriptors != before.descriptors { found.append("fds \(descriptors), were \(before.descriptors)") }
                return found
            }
        }

        /// Every thread of `pid` that is stopped (state T or t) or traced (TracerPid not 0).
        static func held(_ pid: Int32) -> [String] {
            guard let threads = try? ProcFS.threads(pid) else { return ["process \(pid) is gone"] }
            var found: [String] = []
            for tid in threads {
                guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
                    let parsed = try? ProcFS.Stat(parsing: stat, file: "stat"),
                    let status = try? ProcFS.status(pid, thread: tid)
                else { continue }  // a thread that ended meanwhile: the thread list is compared later
                if ["t", "T"].contains(parsed.state) { found.append("thread \(tid) of \(pid) state \(parsed.state)") }
                if status.tracer != 0 { found.append("thread \(tid) of \(pid) traced by \(status.tracer)") }
            }
            return found
        }

        /// The chpox-inject helpers working on one of `pids`.
        static func helpers(of pids: [Int32]) -> [Int32] {
            let names = Set(pids.map { "\($0)" })
            return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
                guard let helper = Int32(entry),
                    let command = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(entry)/cmdline"))
                else { return nil }
                let words = command.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                let works = words.first?.hasSuffix("chpox-inject") == true && words.last.map(names.contains) == true
                return works ? helper : nil
            }
        }

        /// Polls `condition` for up to `seconds` (the kernel detaches a dead tracer's tracees
        /// and a helper puts things back a moment after the kill); true once it holds.
        static func eventually(seconds: Double = 2, _ condition: () -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if condition() { return true }
                usleep(2000)
            }
            return condition()
        }

        /// Starts `cpx` on `root` with `arguments` before the pid; its output goes nowhere.
        static func cpx(_ arguments: [String], _ root: Int32) throws -> ChildProcess {
            let nowhere = try FileDescriptor.open("/dev/null", [.writeOnly])
            defer { nowhere.close() }
            return try ChildProcess.spawn(TestTools.path("cpx"), arguments + ["\(root)"], stdout: nowhere)
        }

        static func kill(instants: Int, tracker: String) throws {
            let directory = try RestartTests.scratch("tree-kill-\(tracker)")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let tree = try WorkloadProcess(
                executable: TestTools.path("chpox-tree-workload"), arguments: ["--megabytes", "2", "--pace", "1000"])
            let ready = try tree.line()
            let pids = ProcessTreeTests.ids(ready)
            try #require(ready.hasPrefix("ready") && pids.count == 4, "\(ready)")
            defer { ProcessTreeTests.killTree(pids.reversed()) }
            let children = [pids[0]: [pids[1], pids[2]], pids[1]: [pids[3]], pids[2]: [], pids[3]: []]
            let before = try pids.map(Fixed.init)
            let uffd = tracker == "uffd-wp"

            // One generation of the whole tree, cpx started to cpx ended: the span of the kills.
            let started = Date()
            let measured = try TestTools.run(
                "cpx", ["--store", directory + "/measure", "--tracker", tracker, "\(pids[0])"])
            let generation = Date().timeIntervalSince(started)
            try #require(measured.status == 0, "\(measured.errors)")
            try? FileManager.default.removeItem(atPath: directory + "/measure")
            #expect(try tree.send("check").hasPrefix("ok"))

            var rng = SystemRandomNumberGenerator()
            var landed = 0
            var delays: [Double] = []
            for instant in 0..<instants {
                // One generation of a new chain, killed in its first quarter (a tracker and its
                // helper set up in each process, the first pre-copy freezes) or anywhere in it
                // (pre-copy, the stop of the whole tree, the commit); or generations every 20 ms
                // continuing one chain, killed up to three generations in.
                let oneShot = instant % 3 != 2
                let span = instant % 3 == 0 ? generation / 4 : instant % 3 == 1 ? generation : 3 * generation
                let store = directory + (oneShot ? "/once" : "/interval")
                let arguments =
                    ["--store", store, "--name", oneShot ? "t" : "k", "--tracker", tracker]
                    + (oneShot ? [] : ["--interval", "0.02"])
                let delay = Double.random(in: 0...span, using: &rng)
                delays.append(delay)
                let cpx = try Self.cpx(arguments, pids[0])
                usleep(UInt32(delay * 1_000_000))
                try cpx.send(SIGKILL)
                let ended = try cpx.wait()
                if ended == .signalled(SIGKILL) { landed += 1 } else { #expect(ended == .exited(0), "kill \(instant)") }

                let what =
                    "kill \(instant) (\(oneShot ? "one generation" : "--interval"), after \(Int(delay * 1000)) ms)"
                #expect(Self.eventually { Self.helpers(of: pids).isEmpty }, "\(what): chpox-inject left running")
                var held: [String] = []
                _ = Self.eventually {
                    held = pids.flatMap(Self.held)
                    return held.isEmpty
                }
                #expect(held.isEmpty, "\(what): \(held)")
                for (k, pid) in pids.enumerated() {
                    let differences = try Fixed(pid).differences(from: before[k])
                    #expect(differences.isEmpty, "\(what): process \(pid): \(differences)")
                    #expect(
                        try ProcFS.children(pid) == children[pid], "\(what): the children of \(pid) changed")
                    if uffd {
                        // A killed helper drops the userfaultfd as it exits, after its cmdline
                        // is gone (exit_mm comes before exit_files): polled, as `held` is.
                        var registered: UInt64 = 0
                        _ = Self.eventually {
                            registered = (try? LiveProcess.TrackingEndsTests.registeredPages(pid)) ?? 1
                            return registered == 0
                        }
                        #expect(registered == 0, "\(what): process \(pid) left registered with a userfaultfd")
                    }
                }
                let answer = try tree.send("check")
                #expect(answer.hasPrefix("ok"), "\(what): the tree's self-check: \(answer)")
                if oneShot { try? FileManager.default.removeItem(atPath: store) }
            }
            print(
                """
                tree kill (\(tracker)): one generation took \(Int(generation * 1000)) ms; \(landed) of \(instants) \
                kills landed, after \(delays.map { Int($0 * 1000) }) ms
                """)
            #expect(landed >= instants / 2, "most kills land before cpx ends")

            // The chain the killed runs wrote is whole and continues; the tree still works.
            let run = try TestTools.run(
                "cpx", ["--store", directory + "/interval", "--name", "k", "--tracker", tracker, "\(pids[0])"])
            #expect(run.status == 0, "\(run.errors)")
            let verified = try Store(at: directory + "/interval").verify(deep: false)
            #expect(verified.isClean, "\(verified.problems)")
            #expect(try tree.send("check").hasPrefix("ok"))
            #expect(try tree.quit("quit") == .exited(0))
        }

        @Test(
            .enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"),
            .timeLimit(.minutes(3)))
        func killingCpxLeavesEveryProcessOfATreeWhole() throws {
            try ProcessTreeTests.asSubreaper { try Self.kill(instants: 24, tracker: "uffd-wp") }
        }

        @Test(.timeLimit(.minutes(3))) func killingCpxWithTheHashTrackerLeavesEveryProcessOfATreeWhole() throws {
            try ProcessTreeTests.asSubreaper { try Self.kill(instants: 12, tracker: "hash") }
        }
    }
}
