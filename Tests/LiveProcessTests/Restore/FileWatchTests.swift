import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// inotify descriptors come back with their watches at the numbers the program holds, and
    /// fanotify descriptors with their flags and marks; both report what happens to the watched
    /// files after the restart. What a restart cannot make again (events queued and not read, a
    /// watched file deleted) is refused with the reason.
    @Suite struct FileWatchTests {
        /// Watches a directory (IN_CREATE | IN_DELETE) and a file (IN_MODIFY | IN_CLOSE_WRITE),
        /// each after numbers taken and given back, so neither is the number a fresh inotify
        /// gives first; on each line of input, prints the events read, as "wd:mask:name".
        static let program = """
            import ctypes, os, struct, sys
            libc = ctypes.CDLL(None, use_errno=True)
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            base = sys.argv[1]
            directory, file = os.path.join(base, "dir"), os.path.join(base, "file")
            os.mkdir(directory)
            open(file, "w").close()
            ino = libc.inotify_init1(os.O_NONBLOCK)
            def skip(n):
                for _ in range(n):
                    libc.inotify_rm_watch(ino, libc.inotify_add_watch(ino, base.encode(), 0x100))
                os.read(ino, 4096)  # their IN_IGNORED events
            skip(3)
            wdir = libc.inotify_add_watch(ino, directory.encode(), 0x100 | 0x200)
            skip(5)
            wfile = libc.inotify_add_watch(ino, file.encode(), 0x2 | 0x8)
            print("ready", ino, wdir, wfile, flush=True)
            for line in sys.stdin:
                try:
                    data = os.read(ino, 65536)
                except BlockingIOError:
                    data = b""
                events = []
                while data:
                    wd, mask, cookie, size = struct.unpack_from("iIII", data)
                    name = data[16:16 + size].rstrip(b"\\0").decode()
                    events.append(f"{wd}:{mask:x}:{name}")
                    data = data[16 + size:]
                print(*events, flush=True)
            """

        /// Creates and deletes an entry of the directory and appends to the file.
        static func touch(_ base: String) throws {
            let entry = base + "/dir/new"
            let created = open(entry, O_CREAT | O_WRONLY, 0o644)
            try #require(created >= 0)
            close(created)
            #expect(unlink(entry) == 0)
            let file = open(base + "/file", O_WRONLY | O_APPEND)
            try #require(file >= 0)
            #expect(write(file, "x", 1) == 1)
            close(file)
        }

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func watchesComeBackAtTheirNumbers() throws {
            let directory = try RestartTests.scratch("inotify")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let base = directory + "/watched"
            try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.program, base])
            let ready = try original.line().split(separator: " ")
            try #require(ready.count == 4)
            let (fd, wdir, wfile) = (ready[1], ready[2], ready[3])
            #expect(wdir == "4")
            #expect(wfile == "10")
            // What the original reads for the same changes, before any checkpoint.
            try Self.touch(base)
            let expected = "\(wdir):100:new \(wdir):200:new \(wfile):2: \(wfile):8:"
            #expect(try original.send("read") == expected)

            try RestartTests.checkpoint(original.pid, store: store, name: "inotify")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "0"])
            #expect(shown.output.contains("\(base)/dir (wd \(wdir), mask 0x300)"), "\(shown.output)")
            RestartTests.end(original)

            let restarted = try RestartTests.restart(store: store, name: "inotify", generation: 0)
            defer { RestartTests.end(restarted) }
            // Nothing queued by the restart itself, then the same events under the same numbers.
            #expect(try restarted.send("read") == "")
            try Self.touch(base)
            #expect(try restarted.send("read") == expected)
            // Under its pid, its flags as they were (O_NONBLOCK, not close-on-exec): wd in hexadecimal.
            let fdinfo = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/\(original.pid)/fdinfo/\(fd)"))
            let info = String(decoding: try fdinfo.readToEnd() ?? Data(), as: UTF8.self)
            #expect(info.contains("flags:\t04000\n"), "\(info)")
            #expect(info.contains("inotify wd:\(String(Int(wfile) ?? 0, radix: 16)) "), "\(info)")
        }

        /// zdtm inotify00, inotify_system: an inotify whose queue holds events not read yet,
        /// and one watching a file deleted while still open, are each refused with the reason.
        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func queuedEventsAndDeletedFilesAreRefused() throws {
            let directory = try RestartTests.scratch("inotify-refused")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import ctypes, os, sys
                    libc = ctypes.CDLL(None, use_errno=True)
                    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
                    base = sys.argv[1]
                    queued = libc.inotify_init1(0)
                    os.mkdir(os.path.join(base, "q"))
                    libc.inotify_add_watch(queued, os.path.join(base, "q").encode(), 0x100)
                    open(os.path.join(base, "q", "created"), "w").close()
                    deleted = libc.inotify_init1(0)
                    path = os.path.join(base, "deleted")
                    kept = open(path, "w")
                    wd = libc.inotify_add_watch(deleted, path.encode(), 0x2)
                    os.unlink(path)
                    print("ready", queued, deleted, wd, flush=True)
                    sys.stdin.readline()
                    """,
                    directory,
                ])
            defer { RestartTests.end(original) }
            let ready = try original.line().split(separator: " ")
            try #require(ready.count == 4)
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "t", "\(original.pid)"])
            #expect(run.status != 0)
            #expect(
                run.errors.contains(
                    "fd \(ready[1]): anon_inode:inotify: 32 bytes of inotify events are queued and not read yet"),
                "\(run.errors)")
            #expect(
                run.errors.contains(
                    "fd \(ready[2]): anon_inode:inotify: watch \(ready[3]): it watches \(directory)/deleted (deleted)"),
                "\(run.errors)")
        }

        /// A fanotify with marks on a file (its events, and FAN_OPEN ignored, surviving
        /// modification) and on a directory comes back with the same flags and marks as fdinfo
        /// shows them, and reports what is done to the file after the restart.
        static let fanotifyProgram = """
            import ctypes, os, struct, sys
            libc = ctypes.CDLL(None, use_errno=True)
            libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
            base = sys.argv[1]
            file = os.path.join(base, "file")
            open(file, "w").close()
            fan = libc.fanotify_init(0x2, os.O_RDONLY | os.O_LARGEFILE)  # FAN_NONBLOCK, FAN_CLASS_NOTIF
            assert fan >= 0, ctypes.get_errno()
            assert libc.fanotify_mark(fan, 0x1, 0x2 | 0x8, -100, file.encode()) == 0  # FAN_MODIFY | FAN_CLOSE_WRITE
            assert libc.fanotify_mark(fan, 0x1 | 0x20 | 0x40, 0x20, -100, file.encode()) == 0  # FAN_OPEN ignored
            assert libc.fanotify_mark(fan, 0x1, 0x40000000 | 0x1 | 0x08000000, -100, base.encode()) == 0
            def marks():
                return [l for l in open(f"/proc/self/fdinfo/{fan}").read().splitlines() if l.startswith("fanotify")]
            print("ready", fan, flush=True)
            for line in sys.stdin:
                mask = 0
                try:
                    data = os.read(fan, 65536)
                except BlockingIOError:
                    data = b""
                while data:
                    size, _, _, _, event, fd, pid = struct.unpack_from("IBBHQii", data)
                    mask |= event
                    if fd >= 0:
                        os.close(fd)
                    data = data[size:]
                print(hex(mask), *marks(), sep="|", flush=True)
            """

        @Test(
            .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func fanotifyMarksComeBack() throws {
            let directory = try RestartTests.scratch("fanotify")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let base = directory + "/watched"
            try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", Self.fanotifyProgram, base])
            let ready = try original.line().split(separator: " ")
            try #require(ready.count == 2)
            let before = try original.send("read").split(separator: "|")
            try #require(before.count == 4)
            #expect(before[0] == "0x0")
            #expect(before[1].hasPrefix("fanotify flags:2 event-flags:8000"))

            try RestartTests.checkpoint(original.pid, store: store, name: "fanotify")
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: store, name: "fanotify", generation: 0)
            defer { RestartTests.end(restarted) }
            let after = try restarted.send("read").split(separator: "|")
            // Nothing queued, the group and each mark as fdinfo showed them.
            #expect(after == before)
            let file = open(base + "/file", O_WRONLY | O_APPEND)
            try #require(file >= 0)
            #expect(write(file, "x", 1) == 1)
            close(file)
            // FAN_MODIFY | FAN_CLOSE_WRITE on the file; its open ignored.
            #expect(try restarted.send("read").split(separator: "|").first == "0xa")
        }
    }
}
