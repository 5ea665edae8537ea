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

        @Test(
            .enabled(
                if: mappedFilesMatch,
                "the golden /1 store maps /usr/bin/sleep, libc and locale files that differ on this machine"),
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
