import Foundation
import Incremental
import Syscall
import TestTools
import Testing
import Tracee

extension LiveProcess {
    /// Images written in the first format restart with today's ld-chpox: a real `chpox.image/1`
    /// store from the golden files (see Golden/README.md).
    @Suite struct ImageFormatTests {
        static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Golden/sleep-image-v1")

        /// Whether the files the golden process mapped are the ones here, byte for byte.
        static var mappedFilesMatch: Bool {
            let run = try? TestTools.run(
                "/usr/bin/sha256sum", ["--check", "--quiet", golden.appendingPathComponent("mapped-files.sha256").path])
            return run?.status == 0
        }

        /// Whether every hard resource limit of the golden process is at most this machine's: a
        /// hard limit is raised only with CAP_SYS_RESOURCE, which root lacks here, and the nproc
        /// and sigpending limits follow the memory of the machine that made the image (a restart
        /// that cannot set one is refused, as it must be).
        static var limitsFit: Bool {
            let copy = NSTemporaryDirectory() + "chpox-golden-limits-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: copy) }
            guard
                (try? FileManager.default.copyItem(atPath: golden.appendingPathComponent("store").path, toPath: copy))
                    != nil, (try? TestTools.run("/bin/chmod", ["-R", "go-rwx", copy])) != nil,
                let plan = try? TestTools.run("ld-chpox", ["--store", copy, "--plan"]), plan.status == 0,
                let ours = try? String(contentsOfFile: "/proc/self/limits", encoding: .utf8)
            else { return false }
            let names = ["nproc": "Max processes", "sigpending": "Max pending signals", "nofile": "Max open files"]
            for line in plan.output.split(separator: "\n") {
                let words = line.split(separator: " ")  // "limit NAME: SOFT / HARD"
                guard words.count == 5, words[0] == "limit", let name = names[String(words[1].dropLast())],
                    let wanted = UInt64(words[4]),
                    let row = ours.split(separator: "\n").first(where: { $0.hasPrefix(name) })
                else { continue }
                let hard = row.split(separator: " ").dropFirst(name.split(separator: " ").count + 1).first
                if let hard, let have = UInt64(hard), wanted > have { return false }
            }
            return true
        }

        @Test(
            .enabled(
                if: mappedFilesMatch,
                "the golden /1 store maps /usr/bin/sleep, libc and locale files that differ on this machine"),
            .enabled(
                if: limitsFit,
                "the golden process's hard nproc or sigpending limit (they follow its machine's memory) is above this machine's, and root here lacks CAP_SYS_RESOURCE to raise it"
            ),
            .timeLimit(.minutes(2)))
        func aVersion1ImageFromTheGoldenStoreRestarts() throws {
            let directory = try RestartTests.scratch("image-v1")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            try FileManager.default.copyItem(atPath: Self.golden.appendingPathComponent("store").path, toPath: store)
            // git keeps neither the store's modes nor its empty folders.
            _ = try TestTools.run("/bin/chmod", ["-R", "go-rwx", store])
            let check = try TestTools.run("ld-chpox", ["--store", store, "--check"])
            #expect(check.status == 0, "\(check.errors)")

            let run = try TestTools.run("ld-chpox", ["--store", store, "--json"])
            #expect(run.status == 0, "\(run.errors)")
            let outcome = try JSONDecoder().decode(RestartDocument.self, from: Data(run.output.utf8))
            let pid = Int32(outcome.pid)
            defer { kill(pid, SIGKILL) }
            #expect(outcome.originalPid == 19899)
            #expect(ProcFS.link(pid, "exe") == "/usr/bin/sleep")
            let command = try ProcFS.bytes(pid, "cmdline").split(separator: 0).map {
                String(decoding: $0, as: UTF8.self)
            }
            #expect(command == ["/usr/bin/sleep", "100000"])
            #expect(ProcFS.link(pid, "cwd") == "/tmp")
            // Back inside clock_nanosleep, and still there a moment later.
            usleep(200_000)
            #expect(try ProcFS.state(pid) == "S")
        }
    }
}
