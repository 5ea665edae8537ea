import Foundation
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// Memfds and shared anonymous memory held by a descriptor (memory files): one object again
    /// after a restart for the descriptors and the mappings of it, with its name, contents and
    /// holes, size, mode, seals, offsets and flags.
    @Suite struct MemoryFileRestartTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// A process holding: a memfd sealed against shrinking and growing, read-write and
        /// read-only descriptors of it and a shared writable mapping of it; a second memfd made
        /// with MFD_NOEXEC_SEAL and then sealed against writes, mapped read-only; and shared
        /// anonymous memory opened as a descriptor through /proc/self/map_files. "state" prints
        /// what it can see of them; "check" writes through each side and says what the other
        /// side saw, and whether a write seal still refuses a writable mapping.
        static let script = """
            import fcntl, hashlib, mmap, os, sys
            P = 4096
            fd = os.memfd_create("chpox test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.write(fd, b"written through the fd")
            os.ftruncate(fd, 3 * P)
            os.pwrite(fd, b"page three", 2 * P)
            os.fchmod(fd, 0o640)
            shared = mmap.mmap(fd, 3 * P, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            shared[100:110] = b"via mmap.."
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            os.lseek(fd, 5, os.SEEK_SET)
            ro = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
            sealed = os.memfd_create("sealed", 0x0008)  # MFD_NOEXEC_SEAL: sealing allowed, F_SEAL_EXEC
            os.write(sealed, b"cannot change")
            fcntl.fcntl(sealed, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
            frozen = mmap.mmap(sealed, 13, mmap.MAP_SHARED, mmap.PROT_READ)
            anon = mmap.mmap(-1, 2 * P, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
            anon[0:5] = b"anon!"
            maps = [l.split() for l in open("/proc/self/maps")]
            a, b = next(l[0] for l in maps if l[-2:] == ["/dev/zero", "(deleted)"] and l[1] == "rw-s").split("-")
            anonfd = os.open(f"/proc/self/map_files/{a}-{b}", os.O_RDWR)
            os.lseek(anonfd, 3, os.SEEK_SET)
            def describe(f):
                st = os.fstat(f)
                offset = os.lseek(f, 0, os.SEEK_CUR)
                hole = os.lseek(f, 0, os.SEEK_HOLE)
                os.lseek(f, offset, os.SEEK_SET)
                return [os.readlink(f"/proc/self/fd/{f}"), fcntl.fcntl(f, fcntl.F_GET_SEALS), st.st_size,
                    oct(st.st_mode & 0o7777), offset, fcntl.fcntl(f, fcntl.F_GETFD),
                    oct(fcntl.fcntl(f, fcntl.F_GETFL)), hole, hashlib.sha256(os.pread(f, st.st_size, 0)).hexdigest()[:16]]
            def state():
                lines = [" ".join(l[:3] + l[5:]) for l in (x.split() for x in open("/proc/self/maps"))
                    if "memfd:" in " ".join(l) or "/dev/zero" in l]
                ino = lambda l: os.stat("/proc/self/map_files/" + l.split()[0]).st_ino
                same = [ino(l) for l in lines] == [os.fstat(fd).st_ino if "chpox" in l else
                    os.fstat(sealed).st_ino if "sealed" in l else os.fstat(anonfd).st_ino for l in lines]
                return [describe(f) for f in (fd, ro, sealed, anonfd)] + [lines, same,
                    os.path.samestat(os.fstat(fd), os.fstat(ro))]
            def check():
                shared[200:210] = b"after map!"
                os.pwrite(fd, b"fd-write", 300)
                anon[10:14] = b"ANON"
                os.pwrite(anonfd, b"via-fd", 20)
                try:
                    mmap.mmap(sealed, 13, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                    refused = False
                except PermissionError:
                    refused = True
                return [os.pread(ro, 10, 200) == b"after map!", shared[300:308] == b"fd-write",
                    os.pread(anonfd, 4, 10) == b"ANON", anon[20:26] == b"via-fd", refused, frozen[:] == b"cannot change"]
            print("ready", flush=True)
            for command in sys.stdin:
                print(repr(state() if command.strip() == "state" else check()), flush=True)
            """

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func memfdsAndSharedMemoryAreOneObjectAgainWithTheirSealsAndContents() throws {
            let name = "memfd"
            let directory = try RestartTests.scratch(name)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.script])
            #expect(try original.line() == "ready")
            let checked = try original.send("check")
            #expect(checked == "[True, True, True, True, True, True]")
            let before = try original.send("state")
            #expect(before.contains("'/memfd:chpox test (deleted)', 6, 12288, '0o640', 5, 1"))
            try RestartTests.checkpoint(original.pid, store: directory + "/store", name: name)
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: directory + "/store", name: name, generation: 0)
            defer { RestartTests.end(restarted) }
            let after = try restarted.send("state")
            #expect(after == before)
            let checkedAgain = try restarted.send("check")
            #expect(checkedAgain == checked)
        }
    }
}
