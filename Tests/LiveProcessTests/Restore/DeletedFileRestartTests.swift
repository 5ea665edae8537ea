import Foundation
import Incremental
import Store
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// Names deleted while a process held them open: a sparse file whose holes dwarf its data
    /// (zdtm ghost_holes_large00, unlink_largefile), a device node (deleted_dev), a symbolic
    /// link held with O_PATH (symlink01). Each program prints its view of the descriptor before
    /// the checkpoint and again after the restart: the two must be the same.
    @Suite struct DeletedFileRestartTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// Runs `script` (given the scratch directory) until it prints "ready STATE",
        /// checkpoints it, kills it, runs `beforeRestart`, restarts it and tells it "go": the
        /// state before, the line it answers, and the image.
        static func run(
            _ name: String, script: String, beforeRestart: (String) throws -> Void = { _ in }
        ) throws -> (before: String, after: String, image: ProcessImage) {
            let directory = try RestartTests.scratch(name)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script, directory])
            let ready = try original.line()
            #expect(ready.hasPrefix("ready "), "\(ready)")
            try RestartTests.checkpoint(original.pid, store: directory + "/store", name: name)
            RestartTests.end(original)
            let store = try Store(at: directory + "/store")
            let image = try ProcessImage(
                decoding: try store.manifest(chain: name, generation: 0).metadata, generation: 0)
            try beforeRestart(directory)
            let restarted = try RestartTests.restart(store: directory + "/store", name: name, generation: 0)
            let answer = try restarted.send("go")
            _ = try? restarted.child.wait()
            return (String(ready.dropFirst("ready ".count)), answer, image)
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aSparseDeletedFileKeepsItsSizeAndHolesAndOnlyItsDataIsSaved() throws {
            let (before, after, image) = try Self.run(
                "sparse",
                script: """
                    import os, sys
                    path = sys.argv[1] + "/sparse"
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
                    hole = 1 << 30
                    os.pwrite(fd, b"a" * 4096, 0)
                    os.pwrite(fd, b"b" * 4096, 4096 + hole)
                    os.ftruncate(fd, 3 * 4096 + hole)
                    os.lseek(fd, 100, os.SEEK_SET)
                    os.unlink(path)
                    def show():
                        st = os.fstat(fd)
                        offset = os.lseek(fd, 0, os.SEEK_CUR)
                        holes = [os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, 4096, os.SEEK_DATA),
                                 os.lseek(fd, 4096 + hole, os.SEEK_HOLE)]
                        os.lseek(fd, offset, os.SEEK_SET)
                        data = os.pread(fd, 4096, 0) == b"a" * 4096 and os.pread(fd, 4096, 4096 + hole) == b"b" * 4096
                        return "%d %d %s %d %s %d %o" % (
                            st.st_size, st.st_blocks, holes, offset, data, st.st_nlink, st.st_mode & 0o7777)
                    print("ready", show(), flush=True)
                    sys.stdin.readline()
                    print(show(), flush=True)
                    """)
            #expect(after == before)
            #expect(before.hasPrefix("\((1 << 30) + 3 * 4096) "), "\(before)")
            #expect(before.hasSuffix(" 100 True 0 640"), "\(before)")
            let file = try #require(image.descriptors.first { $0.target.hasSuffix("/sparse (deleted)") })
            #expect(file.kind == .sparseDeletedFile)
            #expect(file.contents?.count == 2 * 4096, "only the data is saved")
            #expect(file.deletedAttributes?.size == Int64(1 << 30) + 3 * 4096)
        }

        /// The limit counts data, not size; and a device whose open file holds state is refused.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func tooMuchDataAndAStatefulDeviceAreRefused() throws {
            let directory = try RestartTests.scratch("deleted-refused")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import os, stat, sys
                    big = os.open(sys.argv[1] + "/big", os.O_RDWR | os.O_CREAT)
                    os.pwrite(big, b"x" * ((64 << 20) + 4096), 1 << 20)
                    os.unlink(sys.argv[1] + "/big")
                    os.mknod(sys.argv[1] + "/kmsg", stat.S_IFCHR | 0o600, os.makedev(1, 11))
                    kmsg = os.open(sys.argv[1] + "/kmsg", os.O_RDONLY)
                    os.unlink(sys.argv[1] + "/kmsg")
                    print("ready", big, kmsg, flush=True)
                    sys.stdin.readline()
                    """,
                    directory,
                ])
            defer { RestartTests.end(original) }
            let ready = try original.line().split(separator: " ")
            try #require(ready.count == 3)
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "t", "\(original.pid)"])
            #expect(run.status != 0)
            #expect(
                run.errors.contains(
                    "fd \(ready[1]): \(directory)/big (deleted): it holds 64.0 MiB of data, more than 64.0 MiB"),
                "\(run.errors)")
            #expect(
                run.errors.contains(
                    "fd \(ready[2]): \(directory)/kmsg (deleted): a deleted node of character device 1:11"),
                "\(run.errors)")
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aDeletedDeviceNodeIsMadeAgainAndRemoved() throws {
            let (before, after, image) = try Self.run(
                "device",
                script: """
                    import fcntl, os, stat, sys
                    path = sys.argv[1] + "/null"
                    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
                    os.chmod(path, 0o624)
                    fd = os.open(path, os.O_RDWR | os.O_APPEND)
                    os.unlink(path)
                    def show():
                        st = os.fstat(fd)
                        flags = fcntl.fcntl(fd, fcntl.F_GETFL) & (os.O_ACCMODE | os.O_APPEND)
                        return "%o %d:%d %d %d:%d %o %d %r" % (
                            st.st_mode, os.major(st.st_rdev), os.minor(st.st_rdev), st.st_nlink, st.st_uid, st.st_gid,
                            flags, os.write(fd, b"xyz"), os.read(fd, 10))
                    print("ready", show(), flush=True)
                    sys.stdin.readline()
                    print(show(), sorted(os.listdir(sys.argv[1])), open(path).read(), flush=True)
                    """,
                beforeRestart: { directory in
                    // Its name is taken meanwhile: the node is made beside it, and that file is left as it is.
                    #expect(FileManager.default.createFile(atPath: directory + "/null", contents: Data("kept".utf8)))
                })
            #expect(before.hasPrefix("20624 1:3 0 "), "\(before)")
            #expect(after == before + " ['null', 'store'] kept")
            let node = try #require(image.descriptors.first { $0.kind == .deletedNode }?.deletedNode)
            #expect(node.type == .characterDevice)
            #expect(node.device == [1, 3])
            #expect(node.permissions == 0o624)
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aDeletedSymbolicLinkHeldWithOPathKeepsItsTarget() throws {
            let (before, after, image) = try Self.run(
                "symlink",
                script: """
                    import fcntl, os, stat, sys
                    link = sys.argv[1] + "/link"
                    os.symlink(sys.argv[1] + "/nowhere", link)
                    fd = os.open(link, os.O_PATH | os.O_NOFOLLOW)
                    os.unlink(link)
                    def show():
                        st = os.fstat(fd)
                        flags = fcntl.fcntl(fd, fcntl.F_GETFL) & (os.O_PATH | os.O_NOFOLLOW)
                        return "%s %s %d %o" % (stat.S_ISLNK(st.st_mode), os.readlink("", dir_fd=fd), st.st_nlink, flags)
                    print("ready", show(), flush=True)
                    sys.stdin.readline()
                    print(show(), sorted(os.listdir(sys.argv[1])), flush=True)
                    """)
            #expect(before.hasPrefix("True "), "\(before)")
            #expect(before.contains("/nowhere 0 "), "\(before)")
            #expect(after == before + " ['store']")
            let node = try #require(image.descriptors.first { $0.kind == .deletedNode }?.deletedNode)
            #expect(node.type == .symlink)
            #expect(node.linkTarget?.hasSuffix("/nowhere") == true)
        }
    }
}
