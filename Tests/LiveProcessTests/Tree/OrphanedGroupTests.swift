#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// A process group outlives its leader while other processes are in it. A restart makes such
    /// a group again with a keeper process that has the leader's pid, puts the group's live
    /// processes and zombies in it, then ends and is reaped: the group lives on without a leader,
    /// as it did. A group whose leader lives outside the checkpointed tree is refused.
    @Suite struct OrphanedGroupTests {
        static let hasPython = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// Root leads a session and is a child subreaper. Its child `leader` makes a process
        /// group, forks into it a member (which forks a child of its own) and a child that
        /// exits with 4, then exits itself: root reaps it, and takes the member and the zombie
        /// as its own children. Told to go on, root prints the group of the member, of the
        /// member's child and of the zombie, the member's session, then the zombie's exit code
        /// (having said it runs first).
        static let program = """
            import ctypes, os, signal, sys, time
            libc = ctypes.CDLL(None, use_errno=True)
            os.setsid()
            libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
            r, w = os.pipe()
            leader = os.fork()
            if leader == 0:
                os.setpgid(0, 0)
                member = os.fork()
                if member == 0:
                    if os.fork() == 0:
                        time.sleep(1000); os._exit(0)
                    time.sleep(1000); os._exit(0)
                zombie = os.fork()
                if zombie == 0:
                    os._exit(4)
                while open('/proc/%d/stat' % zombie).read().split(') ')[1][0] != 'Z': time.sleep(0.01)
                os.write(w, ('%d %d\\n' % (member, zombie)).encode())
                os._exit(0)
            member, zombie = map(int, os.read(r, 100).split())
            os.waitpid(leader, 0)
            inner = []
            while not inner:
                inner = open('/proc/%d/task/%d/children' % (member, member)).read().split()
                time.sleep(0.01)
            while str(zombie) not in open('/proc/%d/task/%d/children' % (os.getpid(), os.getpid())).read().split():
                time.sleep(0.01)
            print('ready', leader, member, inner[0], zombie, flush=True)
            sys.stdin.readline()
            print('running', flush=True)
            sys.stdin.readline()
            groups = [os.getpgid(member), os.getpgid(int(inner[0])), os.getpgid(zombie), os.getsid(member)]
            os.kill(int(inner[0]), signal.SIGKILL)
            os.kill(member, signal.SIGKILL)
            os.waitpid(member, 0)
            _, status = os.waitpid(zombie, 0)
            print(*groups, os.WEXITSTATUS(status), flush=True)
            """

        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aGroupWhoseLeaderExitedIsMadeAgainForItsMembersAndZombies() throws {
            try ProcessTreeTests.asSubreaper {
                let directory = try RestartTests.scratch("tree-orphaned-group")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store = directory + "/store"
                let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.program])
                let ids = ProcessTreeTests.ids(try original.line())
                let (root, leader, member, inner, zombie) = (original.pid, ids[0], ids[1], ids[2], ids[3])
                #expect((try? ProcFS.stat(leader)) == nil)  // gone, its group lives on
                #expect(try ProcFS.stat(member).processGroup == leader)
                #expect(try ProcFS.stat(zombie).processGroup == leader)
                try RestartTests.checkpoint(root, store: store, name: "group")
                ProcessTreeTests.killTree([root, member, inner, zombie])

                let restarted = try RestartTests.restart(store: store, name: "group", generation: 0)
                // Once the tree runs (root answers), checked through /proc: the group is back, led
                // by no one (the keeper that had the leader's pid was reaped), with every member.
                #expect(try restarted.send("running?") == "running")
                #expect(try ProcFS.stat(member).processGroup == leader)
                #expect(try ProcFS.stat(member).session == root)
                #expect(try ProcFS.stat(inner).processGroup == leader)
                #expect(try ProcFS.stat(zombie).processGroup == leader)
                #expect(try ProcFS.state(zombie) == "Z")
                #expect((try? ProcFS.stat(leader)) == nil)
                #expect(try restarted.send("go") == "\(leader) \(leader) \(leader) \(root) 4")
                #expect(try restarted.child.wait() == .exited(0))
            }
        }

        /// A member whose group's leader runs outside the checkpointed tree: its group cannot be
        /// made again (the leader's pid is another process's), so the checkpoint refuses it.
        @Test(.enabled(if: hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aGroupWhoseLeaderIsOutsideTheTreeIsRefused() throws {
            try ProcessTreeTests.asSubreaper {
                let directory = try RestartTests.scratch("tree-outside-group")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let outside = try WorkloadProcess(
                    executable: "/usr/bin/python3",
                    arguments: [
                        "-c", "import os, sys\nos.setpgid(0, 0)\nprint('ready', flush=True)\nsys.stdin.readline()",
                    ])
                defer { RestartTests.end(outside) }
                #expect(try outside.line() == "ready")
                let script = """
                    import os, sys, time
                    os.setpgid(0, 0)
                    r, w = os.pipe()
                    c = os.fork()
                    if c == 0:
                        os.setpgid(0, int(sys.argv[1]))
                        os.write(w, b'j')
                        time.sleep(1000); os._exit(0)
                    os.read(r, 1)
                    print('ready', c, flush=True)
                    sys.stdin.readline()
                    """
                let original = try WorkloadProcess(
                    executable: "/usr/bin/python3", arguments: ["-c", script, "\(outside.pid)"])
                let child = ProcessTreeTests.ids(try original.line())[0]
                let run = try TestTools.run("cpx", ["--store", directory + "/store", "\(original.pid)"])
                #expect(run.status == 1)
                #expect(
                    run.errors.contains(
                        "process \(child) is in process group \(outside.pid), whose leader \(outside.pid) is not one of "
                            + "the checkpointed processes"), "\(run.errors)")
                #expect((try? ProcFS.state(original.pid)) != nil)
                ProcessTreeTests.killTree([original.pid, child])
            }
        }
    }
}
