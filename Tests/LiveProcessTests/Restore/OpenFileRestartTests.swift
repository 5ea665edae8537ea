import Foundation
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// Open files whose state is more than a path and an offset: pipes with bytes in them, their
    /// status flags and shared ends, FIFOs, deleted files' modes, times and holes; and the locks
    /// a restart would lose, refused at checkpoint.
    @Suite struct OpenFileRestartTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// Runs `script` until it prints "ready", checkpoints it, kills it, restarts it and tells
        /// it "go": returns the line it answers.
        static func answerAfterRestart(_ name: String, script: String) throws -> String {
            let directory = try RestartTests.scratch(name)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", script, directory])
            #expect(try original.line() == "ready")
            try RestartTests.checkpoint(original.pid, store: directory + "/store", name: name)
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: directory + "/store", name: name, generation: 0)
            let answer = try restarted.send("go")
            _ = try? restarted.child.wait()
            return answer
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aPipeKeepsItsBytesCapacityFlagsAndSharedEnds() throws {
            let answer = try Self.answerAfterRestart(
                "pipe",
                script: """
                    import fcntl, os, sys
                    r, w = os.pipe()
                    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
                    data = bytes(i * 7 % 251 for i in range(300000))
                    os.write(w, data)
                    fcntl.fcntl(w, fcntl.F_SETFL, os.O_NONBLOCK)
                    dup = os.dup(w)
                    r2 = os.open(f"/proc/self/fd/{r}", os.O_RDONLY | os.O_NONBLOCK)
                    print("ready", flush=True)
                    sys.stdin.readline()
                    nonblocking = [bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK) for fd in (r, w, dup, r2)]
                    size = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
                    os.close(w)
                    os.close(dup)
                    got = b""
                    while chunk := os.read(r, 65536):
                        got += chunk
                    print(nonblocking, size, got == data, len(got), flush=True)
                    """)
            #expect(answer == "[False, True, True, True] 1048576 True 300000")
        }

        /// A pipe the program made and moved onto its stderr, keeping the read end (as a
        /// program that captures its own output does: ipykernel): it is the program's own, not
        /// ld-chpox's stderr; what it writes to fd 2 after the restart is read from the pipe.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aPipeMovedOntoStderrByTheProgramStaysItsOwn() throws {
            let answer = try Self.answerAfterRestart(
                "stdio-pipe",
                script: """
                    import os, sys
                    r, w = os.pipe()
                    os.write(w, b"queued before, ")
                    os.dup2(w, 2)
                    os.close(w)
                    print("ready", flush=True)
                    sys.stdin.readline()
                    os.write(2, b"written after")
                    os.set_blocking(r, False)
                    same = os.fstat(2).st_ino == os.fstat(r).st_ino
                    print(os.read(r, 100), same, flush=True)
                    """)
            #expect(answer == "b'queued before, written after' True")
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aFIFOIsReopenedByItsPathWithItsBytes() throws {
            let answer = try Self.answerAfterRestart(
                "fifo",
                script: """
                    import os, sys
                    path = sys.argv[1] + "/fifo"
                    os.mkfifo(path)
                    both = os.open(path, os.O_RDWR)
                    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                    os.write(both, b"queued in the fifo")
                    print("ready", flush=True)
                    sys.stdin.readline()
                    print(os.read(reader, 100), os.path.samestat(os.fstat(both), os.stat(path)), flush=True)
                    """)
            #expect(answer == "b'queued in the fifo' True")
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aDeletedFileKeepsItsModeTimeHolesAndSecondName() throws {
            let answer = try Self.answerAfterRestart(
                "deleted",
                script: """
                    import os, sys
                    path = sys.argv[1] + "/gone"
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                    os.pwrite(fd, b"head", 0)
                    os.pwrite(fd, b"tail", 1 << 20)
                    os.fchmod(fd, 0o4645)
                    os.utime(fd, ns=(0, 1234567890123456789))
                    os.link(path, path + ".link")
                    other = os.open(path + ".link", os.O_RDONLY)
                    os.unlink(path)
                    os.unlink(path + ".link")
                    print("ready", flush=True)
                    sys.stdin.readline()
                    st = os.fstat(fd)
                    hole = os.lseek(fd, 0, os.SEEK_HOLE)
                    same = os.path.samestat(st, os.fstat(other))
                    body = os.pread(other, 4, 0) + os.pread(other, 4, 1 << 20)
                    print(oct(st.st_mode & 0o7777), st.st_mtime_ns, hole, same, body, st.st_size, flush=True)
                    """)
            #expect(answer == "0o4645 1234567890123456789 4096 True b'headtail' 1048580")
        }

        /// zdtm unlink_fstat041: a file made with O_TMPFILE comes back with its contents, its
        /// offset and its flags (O_TMPFILE among them, which no reopen gives).
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aFileMadeWithoutANameKeepsItsFlags() throws {
            let answer = try Self.answerAfterRestart(
                "tmpfile",
                script: """
                    import fcntl, os, sys
                    fd = os.open(sys.argv[1], os.O_TMPFILE | os.O_WRONLY | os.O_APPEND, 0o640)
                    os.write(fd, b"written before")
                    def show():
                        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                        body = open("/proc/self/fd/%d" % fd, "rb").read()
                        return "%o %d %r %d" % (flags, os.lseek(fd, 0, os.SEEK_CUR), body, os.fstat(fd).st_nlink)
                    print("ready", flush=True)
                    sys.stdin.readline()
                    print(show(), flush=True)
                    """)
            // O_TMPFILE (020200000) | O_APPEND | O_WRONLY | O_LARGEFILE, as the kernel keeps them.
            #expect(answer == "20302001 14 b'written before' 0")
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func anFlockLockIsTakenAgainByTheRestartedProcess() throws {
            let answer = try Self.answerAfterRestart(
                "flock",
                script: """
                    import fcntl, os, sys
                    path = sys.argv[1] + "/locked"
                    fd = os.open(path, os.O_RDWR | os.O_CREAT)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    print("ready", flush=True)
                    sys.stdin.readline()
                    lines = [l.split() for l in open(f"/proc/self/fdinfo/{fd}") if l.startswith("lock:")]
                    mine = [l[2:5] + [l[5] == str(os.getpid())] for l in lines]
                    other = os.open(path, os.O_RDWR)
                    try:
                        fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
                        held = False
                    except BlockingIOError:
                        held = True
                    print(mine, held, flush=True)
                    """)
            #expect(answer == "[['FLOCK', 'ADVISORY', 'WRITE', True]] True")
        }

        /// zdtm file_locks06-08: open-file-description locks (F_OFD_SETLK), a read lock on one
        /// range and a write lock to the end, are held again by the restarted process's open
        /// file: fdinfo lists them, and another open file of it cannot take a conflicting one.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func openFileDescriptionLocksAreTakenAgain() throws {
            let answer = try Self.answerAfterRestart(
                "ofd",
                script: """
                    import fcntl, os, struct, sys
                    path = sys.argv[1] + "/locked"
                    fd = os.open(path, os.O_RDWR | os.O_CREAT)
                    F_OFD_GETLK, F_OFD_SETLK = 36, 37
                    def lock(on, kind, start, length, command=F_OFD_SETLK):
                        return struct.unpack("hhqqi4x", fcntl.fcntl(on, command, struct.pack("hhqqi4x", kind, 0, start, length, 0)))
                    lock(fd, fcntl.F_RDLCK, 10, 5)
                    lock(fd, fcntl.F_WRLCK, 100, 0)
                    def report():
                        held = sorted(l.split()[2:5] + l.split()[7:] for l in open(f"/proc/self/fdinfo/{fd}") if l.startswith("lock:"))
                        other = os.open(path, os.O_RDWR)
                        blocked = [lock(other, fcntl.F_WRLCK, start, 1, F_OFD_GETLK)[0] != fcntl.F_UNLCK for start in (0, 12, 200)]
                        os.close(other)
                        return held, blocked
                    print("ready", flush=True)
                    sys.stdin.readline()
                    print(*report(), flush=True)
                    """)
            #expect(
                answer
                    == "[['OFDLCK', 'ADVISORY', 'READ', '10', '14'], ['OFDLCK', 'ADVISORY', 'WRITE', '100', 'EOF']] "
                    + "[False, True, True]")
        }

        /// zdtm file_locks00, file_lease00/01: the process's POSIX locks (a read lock on one range,
        /// a write lock to the end) and a read and a write lease come back. Another process (a
        /// child forked after the restart) sees the locks with F_GETLK, held by its parent; the
        /// leases read back with F_GETLEASE, and the child's open for writing breaks the read
        /// lease: the open would block and the restarted process gets SIGIO.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func posixLocksAndLeasesAreTakenAgain() throws {
            let answer = try Self.answerAfterRestart(
                "posix",
                script: """
                    import fcntl, os, signal, struct, sys
                    d = sys.argv[1]
                    f = os.open(d + "/locked", os.O_RDWR | os.O_CREAT)
                    os.write(f, b"x" * 50)
                    g = os.open(d + "/read-leased", os.O_RDONLY | os.O_CREAT)
                    h = os.open(d + "/write-leased", os.O_WRONLY | os.O_CREAT)
                    def lock(on, kind, start, length, command=fcntl.F_SETLK):
                        return struct.unpack("hhqqi4x", fcntl.fcntl(on, command, struct.pack("hhqqi4x", kind, 0, start, length, 0)))
                    lock(f, fcntl.F_RDLCK, 10, 5)
                    lock(f, fcntl.F_WRLCK, 100, 0)
                    fcntl.fcntl(g, fcntl.F_SETLEASE, fcntl.F_RDLCK)
                    fcntl.fcntl(h, fcntl.F_SETLEASE, fcntl.F_WRLCK)
                    print("ready", flush=True)
                    sys.stdin.readline()
                    leases = [fcntl.fcntl(g, fcntl.F_GETLEASE), fcntl.fcntl(h, fcntl.F_GETLEASE)]
                    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGIO])
                    r, w = os.pipe()
                    child = os.fork()
                    if child == 0:
                        other = os.open(d + "/locked", os.O_RDWR)
                        seen = []
                        for start in (0, 12, 50, 200):
                            for kind in (fcntl.F_RDLCK, fcntl.F_WRLCK):
                                t, _, s, l, p = lock(other, kind, start, 1, fcntl.F_GETLK)
                                seen.append("-" if t == fcntl.F_UNLCK else f"{t}:{s}:{l}:{p == os.getppid()}")
                        try:
                            os.open(d + "/read-leased", os.O_WRONLY | os.O_NONBLOCK)
                            seen.append("opened")
                        except BlockingIOError:
                            seen.append("would-block")
                        os.write(w, " ".join(seen).encode())
                        os._exit(0)
                    os.waitpid(child, 0)
                    seen = os.read(r, 4096).decode()
                    info = signal.sigtimedwait([signal.SIGIO], 10)
                    broken = fcntl.fcntl(g, fcntl.F_GETLEASE)
                    print(leases, seen, info is not None and info.si_signo == signal.SIGIO, broken, flush=True)
                    """)
            #expect(
                answer
                    == "[0, 1] - - - 0:10:5:True - - 1:100:0:True 1:100:0:True would-block True 2")
        }

        /// What still cannot come back exactly is refused, naming the descriptor: a lease being
        /// broken (zdtm file_lease02-04), and a lease on an open file two descriptors share.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func leasesThatCannotComeBackAreRefusedNamingTheDescriptor() throws {
            let directory = try RestartTests.scratch("locks")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import fcntl, os, signal, sys
                    signal.signal(signal.SIGIO, lambda *_: None)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGIO])
                    a = os.open(sys.argv[1] + "/a", os.O_RDONLY | os.O_CREAT)
                    b = os.open(sys.argv[1] + "/b", os.O_RDONLY | os.O_CREAT)
                    fcntl.fcntl(a, fcntl.F_SETLEASE, fcntl.F_RDLCK)
                    fcntl.fcntl(b, fcntl.F_SETLEASE, fcntl.F_RDLCK)
                    os.dup(b)
                    try:
                        os.open(sys.argv[1] + "/a", os.O_WRONLY | os.O_NONBLOCK)
                    except BlockingIOError:
                        pass
                    c = os.open(sys.argv[1] + "/c", os.O_WRONLY | os.O_CREAT)
                    os.unlink(sys.argv[1] + "/c")
                    fcntl.fcntl(c, fcntl.F_SETLEASE, fcntl.F_WRLCK)
                    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGIO])
                    print("ready", signal.SIGIO in signal.sigpending(), flush=True)
                    sys.stdin.readline()
                    print(fcntl.fcntl(c, fcntl.F_GETLEASE), signal.SIGIO in signal.sigpending(), flush=True)
                    """, directory,
                ])
            defer { RestartTests.end(original) }
            let ready = try original.line()
            #expect(ready == "ready False", "\(ready)")
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "locks", "\(original.pid)"])
            #expect(run.status != 0)
            #expect(
                run.errors.contains("fd 3: a file lease being broken (to UNLCK) on \(directory)/a"), "\(run.errors)")
            #expect(
                run.errors.contains("fd 4: a read lease on \(directory)/b, whose open file is fd 5 too"),
                "\(run.errors)")
            // cpx never opens the deleted file it cannot save: the write lease is still whole.
            #expect(
                run.errors.contains("fd 6: \(directory)/c (deleted): a deleted file under a lease (WRITE)"),
                "\(run.errors)")
            let after = try original.send("go")
            #expect(after == "1 False", "\(after)")
        }

        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aPtyWithQueuedDataIsRefusedButNotItsDeletedWorkingDirectory() throws {
            let directory = try RestartTests.scratch("cwd")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import os, sys
                    master, slave = os.openpty()
                    os.write(master, b"queued\\n")  # waits in the slave: refused
                    os.close(slave)
                    os.mkdir(sys.argv[1] + "/gone")
                    os.chdir(sys.argv[1] + "/gone")
                    os.rmdir(sys.argv[1] + "/gone")
                    print("ready", master, flush=True)
                    sys.stdin.readline()
                    """, directory,
                ])
            defer { RestartTests.end(original) }
            let ready = try original.line()
            #expect(ready.hasPrefix("ready"))
            let master = ready.split(separator: " ").last.map(String.init) ?? "?"
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "cwd", "\(original.pid)"])
            #expect(run.status != 0)
            // The deleted working directory is made again at restart: only the pty is refused.
            #expect(!run.errors.contains("cwd "), "\(run.errors)")
            #expect(run.errors.contains("fd \(master): /dev/ptmx: "), "\(run.errors)")
            #expect(run.errors.contains("queued terminal data is not restored"), "\(run.errors)")
        }

        /// A descriptor of the process's own namespace (/proc/self/ns/net, uts) is its own again
        /// after the restart, with its flags; one of another namespace is refused at cpx.
        @Test(.timeLimit(.minutes(2))) func descriptorsOfItsOwnNamespacesAreItsOwnAgain() throws {
            let answer = try MappingRestartTests.answerAfterRestart(
                "ns",
                script: """
                    import fcntl, os
                    kept = {t: os.open("/proc/self/ns/" + t, os.O_RDONLY) for t in ("net", "uts")}
                    os.set_inheritable(kept["uts"], True)  # Python's descriptors are close-on-exec
                    def state():
                        return " ".join(
                            t + ("=" if os.readlink("/proc/self/fd/%d" % fd) == os.readlink("/proc/self/ns/" + t)
                                 else "!") + ("c" if fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC else "-")
                            for t, fd in sorted(kept.items()))
                    before = state()
                    print("pending", flush=True)
                    sys.stdin.readline()
                    print(before, "|", state(), flush=True)
                    """)
            #expect(answer == "net=c uts=- | net=c uts=-", "\(answer)")
        }

        /// Signal-driven I/O on a pipe (owner, signal, O_ASYNC) comes back, and a write to the
        /// pipe after the restart raises the signal in the process.
        @Test(.timeLimit(.minutes(2))) func signalDrivenIOComesBackWithItsOwnerAndSignal() throws {
            let answer = try MappingRestartTests.answerAfterRestart(
                "fown",
                script: """
                    import fcntl, os, signal, time
                    got = []
                    signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
                    # The test runner's thread blocks most signals, and its children inherit that.
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR1])
                    r, w = os.pipe()
                    F_SETSIG, F_GETSIG = 10, 11
                    fcntl.fcntl(r, fcntl.F_SETOWN, os.getpid())
                    fcntl.fcntl(r, F_SETSIG, signal.SIGUSR1)
                    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
                    def state():
                        os.write(w, b"x")
                        time.sleep(0.1)
                        os.read(r, 1)
                        return "%s %d %s %d" % (
                            fcntl.fcntl(r, fcntl.F_GETOWN) == os.getpid(), fcntl.fcntl(r, F_GETSIG),
                            bool(fcntl.fcntl(r, fcntl.F_GETFL) & os.O_ASYNC), len(got))
                    before = state()
                    print("pending", flush=True)
                    sys.stdin.readline()
                    print(before, "|", state(), flush=True)
                    """)
            #expect(answer == "True 10 True 1 | True 10 True 2", "\(answer)")
        }

        /// A working directory and a descriptor on one directory deleted with its parent come
        /// back as one deleted directory at the same path, with its mode; nothing is left at
        /// that path (zdtm cwd01, cwd02, rmdir_open).
        @Test(.timeLimit(.minutes(2))) func aDeletedDirectoryHeldAsCwdAndDescriptorComesBackDeleted() throws {
            let answer = try MappingRestartTests.answerAfterRestart(
                "deleted-dir",
                script: """
                    import os
                    inner = directory + "/gone/inner"
                    os.makedirs(inner)
                    os.chmod(inner, 0o751)
                    fd = os.open(inner, os.O_RDONLY | os.O_DIRECTORY)
                    os.chdir(inner)
                    os.rmdir(inner)
                    os.rmdir(directory + "/gone")
                    def state():
                        held, cwd = os.fstat(fd), os.stat(".")
                        return "%o %d %s %s %s" % (
                            held.st_mode & 0o7777, held.st_nlink, held.st_ino == cwd.st_ino,
                            os.readlink("/proc/self/fd/%d" % fd) == inner + " (deleted)",
                            os.path.exists(directory + "/gone"))
                    before = state()
                    print("pending", flush=True)
                    sys.stdin.readline()
                    print(before, "|", state(), flush=True)
                    """)
            #expect(answer == "751 0 True True False | 751 0 True True False", "\(answer)")
        }
    }
}
