import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Store
import Tracee

extension LiveProcess {
    /// `cpx PID` as a user runs it: chains that continue across runs, --interval with --count
    /// and --keep-last, --json, migration finishes, and clear errors for bad input.
    @Suite struct CheckpointCommandTests {
        static func cpx(_ arguments: [String]) throws -> TestTools.Run { try TestTools.run("cpx", arguments) }

        static func events(_ output: String, growing: Bool = false) throws -> [CheckpointEvent] {
            try JSONDocument.lines(CheckpointEvent.self, output, growing: growing)
        }

        @Test(.timeLimit(.minutes(3))) func intervalRunsContinueTheChainAndReportEachGeneration() throws {
            let target = try ChurnTarget("cpx-interval")
            var run = try Self.cpx([
                "--store", target.store, "--name", "churn", "--interval", "0.1", "--count", "3", "--json",
                "\(target.pid)",
            ])
            #expect(run.status == 0, "\(run.errors)")
            var events = try Self.events(run.output)
            #expect(events.count == 4)
            #expect(events.map(\.schema) == Array(repeating: "chpox.checkpoint/1", count: 4))
            #expect(events.map(\.event) == ["generation", "generation", "generation", "completed"])
            #expect(events.prefix(3).map { $0.generation?.generation } == [0, 1, 2])
            #expect(events.prefix(3).map { $0.generation?.kind } == ["full", "delta", "delta"])
            #expect(events.prefix(3).allSatisfy { $0.generation?.pid == Int(target.pid) })
            #expect(events.last?.ending?.generations == 3)
            #expect(events.last?.ending?.pid == Int(target.pid))
            // Every line, field by field, as docs/json-schemas.md says.
            let schemas = try JSONSchemaCheck()
            for line in run.output.split(separator: "\n") { #expect(schemas.problems(String(line)) == []) }

            // A later run has no tracker history: it compares with the chain.
            run = try Self.cpx(["--store", target.store, "--name", "churn", "--json", "\(target.pid)"])
            #expect(run.status == 0, "\(run.errors)")
            events = try Self.events(run.output)
            #expect(events.first?.generation?.generation == 3)
            #expect(events.first?.generation?.tracker == "hash (chain)")

            // People get a line per generation.
            run = try Self.cpx([
                "--store", target.store, "--name", "churn", "--keep-last", "2", "--interval", "0.05", "--count", "3",
                "\(target.pid)",
            ])
            #expect(run.status == 0, "\(run.errors)")
            #expect(run.output.contains("churn generation 6 (delta,"))
            #expect(run.output.contains("done: 3 generations taken"))
            let chain = try Store(at: target.store).chain("churn")
            #expect(chain.entries.map(\.generation) == [5, 6])
            #expect(try Store(at: target.store).verify(deep: true).isClean)
            #expect(try target.check().hasPrefix("ok"))
            #expect(try target.quit())
        }

        @Test(.timeLimit(.minutes(2))) func sigtermFinishesTheGenerationInFlightAndLeavesTheProcessRunning() throws {
            let target = try ChurnTarget("cpx-sigterm")
            let log = target.directory + "/cpx.log"
            let output = try FileDescriptor.open(log, [.writeOnly, .create, .truncate])
            let cpx = try ChildProcess.spawn(
                TestTools.path("cpx"),
                ["--store", target.store, "--name", "t", "--interval", "0.2", "--json", "\(target.pid)"], stdout: output
            )
            output.close()
            for _ in 0..<3000
            where
                !(try Self.events((try? String(contentsOfFile: log, encoding: .utf8)) ?? "", growing: true).contains {
                    $0.generation?.generation == 2
                })
            {
                usleep(2000)
            }
            try cpx.send(SIGTERM)
            #expect(try cpx.wait() == .exited(0))
            let events = try Self.events(try String(contentsOfFile: log, encoding: .utf8))
            #expect(events.last?.event == "stopped")
            let taken = try #require(events.last?.ending?.generations)
            let chain = try Store(at: target.store).chain("t")
            #expect(chain.entries.count == taken)
            #expect(taken >= 3)
            target.waitForHelpers()
            let state = try ProcFS.state(target.pid)
            #expect(!["t", "T"].contains(state), "the process must not stay stopped (state \(state))")
            #expect(try target.check().hasPrefix("ok"))
            #expect(try target.quit())
        }

        @Test(.timeLimit(.minutes(2))) func leaveStoppedAndKillFinishAMigration() throws {
            let target = try ChurnTarget("cpx-finish")
            var run = try Self.cpx(["--store", target.store, "--name", "m", "--leave-stopped", "\(target.pid)"])
            #expect(run.status == 0, "\(run.errors)")
            var state: Character = "?"
            for _ in 0..<500 {
                state = try ProcFS.state(target.pid)
                if state == "T" { break }
                usleep(2000)
            }
            #expect(state == "T", "left stopped")
            kill(target.pid, SIGCONT)
            #expect(try target.check().hasPrefix("ok"), "runs on after SIGCONT")
            run = try Self.cpx(["--store", target.store, "--name", "m", "--kill", "\(target.pid)"])
            #expect(run.status == 0, "\(run.errors)")
            #expect(try target.workload.child.wait() == .signalled(SIGKILL))
            #expect(try Store(at: target.store).chain("m").entries.count == 2)
        }

        @Test func badTargetsGiveClearErrorsAndNonZeroExits() throws {
            let directory = NSTemporaryDirectory() + "chpox-cpx-errors-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: directory) }
            var run = try Self.cpx(["--store", directory, "999999"])
            #expect(run.status != 0, "\(run.errors)")
            #expect(run.errors.contains("no process with pid 999999"), "\(run.errors)")
            // A child that exited and was not reaped.
            let zombie = try ChildProcess.spawn("/bin/true", [])
            for _ in 0..<1000 where (try? ProcFS.state(zombie.pid)) != "Z" { usleep(1000) }
            run = try Self.cpx(["--store", directory, "\(zombie.pid)"])
            #expect(run.status != 0, "\(run.errors)")
            #expect(run.errors.contains("zombie"), "\(run.errors)")
            _ = try zombie.wait()
            // A directory that is not a store.
            let other = directory + "-other"
            try FileManager.default.createDirectory(
                atPath: other, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            defer { try? FileManager.default.removeItem(atPath: other) }
            FileManager.default.createFile(atPath: other + "/notes.txt", contents: Data("mine".utf8))
            run = try Self.cpx(["--store", other, "\(getpid())"])
            #expect(run.status != 0, "\(run.errors)")
            #expect(run.errors.contains("is not a chpox store"), "\(run.errors)")
            run = try Self.cpx(["--store", directory, "--tracker", "bogus", "1"])
            #expect(run.status != 0)
            #expect(run.errors.contains("unknown tracker 'bogus'"))
            // A tracker this kernel lacks: the probe's reason.
            for result in probe.results where !result.supported {
                run = try Self.cpx(["--store", directory, "--tracker", result.kind.rawValue, "\(getpid())"])
                #expect(run.status != 0, "\(run.errors)")
                #expect(run.errors.contains("tracker \(result.kind.rawValue): \(result.detail)"), "\(run.errors)")
            }
            run = try Self.cpx(["--store", directory, "--leave-stopped", "--kill", "1"])
            #expect(run.status != 0)
            #expect(run.errors.contains("exclude each other"))
        }

        @Test(.enabled(if: getuid() == 0, "needs root to run cpx as another user"))
        func ptraceRefusedSaysWhatItNeeds() throws {
            let sleeper = try ChildProcess.spawn("/bin/sleep", ["30"])
            defer { try? sleeper.send(SIGKILL); _ = try? sleeper.wait() }
            let store = "/tmp/chpox-cpx-nobody-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: store) }
            // The test build may sit in a directory another user cannot enter: run a copy.
            let copy = "/tmp/chpox-cpx-copy-\(getpid())"
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.createDirectory(
                atPath: copy, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            defer { try? FileManager.default.removeItem(atPath: copy) }
            for tool in ["cpx", "chpox-inject"] {
                try FileManager.default.copyItem(atPath: TestTools.path(tool), toPath: copy + "/" + tool)
            }
            let run = try TestTools.run(
                "/usr/bin/setpriv",
                [
                    "--reuid", "65534", "--regid", "65534", "--clear-groups",
                    copy + "/cpx", "--store", store, "\(sleeper.pid)",
                ])
            #expect(run.status != 0, "\(run.errors)")
            #expect(run.errors.contains("permission denied"), "\(run.errors)")
            #expect(run.errors.contains("CAP_SYS_PTRACE"), "\(run.errors)")
            #expect(!FileManager.default.fileExists(atPath: store), "the refused run left its store")
            #expect(try ProcFS.state(sleeper.pid) == "S")
        }

        @Test(.timeLimit(.minutes(2))) func socketsAreRefusedUnlessSkipped() throws {
            let directory = NSTemporaryDirectory() + "chpox-cpx-socket-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: directory) }
            // Besides the sockets (an IPv4 one, a named UNIX one): a deleted file (its contents are
            // kept), a pipe, /dev/null, and a file at an offset.
            let python = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import os, socket, sys, tempfile
                    # Two sockets still refused: a datagram waiting in a UDP socket, a netlink socket.
                    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    udp.bind(("127.0.0.1", 0))
                    udp.sendto(b"queued", udp.getsockname())
                    netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
                    fd, path = tempfile.mkstemp()
                    os.write(fd, b"secret contents")
                    os.unlink(path)
                    r, w = os.pipe()
                    null = os.open("/dev/null", os.O_RDWR)
                    kept = os.open("/etc/os-release", os.O_RDONLY)
                    os.lseek(kept, 7, 0)
                    print("ready", flush=True)
                    sys.stdin.readline()
                    """,
                ])
            #expect(try python.line() == "ready")
            var run = try Self.cpx(["--store", directory, "--name", "py", "\(python.pid)"])
            #expect(run.status != 0, "\(run.errors)")
            #expect(run.errors.contains("socket:["), "\(run.errors)")
            #expect(run.errors.contains("--skip-unsupported"), "\(run.errors)")
            #expect((try? Store(at: directory).chain("py").entries.count) ?? 0 == 0, "nothing committed")
            run = try Self.cpx(["--store", directory, "--name", "py", "--skip-unsupported", "\(python.pid)"])
            #expect(run.status == 0, "\(run.errors)")
            let store = try Store(at: directory)
            let image = try ProcessImage(
                decoding: try store.manifest(chain: "py", generation: 0).metadata, generation: 0)
            #expect(image.unsupported.count == 2)
            #expect(image.unsupported.allSatisfy { $0.contains("socket:[") })
            #expect(image.command.first?.hasSuffix("python3") == true)
            let deleted = image.descriptors.filter { $0.kind == .deletedFile }
            #expect(deleted.count == 1)
            #expect(deleted.first?.contents == Data("secret contents".utf8))
            #expect(image.descriptors.filter { $0.kind == .pipe && $0.fd > 2 }.count == 2)
            #expect(image.descriptors.contains { $0.kind == .null })
            let kept = try #require(
                image.descriptors.first { $0.target.hasSuffix("os-release") }, "\(image.descriptors)")
            #expect(kept.kind == .file)
            #expect(kept.offset == 7)
            #expect(kept.flags & O_ACCMODE == O_RDONLY)
            let info = try TestTools.run("dumpinfo", ["--store", directory, "--chain"])
            #expect(info.output.contains("unsupported"), "\(info.output)")
            _ = try python.quit("")
        }

        @Test(.enabled(if: getuid() == 0, "needs root to mount a small tmpfs"), .timeLimit(.minutes(2)))
        func aFullStoreFailsCleanlyAndTheNextRunContinues() throws {
            let target = try ChurnTarget("cpx-full", megabytes: 24)
            let mount = target.directory + "/small"
            try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
            #expect(
                try TestTools.run("/bin/mount", ["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mount]).status == 0)
            defer { _ = try? TestTools.run("/bin/umount", [mount]) }
            let store = mount + "/store"
            let run = try Self.cpx(["--store", store, "--name", "f", "\(target.pid)"])
            #expect(run.status != 0, "\(run.errors)")
            #expect(run.errors.contains("No space left"), "\(run.errors)")
            target.waitForHelpers()
            #expect(try target.check().hasPrefix("ok"))
            // The failed first generation took back its packs, and the store it made.
            #expect(!FileManager.default.fileExists(atPath: store), "a failed first cpx left its store")
            // Room again: the same chain starts cleanly.
            #expect(try TestTools.run("/bin/mount", ["-o", "remount,size=256m", mount]).status == 0)
            let again = try Self.cpx(["--store", store, "--name", "f", "\(target.pid)"])
            #expect(again.status == 0, "\(again.errors)")
            #expect(try Store(at: store).chain("f").entries.map(\.generation) == [0])
            #expect(try target.check().hasPrefix("ok"))
            #expect(try target.quit())
        }
    }
}
