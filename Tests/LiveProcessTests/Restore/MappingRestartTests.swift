import Foundation
import Incremental
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// Mappings whose backing a restart must rebuild with care: shared file mappings opened for
    /// writing, private mappings of deleted files, and the memory a checkpoint refuses (AIO
    /// rings made read-only, hugetlbfs memfds) and memfds mapped shared. Each workload is Python with ctypes:
    /// libc's mmap gives the addresses.
    @Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "python3 is not installed"))
    struct MappingRestartTests {
        /// The Python lines every workload starts with: libc's mmap, mprotect and syscall.
        static let prelude = """
            import ctypes, os, sys
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                ctypes.c_long]
            libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            PAGE = 4096
            directory = sys.argv[1]

            """

        /// Runs `script` until it prints "pending", checkpoints, kills and restarts it, and
        /// answers what it prints when told "go".
        static func answerAfterRestart(
            _ name: String, script: String, restartWith extra: [String] = []
        ) throws -> String {
            let directory = try RestartTests.scratch(name)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", prelude + script, directory])
            #expect(try original.line() == "pending")
            try RestartTests.checkpoint(original.pid, store: directory + "/store", name: name)
            RestartTests.end(original)
            let restarted = try RestartTests.restart(
                store: directory + "/store", name: name, generation: 0, extra: extra)
            let answer = try restarted.send("go")
            _ = try? restarted.child.wait()
            return answer
        }

        /// Runs `script` until it prints "pending" and answers cpx's errors, which must refuse it.
        static func refusal(_ name: String, script: String) throws -> String {
            let directory = try RestartTests.scratch(name)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", prelude + script, directory])
            defer { RestartTests.end(original) }
            #expect(try original.line() == "pending")
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", name, "\(original.pid)"])
            #expect(run.status != 0, "cpx took it: \(run.output)")
            return run.errors
        }

        @Test(.timeLimit(.minutes(2))) func aSharedFileMappingOpenedForWritingCanBeMadeWritableAgain() throws {
            // Mapped read-only from a descriptor open for writing, which is closed: the mapping
            // may still become writable (VM_MAYWRITE), so the restart opens the file for writing.
            let answer = try Self.answerAfterRestart(
                "file-prot",
                script: """
                    fd = os.open(directory + "/data", os.O_RDWR | os.O_CREAT, 0o644)
                    os.ftruncate(fd, 2 * PAGE)
                    address = libc.mmap(None, 2 * PAGE, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
                    os.close(fd)
                    print("pending", flush=True)
                    sys.stdin.readline()
                    made = libc.mprotect(address, PAGE, 3)  # PROT_READ | PROT_WRITE
                    print("mprotect", made, ctypes.get_errno(), flush=True)
                    """)
            #expect(answer == "mprotect 0 0")
        }

        @Test(.timeLimit(.minutes(2))) func privateMappingsOfDeletedFilesKeepTheirCleanPagesAndTheirDescriptor() throws
        {
            // Two deleted files: one still open (written through its descriptor after the
            // restart, which the mapping must see), one closed; no page was touched before.
            let answer = try Self.answerAfterRestart(
                "unlinked",
                script: """
                    def mapped(name, keep):
                        fd = os.open(directory + "/" + name, os.O_RDWR | os.O_CREAT, 0o644)
                        os.write(fd, name[0].encode() * PAGE + name[1].encode() * PAGE)
                        address = libc.mmap(None, 2 * PAGE, 1, 2, fd, 0)  # PROT_READ, MAP_PRIVATE
                        os.unlink(directory + "/" + name)
                        if not keep:
                            os.close(fd)
                        return address, fd
                    kept, fd = mapped("ab", True)
                    closed, _ = mapped("cd", False)
                    print("pending", flush=True)
                    sys.stdin.readline()
                    os.pwrite(fd, b"X", 0)
                    seen = [ctypes.string_at(a, 1).decode() for a in (kept, kept + PAGE, closed, closed + PAGE)]
                    print(" ".join(seen), flush=True)
                    """)
            #expect(answer == "X b c d")
        }

        @Test(.timeLimit(.minutes(2))) func readOnlyAndWritablePagesAreFilledWithTheirOwnBytes() throws {
            // The fill writes writable mappings in batches (process_vm_writev), read-only ones
            // page by page through /proc/PID/mem: a private file mapping written, one page
            // zeroed, then made read-only; anonymous memory made read-only; and 3,000 anonymous
            // pages of which every third is written (runs broken, over several batches).
            let answer = try Self.answerAfterRestart(
                "fill",
                script: """
                    fd = os.open(directory + "/data", os.O_RDWR | os.O_CREAT, 0o644)
                    os.write(fd, b"f" * (4 * PAGE))
                    private = libc.mmap(None, 4 * PAGE, 3, 2, fd, 0)  # PROT_READ | PROT_WRITE, MAP_PRIVATE
                    os.close(fd)
                    ctypes.memset(private, ord("p"), PAGE)
                    ctypes.memset(private + PAGE, 0, PAGE)
                    assert libc.mprotect(private, 4 * PAGE, 1) == 0  # PROT_READ
                    readonly = libc.mmap(None, 2 * PAGE, 3, 0x22, -1, 0)  # MAP_PRIVATE | MAP_ANONYMOUS
                    ctypes.memset(readonly, ord("r"), PAGE)
                    assert libc.mprotect(readonly, 2 * PAGE, 1) == 0
                    many = libc.mmap(None, 3000 * PAGE, 3, 0x22, -1, 0)
                    for k in range(0, 3000, 3):
                        ctypes.memmove(many + k * PAGE, b"%08d" % k, 8)
                    print("pending", flush=True)
                    sys.stdin.readline()
                    at = lambda address: ctypes.string_at(address, 1).decode().replace("\\0", "0")
                    written = all(ctypes.string_at(many + k * PAGE, 8) == b"%08d" % k for k in range(0, 3000, 3))
                    others = all(ctypes.string_at(many + k * PAGE, PAGE) == bytes(PAGE) for k in range(1, 3000, 3))
                    pages = [at(private + k * PAGE) for k in range(4)] + [at(readonly), at(readonly + PAGE)]
                    print(" ".join(pages), written, others, flush=True)
                    """)
            #expect(answer == "p 0 f f r 0 True True")
        }

        @Test(.timeLimit(.minutes(2))) func madviseFlagsAndMapFlagsOfEachMappingAreGivenAgain() throws {
            // One mapping per advice (and MAP_NORESERVE): their VmFlags, as smaps shows them
            // before the checkpoint, must be the restarted process's too.
            let script = """
                libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                # MADV_DONTDUMP, DONTFORK, NOHUGEPAGE, MERGEABLE, WIPEONFORK, SEQUENTIAL, RANDOM
                advised = {"dd": 16, "dc": 10, "nh": 15, "mg": 12, "wf": 18, "sr": 2, "rr": 1}
                regions = {}
                for flag, advice in advised.items():
                    regions[flag] = libc.mmap(None, 4 * PAGE, 3, 0x22, -1, 0)  # MAP_PRIVATE | MAP_ANONYMOUS
                    assert libc.madvise(regions[flag], 4 * PAGE, advice) == 0, flag
                regions["nr"] = libc.mmap(None, 4 * PAGE, 3, 0x4022, -1, 0)  # | MAP_NORESERVE
                def flags():
                    # Each region's flags are those of the mapping that holds it (it may merge).
                    spans = []
                    for line in open("/proc/self/smaps"):
                        head = line.split()[0]
                        if "-" in head and not head.endswith(":"):
                            spans.append([int(x, 16) for x in head.split("-")] + [[]])
                        elif head == "VmFlags:":
                            spans[-1][2] = line.split()[1:]
                    held = lambda a: next(s[2] for s in spans if s[0] <= a < s[1])
                    return " ".join(f + ("+" if f in held(a) else "-") for f, a in sorted(regions.items()))
                before = flags()
                print("pending", flush=True)
                sys.stdin.readline()
                print(before, "|", flags(), flush=True)
                """
            let answer = try Self.answerAfterRestart("advice", script: script)
            let halves = answer.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(halves.count == 2, "\(answer)")
            #expect(halves.first?.contains("-") == false, "not every advice took before the checkpoint: \(answer)")
            #expect(halves.first == halves.last, "\(answer)")
        }

        @Test(.timeLimit(.minutes(2))) func guardPagesComeBackAndTheirNeighboursKeepTheirBytes() throws {
            // Pages 2 and 3 of 8 are guard pages: pagemap's bit 58 (PM_GUARD_REGION) says which,
            // a forked child that touches one dies of SIGSEGV, and the others keep their bytes.
            let script = """
                import os, signal, struct
                libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                region = libc.mmap(None, 8 * PAGE, 3, 0x22, -1, 0)  # MAP_PRIVATE | MAP_ANONYMOUS
                for k in range(8):
                    ctypes.memset(region + k * PAGE, 0x41 + k, PAGE)
                assert libc.madvise(region + 2 * PAGE, 2 * PAGE, 102) == 0  # MADV_GUARD_INSTALL
                def state():
                    with open("/proc/self/pagemap", "rb") as pagemap:
                        pagemap.seek(region // PAGE * 8)
                        entries = struct.unpack("8Q", pagemap.read(64))
                    guards = "".join("g" if e >> 58 & 1 else "." for e in entries)
                    kept = "".join(
                        "ok" if ctypes.string_at(region + k * PAGE, PAGE) == bytes([0x41 + k]) * PAGE else "no"
                        for k in range(8) if entries[k] >> 58 & 1 == 0)
                    child = os.fork()
                    if child == 0:
                        ctypes.memset(region + 3 * PAGE, 0, 1)
                        os._exit(0)
                    _, status = os.waitpid(child, 0)
                    touched = "segv" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV else "ran"
                    return guards + " " + kept + " " + touched
                before = state()
                print("pending", flush=True)
                sys.stdin.readline()
                print(before, "|", state(), flush=True)
                """
            let answer = try Self.answerAfterRestart("guard", script: script)
            let halves = answer.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(halves.first == "..gg.... okokokokokok segv", "before the checkpoint: \(answer)")
            #expect(halves.first == halves.last, "\(answer)")
        }

        /// An AIO context is restored (`AioContextTests`), but not one whose ring a program
        /// made read-only: a restart makes rings as io_setup does.
        @Test(.timeLimit(.minutes(2))) func anAIOContextWithAReadOnlyRingIsRefusedAtCheckpoint() throws {
            let errors = try Self.refusal(
                "aio",
                script: """
                    context = ctypes.c_ulong(0)
                    assert libc.syscall(206, 16, ctypes.byref(context)) == 0  # io_setup
                    assert libc.mprotect(ctypes.c_void_p(context.value), PAGE, 1) == 0  # PROT_READ
                    print("pending", flush=True)
                    sys.stdin.readline()
                    """)
            #expect(errors.contains("an AIO context (io_setup)"), "\(errors)")
            #expect(errors.contains("r--s, not rw-s"), "\(errors)")
        }

        @Test(.timeLimit(.minutes(2))) func aMemfdHeldOnlyByItsSharedMappingsIsOneObjectAgain() throws {
            // Its descriptor closed: the two mappings are all that hold it, and must still be one.
            let answer = try Self.answerAfterRestart(
                "memfd-mapped",
                script: """
                    fd = os.memfd_create("mapped")
                    os.ftruncate(fd, 2 * PAGE)
                    os.pwrite(fd, b"before", PAGE)
                    first = libc.mmap(None, 2 * PAGE, 3, 1, fd, 0)  # PROT_READ | PROT_WRITE, MAP_SHARED
                    second = libc.mmap(None, PAGE, 1, 1, fd, PAGE)  # PROT_READ, the second page
                    os.close(fd)
                    print("pending", flush=True)
                    sys.stdin.readline()
                    kept = ctypes.string_at(second, 6)
                    ctypes.memmove(first + PAGE, b"after!", 6)
                    names = sorted({l.split()[-2] for l in open("/proc/self/maps") if "memfd:" in l})
                    print(kept, ctypes.string_at(second, 6), names, flush=True)
                    """)
            #expect(answer == "b'before' b'after!' ['/memfd:mapped']")
        }

        @Test(.timeLimit(.minutes(2))) func aHugetlbMemfdIsRefusedAtCheckpoint() throws {
            // MFD_HUGETLB: on hugetlbfs, which a restart would not give it back.
            let errors = try Self.refusal(
                "memfd-huge",
                script: """
                    fd = os.memfd_create("huge", 4)  # MFD_HUGETLB
                    print("pending", flush=True)
                    sys.stdin.readline()
                    """)
            #expect(errors.contains("/memfd:huge (deleted): a memfd on a file system of type"), "\(errors)")
            #expect(errors.contains("(MFD_HUGETLB): not restored"), "\(errors)")
        }
    }
}
