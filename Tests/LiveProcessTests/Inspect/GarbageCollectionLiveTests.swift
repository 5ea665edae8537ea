import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Store
import Tracee

extension LiveProcess {
    /// `cpx gc --keep-last` run again and again while `cpx --interval 1` checkpoints a live
    /// process: every kept generation verifies and restarts, under its own number, and the
    /// store's size stays bounded while the chain grows.
    @Suite struct GarbageCollectionLiveTests {
        static let generations = 31
        static let keepLast = 4

        static func packBytes(_ store: String) -> Int64 {
            let packs = store + "/packs"
            return ((try? FileManager.default.contentsOfDirectory(atPath: packs)) ?? []).reduce(0) { total, name in
                total
                    + ((try? FileManager.default.attributesOfItem(atPath: packs + "/" + name)[.size] as? NSNumber)?
                        .int64Value ?? 0)
            }
        }

        @Test(.timeLimit(.minutes(4))) func gcWhileCheckpointingKeepsEveryKeptGenerationWholeAndDiskBounded() throws {
            let target = try ChurnTarget("gc-live", megabytes: 16, threads: 3, seed: 29)
            let log = target.directory + "/cpx.log"
            let output = try FileDescriptor.open(log, [.writeOnly, .create, .truncate])
            let cpx = try ChildProcess.spawn(
                TestTools.path("cpx"),
                [
                    "--store", target.store, "--name", "g", "--interval", "1",
                    "--count", "\(Self.generations)", "--json", "\(target.pid)",
                ], stdout: output)
            output.close()
            func events() throws -> [CheckpointEvent] {
                try JSONDocument.lines(
                    CheckpointEvent.self, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "", growing: true)
            }

            // The chain exists once its first generation is in: GC of a chain not yet written is
            // refused, and a loaded machine may take seconds for the first one.
            for _ in 0..<600 where try !events().contains(where: { $0.event == "generation" }) { usleep(100_000) }

            // GC over and over while cpx writes: (generations taken so far, pack bytes after GC).
            var samples: [(taken: Int, bytes: Int64)] = []
            var collections = 0
            while true {
                usleep(1_500_000)
                let done = try events().contains { $0.event == "completed" }
                let run = try TestTools.run(
                    "cpx", ["gc", "--store", target.store, "--name", "g", "--keep-last", "\(Self.keepLast)", "--json"])
                #expect(run.status == 0, "gc: \(run.errors)")
                if run.status == 0 { collections += 1 }
                let taken = try events().filter { $0.event == "generation" }.count
                samples.append((taken, Self.packBytes(target.store)))
                // Numbers never change: what is kept is the newest generations, by their numbers.
                let chain = try Store(at: target.store).chain("g")
                let numbers = chain.entries.map { Int($0.generation) }
                #expect(
                    numbers == Array((numbers.last! - numbers.count + 1)...numbers.last!),
                    "contiguous newest generations: \(numbers)")
                if done { break }
            }
            #expect(try cpx.wait() == .exited(0))
            let written = try events().compactMap(\.generation)
            #expect(written.count == Self.generations)
            #expect(collections >= 10, "GC ran \(collections) times beside cpx")
            #expect(try target.check().hasPrefix("ok"), "the process was never harmed")

            // One last GC after the writer is done: exactly the newest generations remain.
            #expect(
                try TestTools.run(
                    "cpx", ["gc", "--store", target.store, "--name", "g", "--keep-last", "\(Self.keepLast)"]
                ).status == 0)
            let kept = try Store(at: target.store).chain("g").entries.map { Int($0.generation) }
            #expect(kept == Array((Self.generations - Self.keepLast)..<Self.generations))

            // Disk: everything cpx wrote, against what stays. Without GC the packs would hold
            // every generation's new chunks; with it they hold the kept ones' and little more.
            let storedInAll = written.reduce(Int64(0)) { $0 + Int64($1.storedBytes) }
            let final = Self.packBytes(target.store)
            #expect(final * 2 < storedInAll, "packs \(final) bytes after GC, \(storedInAll) written in all")
            let early = samples.filter { (8..<16).contains($0.taken) }.map(\.bytes).max() ?? 0
            let late = samples.filter { $0.taken >= 20 }.map(\.bytes).max() ?? .max
            #expect(early > 0, "bounded: at most \(early) bytes early, \(late) late")
            #expect(late <= early + early / 2, "bounded: at most \(early) bytes early, \(late) late")

            #expect(try TestTools.run("dumpinfo", ["--store", target.store, "--verify", "--deep"]).status == 0)
            for generation in kept {
                let run = try TestTools.run(
                    "ld-chpox", ["--store", target.store, "--name", "g", "--generation", "\(generation)", "--check"])
                #expect(run.status == 0, "generation \(generation): \(run.errors)")
            }

            // Every kept generation restarts and passes the workload's own check (newest first:
            // a restart cuts the workload's file back to that generation's size).
            let pid = target.pid
            try target.workload.child.send(SIGKILL)
            _ = try target.workload.child.wait()
            let schemas = try JSONSchemaCheck()
            for generation in kept.reversed() {
                let restarted = try WorkloadProcess(
                    executable: TestTools.path("ld-chpox"),
                    arguments: [
                        "--store", target.store, "--name", "g", "--generation", "\(generation)", "--wait", "--json",
                    ])
                // ld-chpox's document first, then the process's own answers on the same stdout.
                let document = try restarted.line()
                #expect(schemas.problems(document) == [], "\(document)")
                let restart = try JSONDocument.decode(RestartDocument.self, document)
                #expect(restart.generation == generation, "\(document)")
                #expect(restart.samePid, "\(document)")
                #expect(restart.pid == restart.originalPid, "\(document)")
                #expect(try restarted.send("restarted") == "noted", "generation \(generation)")
                let check = try restarted.send("check")
                #expect(check.hasPrefix("ok"), "generation \(generation): \(check)")
                #expect(try ProcFS.threads(pid).count == 4, "generation \(generation): every thread, under its pid")
                #expect(try restarted.quit("quit") == .exited(0), "generation \(generation)")
            }
            let sampled = samples.map { "\($0.taken):\($0.bytes)" }.joined(separator: " ")
            print(
                "gc-live: \(written.count) generations, \(collections) collections beside cpx; "
                    + "packs \(final) bytes kept of \(storedInAll) written; "
                    + "early max \(early), late max \(late); samples \(sampled)"
            )
        }
    }
}
