import Foundation
import Incremental
import Syscall
import TestTools
import Testing
import Store
import Tracee

extension LiveProcess {
    /// `cpx --interval` is killed with SIGKILL at random instants (tracker start, pre-copy,
    /// the final stop, compression, commit): the process runs on whole every time (its own
    /// self-check, its descriptor table, no range left registered with a userfaultfd, not
    /// stopped), the store holds only whole generations, and the next run continues the chain.
    @Suite struct CheckpointKillTests {
        static func kill(instants: Int, tracker: String, seed: UInt64) throws {
            let target = try ChurnTarget("cpx-kill-\(tracker)", megabytes: 16, threads: 3, seed: seed)
            let descriptors = try ProcFS.descriptors(target.pid)
            var rng = SystemRandomNumberGenerator()
            var committed = 0
            // One instant more where none of the others landed after a commit (a loaded machine
            // can take longer than any delay below to commit the base): that one waits for a
            // generation of its run to be committed before it kills.
            for instant in 0..<(instants + 1) {
                if instant == instants && committed > 0 { break }
                let cpx = try ChildProcess.spawn(
                    TestTools.path("cpx"),
                    [
                        "--store", target.store, "--name", "k", "--tracker", tracker,
                        "--interval", "0.02", "\(target.pid)",
                    ],
                    stdout: try FileDescriptor.open("/dev/null", [.writeOnly]))
                // From the very start (tracker set-up, the base) to a few generations in.
                usleep(UInt32.random(in: instant % 2 == 0 ? 0...600_000 : 600_000...2_500_000, using: &rng))
                for _ in 0..<1200 where instant == instants {
                    if ((try? Store(at: target.store).chain("k").entries.count) ?? 0) > 0 { break }
                    usleep(50_000)
                }
                try cpx.send(SIGKILL)
                #expect(try cpx.wait() == .signalled(SIGKILL))
                target.waitForHelpers()
                let state = try ProcFS.state(target.pid)
                #expect(
                    !["t", "T"].contains(state), "kill \(instant): the process must not stay stopped (state \(state))")
                #expect(try target.check().hasPrefix("ok"), "kill \(instant): self-check")
                #expect(try ProcFS.descriptors(target.pid) == descriptors, "kill \(instant): descriptor table")
                #expect(
                    try LiveProcess.TrackingEndsTests.registeredPages(target.pid) == 0,
                    "kill \(instant): uffd registration left")
                let chain = (try? Store(at: target.store).chain("k").entries) ?? []
                #expect(
                    chain.map(\.generation) == (0..<UInt64(chain.count)).map { $0 },
                    "kill \(instant): generations contiguous")
                committed = chain.count
            }
            #expect(committed > 0, "some kills landed after a commit")
            let store = try Store(at: target.store)
            let verified = try store.verify(deep: true)
            #expect(verified.isClean, "\(verified.problems)")
            for entry in (try? store.chain("k").entries) ?? [] {
                _ = try store.pageMap(chain: "k", generation: entry.generation)
            }
            // The next run continues the chain.
            let run = try TestTools.run("cpx", ["--store", target.store, "--name", "k", "--json", "\(target.pid)"])
            #expect(run.status == 0, "\(run.errors)")
            let events = try JSONDocument.lines(CheckpointEvent.self, run.output)
            #expect(events.first?.generation?.generation == committed, "\(run.output)")
            #expect(try target.check().hasPrefix("ok"))
            #expect(try target.quit())
        }

        @Test(
            .enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"),
            .timeLimit(.minutes(5)))
        func killingCpxWithUffdWriteProtect() throws {
            try Self.kill(instants: 25, tracker: "uffd-wp", seed: 51)
        }

        @Test(.timeLimit(.minutes(5))) func killingCpxWithTheHashTracker() throws {
            try Self.kill(instants: 15, tracker: "hash", seed: 52)
        }
    }
}
