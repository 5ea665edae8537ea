import Foundation
import Incremental
import Store
import Syscall
import TestTools
import Testing
import Tracee
import TrackerTestSupport

extension LiveProcess {
    /// Every generation keeps the files its processes write: any generation restarts, in any
    /// order, with its files exactly as they were, and the file it replaces is kept beside it.
    @Suite struct WrittenFileGenerationTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// A program that changes `data` in its directory one round at a time ("step"): appending,
        /// or rewriting it in place with pwrite at random offsets (its generator is in its memory,
        /// so a restarted one goes on exactly as the original did); "check" prints the SHA-256 of
        /// the file read through its own descriptor and the round.
        static let workload = """
            import hashlib, os, random, sys
            path = sys.argv[1] + "/data"
            mode = sys.argv[2]
            rng = random.Random(11)
            flags = os.O_RDWR | os.O_CREAT | (os.O_APPEND if mode == "append" else 0)
            fd = os.open(path, flags, 0o640)
            if mode == "rewrite":
                os.pwrite(fd, rng.randbytes(300000), 0)
            n = 0
            print("ready", flush=True)
            for line in sys.stdin:
                command = line.strip()
                if command == "step":
                    n += 1
                    if mode == "append":
                        os.write(fd, (f"round {n} " * rng.randrange(100, 900)).encode())
                    else:
                        for _ in range(25):
                            os.pwrite(fd, rng.randbytes(rng.randrange(1, 3000)), rng.randrange(0, 297000))
                    print("stepped", n, flush=True)
                elif command == "check":
                    size = os.fstat(fd).st_size
                    print(hashlib.sha256(os.pread(fd, size, 0)).hexdigest(), n, flush=True)
            """

        static func sha(_ bytes: [UInt8]) throws -> String {
            let file = NSTemporaryDirectory() + "chpox-sha-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: file) }
            FileManager.default.createFile(atPath: file, contents: Data(bytes))
            let run = try TestTools.run("/usr/bin/sha256sum", [file])
            return String(run.output.prefix(64))
        }

        static func bytes(_ path: String) -> [UInt8] {
            (FileManager.default.contents(atPath: path)).map { [UInt8]($0) } ?? []
        }

        /// The versions kept beside `data` (`data.chpox-...`), by content.
        static func displaced(in directory: String) -> [[UInt8]] {
            ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
                .filter { $0.hasPrefix("data.chpox-") }.map { bytes(directory + "/" + $0) }
        }

