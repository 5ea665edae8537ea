import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Store

extension LiveProcess {
    /// `ld-chpox --core FILE`: any generation of a chain as an ELF core file that gdb opens with
    /// the process's threads, registers and memory as they were at that generation.
    @Suite struct CoreFileTests {
        static let gdb = "/usr/bin/gdb"
        static var hasGDB: Bool { FileManager.default.isExecutableFile(atPath: gdb) }

        static func debugger(_ executable: String, _ core: String, _ commands: [String]) throws -> String {
            let run = try TestTools.run(
                gdb, ["-batch", "-nx"] + commands.flatMap { ["-ex", $0] } + [executable, core])
            return run.output + run.errors
        }

        /// `--core FILE` over an existing file or a symlink makes a new 0600 file of the caller's in
        /// its place: it never takes the old file's owner and mode, nor writes through the link.
        @Test(.timeLimit(.minutes(2))) func aCoreFileIsAlwaysANewPrivateFile() throws {
            let directory = try RestartTests.scratch("core-owner")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let workload = try WorkloadProcess(executable: TestTools.path("chpox-stack-workload"), arguments: [])
            #expect(try workload.line() == "waiting 21 0")
            let checkpoint = try TestTools.run(
                "cpx", ["--store", directory + "/store", "--name", "c", "\(workload.pid)"])
            #expect(checkpoint.status == 0, "\(checkpoint.errors)")
            RestartTests.end(workload)

            // A file another user made and left writable by all.
            let open = directory + "/open.core"
            #expect(FileManager.default.createFile(atPath: open, contents: Data("theirs".utf8)))
            #expect(chmod(open, 0o666) == 0)
            #expect(chown(open, 65534, 65534) == 0)
            // A symlink to a file that must not change.
            let victim = directory + "/victim"
            #expect(FileManager.default.createFile(atPath: victim, contents: Data("precious".utf8)))
            let link = directory + "/link.core"
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: victim)

            for path in [open, link, directory + "/new.core"] {
                let run = try TestTools.run("ld-chpox", ["--store", directory + "/store", "--core", path])
                #expect(run.status == 0, "\(path): \(run.errors)")
                let status = try FileDescriptor.currentDirectory.status(of: path)
                #expect(status.isRegularFile, "\(path)")
                #expect(status.permissions == 0o600, "\(path)")
                #expect(status.owner == getuid(), "\(path)")
                #expect(status.size > 4096, "\(path)")
            }
            #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory).filter {
                $0.hasSuffix(".partial")
            }
            #expect(leftovers.isEmpty)
        }

        @Test(.enabled(if: hasGDB, "gdb is not installed"), .timeLimit(.minutes(2)))
        func gdbShowsEachGenerationsStackAndValues() throws {
            let directory = NSTemporaryDirectory() + "chpox-core-\(getpid())"
            try? FileManager.default.removeItem(atPath: directory)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let executable = TestTools.path("chpox-stack-workload")
            let workload = try WorkloadProcess(executable: executable, arguments: [])
            #expect(try workload.line() == "waiting 21 0")
            // Generation k is taken after k + 1 lines: its `counter` is k + 1.
            for k in 0..<3 {
                #expect(try workload.send("line") == "waiting 21 \(k + 1)")
                let run = try TestTools.run(
                    "cpx", ["--store", directory + "/store", "--name", "stack", "\(workload.pid)"])
                #expect(run.status == 0, "\(run.errors)")
            }
            for k in [0, 2, 1] {
                let core = directory + "/\(k).core"
                let written = try TestTools.run(
                    "ld-chpox",
                    ["--store", directory + "/store", "--name", "stack", "--generation", "\(k)", "--core", core])
                #expect(written.status == 0, "\(written.errors)")
                #expect(written.output.contains("open it with: gdb"))
                let mode = try FileDescriptor.open(core, [.readOnly]).status().permissions
                #expect(mode == 0o600)
                let text = try Self.debugger(
                    executable, core,
                    ["bt", "print chpox_marker", "print counter", "frame function middle", "print depth_value"])
                let frames = ["inner_wait", "middle", "outer", "main"].map { name in
                    text.range(of: "in \(name) ")?.lowerBound
                }
                #expect(frames.allSatisfy { $0 != nil }, "generation \(k): backtrace\n\(text)")
                #expect(frames.compactMap { $0 } == frames.compactMap { $0 }.sorted(), "frames in order")
                #expect(text.contains("$1 = 4242"), "\(text)")
                #expect(text.contains("$2 = \(k + 1)"), "generation \(k): counter\n\(text)")
                #expect(text.contains("$3 = 21"), "\(text)")
            }
            _ = try workload.quit("q")
        }

        @Test(.enabled(if: hasGDB, "gdb is not installed"), .timeLimit(.minutes(2)))
        func gdbSeesEveryThreadWithItsRegisters() throws {
            let target = try ChurnTarget("core-threads", megabytes: 8, threads: 4)
            let run = try TestTools.run("cpx", ["--store", target.store, "--name", "churn", "--json", "\(target.pid)"])
            #expect(run.status == 0, "\(run.errors)")
            let store = try Store(at: target.store)
            let image = try ProcessImage(
                decoding: try store.manifest(chain: "churn", generation: 0).metadata, generation: 0)
            let core = target.directory + "/churn.core"
            let written = try TestTools.run(
                "ld-chpox", ["--store", target.store, "--name", "churn", "--core", core, "--json"])
            #expect(written.status == 0, "\(written.errors)")
            #expect(try JSONSchemaCheck().problems(written.output) == [])
            let summary = try JSONDocument.decode(CoreDocument.self, written.output)
            #expect(summary.threads == 5)
            #expect(summary.file == core)
            #expect(summary.chain == "churn")
            #expect(summary.generation == 0)
            let text = try Self.debugger(
                TestTools.path("chpox-churn-workload"), core,
                ["info threads", "thread 1", "print/x $rsp", "print/x $fs_base"])
            for thread in image.threads {
                #expect(text.contains("LWP \(thread.state.tid)"), "thread \(thread.state.tid)\n\(text)")
            }
            #expect(image.threads.count == 5)
            let main = image.threads[0].state
            #expect(text.contains("$1 = 0x" + String(main.stackPointer, radix: 16)), "\(text)")
            #expect(text.contains("$2 = 0x" + String(main.fsBase, radix: 16)), "\(text)")
            #expect(try target.check().hasPrefix("ok"))
            #expect(try target.quit())
        }
    }
}
