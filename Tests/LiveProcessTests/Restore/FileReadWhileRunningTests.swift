import Foundation
import Incremental
import Store
import Syscall
import TestTools
import Testing
import Tracee
import TrackerTestSupport

extension LiveProcess {
    /// How cpx reads the files a tree writes: a file changed between generations is read while
    /// the tree runs and taken only if nothing wrote it before the freeze, and reading never
    /// queues an event for an inotify of the tree.
    @Suite struct FileReadWhileRunningTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// One generation by cpx, its JSON line decoded.
        static func generation(_ pid: Int32, store: String) throws -> [String: Any] {
            let run = try TestTools.run("cpx", ["--store", store, "--name", "r", "--json", "\(pid)"])
            #expect(run.status == 0, "\(run.errors)")
            let line = run.output.split(separator: "\n").last { $0.contains("\"generation\"") } ?? ""
            return (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
        }

        static func image(_ store: String, generation: UInt64) throws -> ProcessImage {
            try ProcessImage(
                decoding: try Store(at: store).manifest(chain: "r", generation: generation).metadata,
                generation: generation)
        }

        /// A program holding a 4 MiB file for reading and writing; "step" rewrites some of it,
        /// "run" starts a thread that counts, writing each count n at slot n % 4096 of the file
        /// (8 bytes each) every millisecond; "check" stops that thread, then prints the count, how
        /// many of the last 4,000 counts are not in their slots, and the SHA-256 of the file
        /// (read through its own descriptor). A file older than its process's memory by even two
        /// counts misses some.
        static let workload = """
            import hashlib, os, random, struct, sys, threading, time
            path = sys.argv[1] + "/data"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            rng = random.Random(5)
            os.pwrite(fd, rng.randbytes(4 << 20), 0)
            counter = [0]
            stop = [False]
            thread = [None]
            def run():
                while not stop[0]:
                    counter[0] += 1
                    os.pwrite(fd, struct.pack("<Q", counter[0]), 8 * (counter[0] % 4096))
                    time.sleep(0.001)
            print("ready", flush=True)
            for line in sys.stdin:
                command = line.strip()
                if command == "step":
                    for _ in range(20):
                        os.pwrite(fd, rng.randbytes(4096), rng.randrange(32768, (4 << 20) - 4096))
                    print("stepped", flush=True)
                elif command == "run":
                    thread[0] = threading.Thread(target=run, daemon=True)
                    thread[0].start()
                    print("running", flush=True)
                elif command == "check":
                    stop[0] = True
                    if thread[0]:
                        thread[0].join()
                    n = counter[0]
                    data = os.pread(fd, 4 << 20, 0)
                    slot = lambda k: struct.unpack_from("<Q", data, 8 * (k % 4096))[0]
                    missing = sum(1 for k in range(max(1, n - 4000), n + 1) if slot(k) != k)
                    print(n, missing, hashlib.sha256(data).hexdigest(), flush=True)
            """

        /// A file rewritten between generations is read while the tree runs (the generation
        /// says so) and restarts exactly as it was; one written all the time is read again in
        /// the freeze, so each generation's file agrees with the counter its process had.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(4)))
        func aChangedFileIsReadWhileTheTreeRunsAndNeverTakenStale() throws {
            let directory = try RestartTests.scratch("file-early")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let path = directory + "/data"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", Self.workload, directory])
            #expect(try original.line() == "ready")
            // A chain's first generation finds the files the tree holds while it runs, too.
            let base = try Self.generation(original.pid, store: store)
            #expect(base["filesReadEarly"] as? Int == 1, "the base read the file while the tree ran: \(base)")
            #expect(try original.send("step") == "stepped")
            let changed = try Self.generation(original.pid, store: store)
            #expect(changed["filesRead"] as? Int == 1)
            #expect(changed["filesReadEarly"] as? Int == 1, "the changed file was read while the tree ran: \(changed)")
            let atOne = WrittenFileGenerationTests.bytes(path)
            #expect(try original.send("run") == "running")
            for _ in 0..<3 { _ = try Self.generation(original.pid, store: store) }
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: store, name: "r", generation: 1)
            let one = try restarted.send("check").split(separator: " ").map(String.init)
            let expected = try WrittenFileGenerationTests.sha(atOne)
            #expect(one.count == 3 && one.last == expected, "generation 1 restarts with its file")
            RestartTests.end(restarted)
            for generation in 2...4 {
                let restarted = try RestartTests.restart(store: store, name: "r", generation: generation)
                let answer = try restarted.send("check").split(separator: " ").map(String.init)
                RestartTests.end(restarted)
                #expect(answer.count == 3 && (Int(answer[0]) ?? 0) > 0, "generation \(generation): \(answer)")
                let missing = answer.count == 3 ? answer[1] : "?"
                #expect(
                    missing == "0", "generation \(generation): \(missing) of the counts before \(answer[0]) are lost")
            }
        }

        /// A program that watches the file it writes with inotify, for reads, opens and closes,
        /// and holds a second watched file for writing only: cpx keeps the first (read through
        /// a mapping of the program's own descriptor: no event) and leaves the second out (it
        /// would have to open it), saying why; the program finds no event queued.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(3)))
        func readingKeptFilesQueuesNoEventForTheTreesInotify() throws {
            let directory = try RestartTests.scratch("file-inotify")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let program = """
                import ctypes, os, sys
                libc = ctypes.CDLL(None, use_errno=True)
                d = sys.argv[1]
                fd = os.open(d + "/data", os.O_RDWR | os.O_CREAT, 0o600)
                os.pwrite(fd, os.urandom(1 << 20), 0)
                out = os.open(d + "/log", os.O_WRONLY | os.O_CREAT, 0o600)
                os.write(out, b"log line\\n")
                ino = libc.inotify_init1(os.O_NONBLOCK)
                for name in ("data", "log"):  # IN_ACCESS | IN_CLOSE_NOWRITE | IN_OPEN
                    assert libc.inotify_add_watch(ino, (d + "/" + name).encode(), 0x1 | 0x10 | 0x20) > 0
                print("ready", flush=True)
                for line in sys.stdin:
                    if line.strip() == "step":
                        os.pwrite(fd, os.urandom(4096), 8192)
                        print("stepped", flush=True)
                    else:
                        try:
                            print("events", len(os.read(ino, 4096)), flush=True)
                        except BlockingIOError:
                            print("none", flush=True)
                """
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", program, directory])
            #expect(try original.line() == "ready")
            defer { RestartTests.end(original) }
            _ = try Self.generation(original.pid, store: store)
            #expect(try original.send("events") == "none")
            #expect(try original.send("step") == "stepped")
            _ = try Self.generation(original.pid, store: store)
            #expect(try original.send("events") == "none")
            let files = try Self.image(store, generation: 1).files ?? []
            #expect(files.first { $0.path == directory + "/data" }?.state == .recorded)
            let log = files.first { $0.path == directory + "/log" }
            #expect(log?.state == .excluded)
            #expect(log?.reason?.contains("inotify") == true, "\(String(describing: log))")
        }
    }
}
