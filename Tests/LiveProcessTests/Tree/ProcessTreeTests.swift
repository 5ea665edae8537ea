#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// Process trees: `cpx` takes a process with its descendants, `ld-chpox` gives back every
    /// one with its pid, parent, session and group, the pipes between them with what was queued
    /// in them, and the open files they share (one offset).
    @Suite struct ProcessTreeTests {
        static let hasPython = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// A session leader (root) whose child leads its own process group and forks a
        /// grandchild. Root writes what it is told into a pipe the grandchild reads only at the
        /// end (so it is queued there at the checkpoint) and into a log file all three share
        /// (one open file, one offset). At "end" each prints its ids, innermost first.
        static let program = """
            import os, sys
            os.setsid()
            r, w = os.pipe()
            gate_r, gate_w = os.pipe()
            log = open(sys.argv[1], 'w')
            child = os.fork()
            if child == 0:
                os.setpgid(0, 0)
                grand = os.fork()
                if grand == 0:
                    os.close(w); os.close(gate_w)
                    os.read(gate_r, 1)
                    data = b''
                    while not data.endswith(b'end\\n'):
                        data += os.read(r, 4096)
                    for line in data.decode().split():
                        log.write('grand %s\\n' % line); log.flush()
                    print('grand', os.getpid(), os.getppid(), os.getpgrp(), os.getsid(0), flush=True)
                    os._exit(0)
                os.close(r); os.close(w); os.close(gate_r); os.close(gate_w)
                _, status = os.waitpid(grand, 0)
                print('child', os.getpid(), os.getppid(), os.getpgrp(), os.getsid(0), grand, status, flush=True)
                os._exit(7)
            os.close(r); os.close(gate_r)
            grand = 0
            while grand == 0:
                tasks = open('/proc/%d/task/%d/children' % (child, child)).read().split()
                grand = int(tasks[0]) if tasks else 0
            print('ready', child, grand, flush=True)
            for line in sys.stdin:
                command = line.split()
                if command[0] == 'put':
                    os.write(w, (command[1] + '\\n').encode())
                    log.write('root %s\\n' % command[1]); log.flush()
                    print('put', flush=True)
                elif command[0] == 'end':
                    log.write('root end\\n'); log.flush()
                    os.write(w, b'end\\n')
                    os.write(gate_w, b'g')
                    _, status = os.waitpid(child, 0)
                    try:  # /proc names it by its own pid (a new PID namespace has a /proc of its own)
                        own = open('/proc/%d/stat' % os.getpid()).read().split()[0] == str(os.getpid())
                    except OSError:
                        own = False
                    print('root', os.getpid(), os.getpgrp(), os.getsid(0), child, os.WEXITSTATUS(status), own,
                          flush=True)
                    break
            """

        /// Runs `body` with this process as the child subreaper: the processes of a tree it
        /// kills are its to reap, so their pids are free when it returns (pid 1 reaps late here).
        static func asSubreaper<T>(_ body: () throws -> T) rethrows -> T {
            try? CurrentProcess.setChildSubreaper(true)
            defer { try? CurrentProcess.setChildSubreaper(false) }
            return try body()
        }

        /// Kills `pids` and waits until each is reaped or gone (this process is their
        /// subreaper: `asSubreaper`).
        static func killTree(_ pids: [Int32]) {
            for pid in pids { kill(pid, SIGKILL) }
            for pid in pids {
                for _ in 0..<1000 {
                    var status: Int32 = 0
                    if waitpid(pid, &status, WNOHANG | __WALL) == pid { break }
                    if (try? ProcFS.state(pid)) == nil { break }
                    usleep(2000)
                }
            }
        }

        static func ids(_ line: String) -> [Int32] { line.split(separator: " ").dropFirst().compactMap { Int32($0) } }

        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(3)))
        func aTreeRestartsWithItsPidsGroupsPipesAndSharedFiles() throws {
            try Self.asSubreaper {
                let directory = try RestartTests.scratch("tree")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store = directory + "/store", logPath = directory + "/log"
                let original = try WorkloadProcess(
                    executable: "/usr/bin/python3", arguments: ["-c", Self.program, logPath])
                let ready = try original.line()
                let root = original.pid
                let (child, grand) = (Self.ids(ready)[0], Self.ids(ready)[1])
                #expect(try original.send("put a") == "put")
                try RestartTests.checkpoint(root, store: store, name: "tree")
                #expect(try original.send("put b") == "put")
                try RestartTests.checkpoint(root, store: store, name: "tree")
                let shown = try TestTools.run("dumpinfo", ["--store", store, "--chain"])
                #expect(shown.status == 0, "\(shown.errors)")
                // dumpinfo lists every process of the tree with its place in it.
                let detail = try TestTools.run("dumpinfo", ["--store", store, "--name", "tree", "--generation", "1"])
                #expect(
                    detail.output.contains("tree         pid \(child) parent \(root), group \(child)"),
                    "\(detail.output)")
                #expect(
                    detail.output.contains("tree         pid \(grand) parent \(child), group \(child)"),
                    "\(detail.output)")
                Self.killTree([root, child, grand])

                let restarted = try RestartTests.restart(store: store, name: "tree", generation: 1)
                try restarted.write("end")
                // Each knows the others by their saved pids: waitpid and getppid hold.
                #expect(try restarted.line() == "grand \(grand) \(child) \(child) \(root)")
                #expect(try restarted.line() == "child \(child) \(root) \(child) \(root) \(grand) 0")
                #expect(try restarted.line() == "root \(root) \(root) \(root) \(child) 7 True")
                #expect(try restarted.child.wait() == .exited(0))
                // The pipe held "a b" at generation 1; the log's one offset is shared again (the
                // grandchild appends after root's last line instead of overwriting it).
                let log = try String(contentsOfFile: logPath, encoding: .utf8)
                #expect(log == "root a\nroot b\nroot end\ngrand a\ngrand b\ngrand end\n", "\(log)")
            }
        }

        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func withNoTreeAProcessWithChildrenIsRefusedNamingThem() throws {
            try Self.asSubreaper {
                let directory = try RestartTests.scratch("no-tree")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let original = try WorkloadProcess(
                    executable: "/usr/bin/python3", arguments: ["-c", Self.program, directory + "/log"])
                let ids = Self.ids(try original.line())
                let run = try TestTools.run("cpx", ["--store", directory + "/store", "--no-tree", "\(original.pid)"])
                #expect(run.status == 1)
                #expect(run.errors.contains("child process \(ids[0])"), "\(run.errors)")
                #expect(run.errors.contains("--no-tree"), "\(run.errors)")
                Self.killTree([original.pid] + ids)
            }
        }

        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func withRequireSamePidARestartWhileTheTreesPidsAreTakenIsRefusedNamingThePid() throws {
            try Self.asSubreaper {
                let directory = try RestartTests.scratch("tree-pids")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store = directory + "/store"
                let original = try WorkloadProcess(
                    executable: "/usr/bin/python3", arguments: ["-c", Self.program, directory + "/log"])
                let ids = Self.ids(try original.line())
                try RestartTests.checkpoint(original.pid, store: store, name: "tree")
                // The original still runs: every pid of the tree is taken.
                let run = try TestTools.run("ld-chpox", ["--store", store, "--name", "tree", "--require-same-pid"])
                #expect(run.status == 1)
                #expect(run.errors.contains("pid \(original.pid)"), "\(run.errors)")
                #expect(run.errors.contains("is taken"), "\(run.errors)")
                #expect(run.errors.contains("--require-same-pid"), "\(run.errors)")
                #expect((try? ProcFS.state(ids[0])) != nil)  // and the original runs on
                Self.killTree([original.pid] + ids)
            }
        }

        struct RestartDocument: Decodable {
            var pid: Int32
            var notices: [String]
            var processes: [Int32]
            var originalProcesses: [Int32]
            var pidNamespaceInit: Int32?
        }

        /// The saved pids, innermost last, of process `pid` (/proc/PID/status NSpid).
        static func namespacePids(_ pid: Int32) -> [Int32] {
            ((try? ProcFS.status(pid))?["NSpid"] ?? "").split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
        }

        /// A tree one of whose pids is taken restarts in a new PID namespace: inside it each
        /// process has its saved pid (getpid, getppid, groups, waitpid hold), outside others;
        /// a notice names the pid taken. With --require-same-pid it is refused.
        @Test(.enabled(if: hasPython && getuid() == 0, "python3 and root"), .timeLimit(.minutes(3)))
        func aTreeWhosePidIsTakenRestartsInANewPidNamespace() throws {
            try Self.asSubreaper {
                let directory = try RestartTests.scratch("tree-pidns")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store = directory + "/store", logPath = directory + "/log"
                let original = try WorkloadProcess(
                    executable: "/usr/bin/python3", arguments: ["-c", Self.program, logPath])
                let ready = try original.line()
                let root = original.pid
                let (child, grand) = (Self.ids(ready)[0], Self.ids(ready)[1])
                #expect(try original.send("put a") == "put")
                try RestartTests.checkpoint(root, store: store, name: "tree")
                Self.killTree([root, child, grand])
                // The child's pid taken, exactly (clone3 set_tid), by another process.
                let taker = try ChildProcess.spawn("/bin/sleep", ["100"], pid: child, environment: [])
                defer {
                    try? taker.send(SIGKILL)
                    _ = try? taker.wait()
                }
                let refused = try TestTools.run("ld-chpox", ["--store", store, "--name", "tree", "--require-same-pid"])
                #expect(refused.status == 1)
                #expect(refused.errors.contains("pid \(child)"), "\(refused.errors)")
                #expect(refused.errors.contains("--require-same-pid"), "\(refused.errors)")

                let restarted = try RestartTests.restart(store: store, name: "tree", generation: 0, extra: ["--json"])
                let document = try JSONDecoder().decode(RestartDocument.self, from: Data(try restarted.line().utf8))
                #expect(document.originalProcesses == [root, child, grand])
                // The namespace's init, ld-chpox's child, is pid 1 there.
                let initPid = try #require(document.pidNamespaceInit)
                #expect(try ProcFS.children(restarted.child.pid) == [initPid])
                #expect(Self.namespacePids(initPid) == [initPid, 1])
                #expect(document.processes.count == 3)
                #expect(!document.processes.contains(child))
                #expect(
                    document.notices.first
                        == "restarted in a new PID namespace: pid \(child) is taken here; inside it every process has "
                        + "its own pid; seen from outside, pid \(document.pid) is \(root)",
                    "\(document.notices)")
                // Seen from outside: each is its saved pid in its namespace (NSpid, innermost last).
                for (outer, saved) in zip(document.processes, [root, child, grand]) {
                    #expect(Self.namespacePids(outer) == [outer, saved])
                }
                // cpx refuses a process of it (its pids inside are not recorded).
                let cpx = try TestTools.run("cpx", ["--store", directory + "/other", "\(document.pid)"])
                #expect(cpx.status != 0)
                #expect(cpx.errors.contains("PID namespace of its own"), "\(cpx.errors)")
                try restarted.write("end")
                // Inside, each knows itself and the others by their saved pids.
                #expect(try restarted.line() == "grand \(grand) \(child) \(child) \(root)")
                #expect(try restarted.line() == "child \(child) \(root) \(child) \(root) \(grand) 0")
                #expect(try restarted.line() == "root \(root) \(root) \(root) \(child) 7 True")
                // The init ends with the root process, with its status, and ld-chpox --wait with it.
                #expect(try restarted.child.wait() == .exited(0))
                #expect((try? ProcFS.state(initPid)) == nil)
                let log = try String(contentsOfFile: logPath, encoding: .utf8)
                #expect(log == "root a\nroot end\ngrand a\ngrand end\n", "\(log)")
            }
        }

        /// cpx refuses a process in a PID namespace below its own: it would record pids that
        /// are not the ones the process knows.
        @Test(.enabled(if: getuid() == 0, "creating a PID namespace needs root"), .timeLimit(.minutes(1)))
        func aProcessInAPidNamespaceOfItsOwnIsRefused() throws {
            let directory = try RestartTests.scratch("pidns-cpx")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let sleeper = try ChildProcess.spawnInPidNamespace("/bin/sleep", ["100"], environment: [])
            defer {
                try? sleeper.send(SIGKILL)
                _ = try? sleeper.wait()
            }
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "\(sleeper.pid)"])
            #expect(run.status != 0)
            #expect(run.errors.contains("PID namespace of its own (NSpid \(sleeper.pid) 1)"), "\(run.errors)")
            #expect((try? ProcFS.state(sleeper.pid)) != nil)  // and it runs on
        }

        /// What a restart of a tree cannot reproduce is refused at the checkpoint, naming it.
        @Test(
            .enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)),
            arguments: [
                (
                    // A grandchild shares root's table, its parent (which unshared it) does not.
                    "clone-files-not-parent",
                    "import ctypes, os, sys, time\nlibc = ctypes.CDLL(None, use_errno=True)\nr, w = os.pipe()\n"
                        + "c = libc.syscall(56, 0x400 | 17, 0, 0, 0, 0)\nif c == 0:\n"
                        + "    if libc.syscall(56, 0x400 | 17, 0, 0, 0, 0) == 0:\n        time.sleep(100); os._exit(0)\n"
                        + "    libc.unshare(0x400); os.write(w, b'u'); time.sleep(100); os._exit(0)\n"
                        + "os.read(r, 1)\nprint('ready', flush=True)\nsys.stdin.readline()",
                    "but not with its parent"
                )
            ])
        func whatATreeRestartCannotReproduceIsRefused(name: String, script: String, reason: String) throws {
            try Self.asSubreaper {
                let directory = try RestartTests.scratch("tree-\(name)")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script])
                #expect(try original.line() == "ready")
                let children = (try? ProcFS.children(original.pid)) ?? []
                let grandchildren = children.flatMap { (try? ProcFS.children($0)) ?? [] }
                let run = try TestTools.run("cpx", ["--store", directory + "/store", "\(original.pid)"])
                #expect(run.status == 1)
                #expect(run.errors.contains(reason), "\(run.errors)")
                #expect((try? ProcFS.state(original.pid)) != nil)
                Self.killTree([original.pid] + children + grandchildren)
            }
        }

        /// Shared anonymous memory is one object again: what the child writes into it after the
        /// restart, the parent reads; and what was written before the checkpoint is there, even
        /// a page no live process had touched (its writer has exited).
        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func sharedMemoryIsSharedAgain() throws {
            try Self.asSubreaper {
                let directory = try RestartTests.scratch("tree-shm")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store = directory + "/store"
                let script = """
                    import mmap, os, sys, time
                    m = mmap.mmap(-1, 64 * 4096)
                    m[0:6] = b'parent'
                    # A page only a process that has exited wrote, far from the others (no fault-around maps it):
                    # in no page table at the checkpoint.
                    e = os.fork()
                    if e == 0:
                        m[40 * 4096:40 * 4096 + 5] = b'ended'
                        os._exit(0)
                    os.waitpid(e, 0)
                    r, w = os.pipe()
                    c = os.fork()
                    if c == 0:
                        m[4096:4101] = b'child'
                        os.read(r, 1)
                        m[8192:8197] = b'after'
                        os._exit(0)
                    while m[4096:4101] != b'child': time.sleep(0.01)
                    print('ready', c, flush=True)
                    sys.stdin.readline()
                    os.write(w, b'g')
                    os.waitpid(c, 0)
                    print(m[0:6].decode(), m[4096:4101].decode(), m[8192:8197].decode(), m[40 * 4096:40 * 4096 + 5].decode(),
                          flush=True)
                    """
                let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script])
                let child = Self.ids(try original.line())[0]
                try RestartTests.checkpoint(original.pid, store: store, name: "shm")
                try RestartTests.checkpoint(original.pid, store: store, name: "shm")
                Self.killTree([original.pid, child])
                let restarted = try RestartTests.restart(store: store, name: "shm", generation: 1)
                #expect(try restarted.send("go") == "parent child after ended")
                #expect(try restarted.child.wait() == .exited(0))
            }
        }

        /// A child that exited unreaped is a zombie again, with its status, for its parent to reap.
        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func zombiesAreRecreatedWithTheirStatus() throws {
            try Self.asSubreaper {
                let directory = try RestartTests.scratch("tree-zombie")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store = directory + "/store"
                let script = """
                    import os, signal, sys, time
                    a = os.fork()
                    if a == 0: os._exit(3)
                    b = os.fork()
                    if b == 0:
                        os.kill(os.getpid(), signal.SIGKILL)
                    for z in (a, b):
                        while open('/proc/%d/stat' % z).read().split(') ')[1][0] != 'Z': time.sleep(0.01)
                    print('ready', a, b, flush=True)
                    sys.stdin.readline()
                    _, sa = os.waitpid(a, 0)
                    _, sb = os.waitpid(b, 0)
                    print(os.WEXITSTATUS(sa), os.WTERMSIG(sb), flush=True)
                    """
                let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script])
                let zombies = Self.ids(try original.line())
                try RestartTests.checkpoint(original.pid, store: store, name: "zombie")
                Self.killTree([original.pid] + zombies)
                let restarted = try RestartTests.restart(store: store, name: "zombie", generation: 0)
                #expect(try restarted.send("go") == "3 \(SIGKILL)")
                #expect(try restarted.child.wait() == .exited(0))
            }
        }

        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aStoppedChildIsRestartedStopped() throws {
            try Self.asSubreaper {
                let directory = try RestartTests.scratch("tree-stopped")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store = directory + "/store"
                let script = """
                    import os, signal, sys
                    c = os.fork()
                    if c == 0:
                        os.kill(os.getpid(), signal.SIGSTOP)
                        os._exit(5)
                    os.waitpid(c, os.WUNTRACED)
                    print('ready', c, flush=True)
                    sys.stdin.readline()
                    os.kill(c, signal.SIGCONT)
                    _, status = os.waitpid(c, 0)
                    print('exited', os.WEXITSTATUS(status), flush=True)
                    """
                let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script])
                let child = Self.ids(try original.line())[0]
                try RestartTests.checkpoint(original.pid, store: store, name: "stopped")
                #expect(try ProcFS.state(child) == "T")  // the checkpoint left it stopped
                Self.killTree([original.pid, child])
                let restarted = try RestartTests.restart(store: store, name: "stopped", generation: 0)
                // ld-chpox is still rebuilding the tree for a while (a second on a busy machine:
                // "t", traced, or not there yet): ten seconds for it to be let go, stopped.
                var state: Character = "?"
                for _ in 0..<5000 {
                    state = (try? ProcFS.state(child)) ?? "?"
                    if state == "T" { break }
                    usleep(2000)
                }
                #expect(state == "T")
                #expect(try restarted.send("go") == "exited 5")
            }
        }
    }
}