        /// Six generations, then restarts of 5, 0, 3 and 5 again: each sees its file exactly as
        /// at its generation, goes on as the original did from there, and the file it found is
        /// kept beside.
        static func anyGenerationRestartsWithItsFile(_ mode: String) throws {
            let directory = try RestartTests.scratch("written-\(mode)")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let path = directory + "/data"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", workload, directory, mode])
            #expect(try original.line() == "ready")
            // Generation g is taken after round g + 1; what round g + 2 makes of it is the next
            // one's file (or, after the last, one more round's).
            var atGeneration: [[UInt8]] = []
            for generation in 0..<6 {
                #expect(try original.send("step") == "stepped \(generation + 1)")
                try RestartTests.checkpoint(original.pid, store: store, name: "w")
                atGeneration.append(bytes(path))
            }
            #expect(try original.send("step") == "stepped 7")
            // Appended: content-defined chunks; rewritten in place: blocks (`FileChunks.Chunking`).
            let image = try ProcessImage(
                decoding: try Store(at: store).manifest(chain: "w", generation: 5).metadata, generation: 5)
            let kept = image.files?.first { $0.path == path }
            #expect(kept?.chunking == (mode == "append" ? nil : .blocks))
            #expect(image.format == (mode == "append" ? ProcessImage.filesFormat : ProcessImage.blockFilesFormat))
            let afterStep = Array(atGeneration.dropFirst()) + [bytes(path)]
            RestartTests.end(original)
            for generation in [5, 0, 3, 5] {
                let before = bytes(path)
                let keptBefore = displaced(in: directory).count
                let restarted = try RestartTests.restart(store: store, name: "w", generation: generation)
                let check = try restarted.send("check")
                #expect(check == "\(try sha(atGeneration[generation])) \(generation + 1)", "generation \(generation)")
                #expect(bytes(path) == atGeneration[generation], "generation \(generation): the file on disk")
                #expect(try restarted.send("step") == "stepped \(generation + 2)")
                #expect(bytes(path) == afterStep[generation], "generation \(generation) goes on as the original did")
                let kept = displaced(in: directory)
                if before != atGeneration[generation] {
                    #expect(kept.count == keptBefore + 1, "generation \(generation): one more version kept")
                    #expect(kept.contains(before), "generation \(generation): the file it replaced is kept")
                }
                if let pid = RestartTests.child(of: restarted.pid) { kill(pid, SIGKILL) }
                _ = try? restarted.child.wait()
            }
            #expect(displaced(in: directory).count == 4)
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(4)))
        func anAppendedFileComesBackAsAtEachGeneration() throws {
            try Self.anyGenerationRestartsWithItsFile("append")
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(4)))
        func aFileRewrittenInPlaceComesBackAsAtEachGeneration() throws {
            try Self.anyGenerationRestartsWithItsFile("rewrite")
        }

        /// SQLite in WAL mode (the database, its log and its shared memory file, mapped shared
        /// and writable): an older generation restarts with the rows committed by then and a
        /// database whose integrity check passes.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(4)))
        func sqliteInWALModeRestartsAnOlderGenerationIntact() throws {
            let directory = try RestartTests.scratch("sqlite")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let script = """
                import sqlite3, sys
                db = sqlite3.connect(sys.argv[1] + "/db.sqlite", isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA wal_autocheckpoint=0")
                db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
                n = 0
                print("ready", flush=True)
                for line in sys.stdin:
                    if line.strip() == "commit":
                        for _ in range(40):
                            db.execute("BEGIN")
                            for _ in range(25):
                                n += 1
                                db.execute("INSERT INTO t (v) VALUES (?)", ("row %d " % n * 20,))
                            db.execute("COMMIT")
                        print("committed", n, flush=True)
                    elif line.strip() == "check":
                        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
                        count, top = db.execute("SELECT count(*), max(k) FROM t").fetchone()
                        print(ok, count, top, flush=True)
                """
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script, directory])
            #expect(try original.line() == "ready")
            for round in 1...4 {
                #expect(try original.send("commit") == "committed \(round * 1000)")
                try RestartTests.checkpoint(original.pid, store: store, name: "db")
            }
            #expect(try original.send("commit") == "committed 5000")
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: store, name: "db", generation: 1)
            #expect(try restarted.send("check") == "ok 2000 2000")
            #expect(try restarted.send("commit") == "committed 3000")
            #expect(try restarted.send("check") == "ok 3000 3000")
            if let pid = RestartTests.child(of: restarted.pid) { kill(pid, SIGKILL) }
            _ = try? restarted.child.wait()
            // A process of its own opens the database now: what the restart left is consistent.
            let check = try TestTools.run(
                "/usr/bin/python3",
                [
                    "-c",
                    "import sqlite3,sys; d=sqlite3.connect(sys.argv[1]); "
                        + "print(d.execute('PRAGMA integrity_check').fetchone()[0], "
                        + "d.execute('SELECT count(*) FROM t').fetchone()[0])",
                    directory + "/db.sqlite",
                ])
            #expect(check.output.trimmingCharacters(in: .whitespacesAndNewlines) == "ok 3000", "\(check.errors)")
        }

        /// cpx killed at random instants while it copies a large file: the store holds only whole
        /// generations and verifies, the file is as the process left it, and it runs on.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(4)))
        func killingCpxWhileItCopiesFilesHarmsNothing() throws {
            let directory = try RestartTests.scratch("file-kill")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let script = """
                import os, sys
                fd = os.open(sys.argv[1] + "/big", os.O_RDWR | os.O_CREAT, 0o600)
                block = os.urandom(1 << 20)
                for k in range(48):
                    os.pwrite(fd, block[k:] + block[:k], k << 20)
                print("ready", flush=True)
                for line in sys.stdin:
                    os.pwrite(fd, os.urandom(4096), 12345)
                    print("written", flush=True)
                """
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script, directory])
            defer { RestartTests.end(original) }
            #expect(try original.line() == "ready")
            var rng = SystemRandomNumberGenerator()
            for instant in 0..<6 {
                #expect(try original.send("go") == "written")
                let file = Self.bytes(directory + "/big")
                let cpx = try ChildProcess.spawn(
                    TestTools.path("cpx"), ["--store", store, "--name", "k", "\(original.pid)"],
                    stdout: try FileDescriptor.open("/dev/null", [.writeOnly]))
                usleep(UInt32.random(in: 20_000...700_000, using: &rng))
                try? cpx.send(SIGKILL)
                _ = try cpx.wait()
                #expect(Self.bytes(directory + "/big") == file, "kill \(instant): the file is unharmed")
                let state = try ProcFS.state(original.pid)
                #expect(!["t", "T"].contains(state), "kill \(instant): not left stopped")
            }
            let opened = try Store(at: store)
            let verified = try opened.verify(deep: true)
            #expect(verified.isClean, "\(verified.problems)")
            #expect(try original.send("go") == "written")
        }

        /// GC drops old generations: the chunks of the files the kept ones hold stay, and a
        /// restart of the kept one has its file exactly.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(3)))
        func garbageCollectionKeepsTheChunksOfKeptFiles() throws {
            let directory = try RestartTests.scratch("file-gc")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let path = directory + "/data"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", Self.workload, directory, "rewrite"])
            #expect(try original.line() == "ready")
            var atGeneration: [[UInt8]] = []
            for generation in 0..<4 {
                #expect(try original.send("step") == "stepped \(generation + 1)")
                try RestartTests.checkpoint(original.pid, store: store, name: "g")
                atGeneration.append(Self.bytes(path))
            }
            RestartTests.end(original)
            let gc = try TestTools.run("cpx", ["gc", "--store", store, "--keep-last", "1"])
            #expect(gc.status == 0, "\(gc.errors)")
            let verified = try Store(at: store).verify(deep: true)
            #expect(verified.isClean, "\(verified.problems)")
            let out = directory + "/extracted"
            let extract = try TestTools.run(
                "dumpinfo", ["--store", store, "--name", "g", "--generation", "3", "--extract-file", path, "--to", out])
            #expect(extract.status == 0, "\(extract.errors)")
            #expect(Self.bytes(out) == atGeneration[3])
            try? FileManager.default.removeItem(atPath: path)
            let restarted = try RestartTests.restart(store: store, name: "g", generation: 3)
            #expect(try restarted.send("check") == "\(try Self.sha(atGeneration[3])) 4")
            if let pid = RestartTests.child(of: restarted.pid) { kill(pid, SIGKILL) }
            _ = try? restarted.child.wait()
        }

        /// A file left out (`--exclude-file`, `--file-limit`) is recorded as such: the restart
        /// uses it as it is, cut back to its size then, and says so; `ld-chpox --files-to` writes
        /// the kept ones elsewhere without touching the originals.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(3)))
        func aFileLeftOutFallsBackToCuttingItBackLoudly() throws {
            let directory = try RestartTests.scratch("file-excluded")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let path = directory + "/data"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", Self.workload, directory, "append"])
            #expect(try original.line() == "ready")
            #expect(try original.send("step") == "stepped 1")
            let options = [
                ("x", ["--exclude-file", directory + "/d*"]), ("l", ["--file-limit", "1K"]),
                ("g", ["--file-limit", "1M,1K"]),  // under the file's limit, over the generation's
            ]
            for (name, option) in options {
                let run = try TestTools.run("cpx", ["--store", store, "--name", name] + option + ["\(original.pid)"])
                #expect(run.status == 0, "\(run.errors)")
                #expect(run.output.contains("file not kept"), "\(run.output)")
            }
            try RestartTests.checkpoint(original.pid, store: store, name: "k")
            let atGeneration = Self.bytes(path)
            #expect(try original.send("step") == "stepped 2")
            RestartTests.end(original)
            let look = directory + "/look"
            let files = try TestTools.run("ld-chpox", ["--store", store, "--name", "k", "--files-to", look])
            #expect(files.status == 0, "\(files.errors)")
            #expect(Self.bytes(look + path) == atGeneration)
            #expect(Self.bytes(path) != atGeneration, "--files-to leaves the original alone")
            let grown = Self.bytes(path)
            let restarted = try RestartTests.restart(store: store, name: "x", generation: 0)
            #expect(try restarted.send("check") == "\(try Self.sha(atGeneration)) 1")
            #expect(Self.displaced(in: directory).isEmpty, "nothing put back, nothing displaced")
            #expect(Self.bytes(path) == Array(grown.prefix(atGeneration.count)))
            if let pid = RestartTests.child(of: restarted.pid) { kill(pid, SIGKILL) }
            _ = try? restarted.child.wait()
            let dump = try TestTools.run("dumpinfo", ["--store", store, "--name", "l", "--generation", "0"])
            #expect(dump.output.contains("too-large"), "\(dump.output)")
            let total = try TestTools.run("dumpinfo", ["--store", store, "--name", "g", "--generation", "0"])
            #expect(total.output.contains("past what a generation keeps of files"), "\(total.output)")
            let bad = try TestTools.run("cpx", ["--store", store, "--file-limit", "1M,lots", "1"])
            #expect(bad.status != 0 && bad.errors.contains("--file-limit"), "\(bad.errors)")
        }
    }
}
