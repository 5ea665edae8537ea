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
    /// Processes that share one descriptor table (clone(2) with CLONE_FILES) share one again
    /// after a restart: the table is made once, as recorded, and what one process opens or
    /// closes after the restart the other sees.
    @Suite struct SharedDescriptorTableTests {
        typealias Tree = ProcessTreeTests

        /// Root opens files (one with a duplicate sharing its offset, one O_APPEND|O_NONBLOCK and
        /// inheritable), then clones a child with CLONE_FILES. Root relays the test's commands
        /// to the child over a pipe of the table: "state" (the child prints, for each of those
        /// descriptors, its status flags, descriptor flags and offset, then every descriptor
        /// number of the table), "open" (root opens a new file, the child reads it by that
        /// number and closes it, root says whether it is closed for it too), "end".
        static let program = """
            import ctypes, fcntl, os, sys
            libc = ctypes.CDLL(None, use_errno=True)
            path = sys.argv[1]
            f = os.open(path + '/a', os.O_RDWR | os.O_CREAT, 0o600)
            os.write(f, b'hello world'); os.lseek(f, 6, 0)
            g = os.open(path + '/b', os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK, 0o600)
            os.write(g, b'xyz'); os.set_inheritable(g, True)
            os.dup2(f, 40)
            cmd_r, cmd_w = os.pipe(); ack_r, ack_w = os.pipe()
            def state():
                out = []
                for fd in (f, g, 40):
                    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                    out.append('%d:%x:%d:%d' % (fd, flags, fcntl.fcntl(fd, fcntl.F_GETFD),
                                                os.lseek(fd, 0, 1)))
                return ' '.join(out) + ' fds ' + ','.join(sorted(os.listdir('/proc/self/fd'), key=int))
            c = libc.syscall(56, 0x400 | 17, 0, 0, 0, 0)
            if c == 0:
                while True:
                    command = os.read(cmd_r, 100).decode().split()
                    if command[0] == 'state':
                        print('state', state(), flush=True)
                    elif command[0] == 'open':
                        n = int(command[1])
                        print('child', n, os.read(n, 3).decode(), flush=True)
                        os.close(n)
                    elif command[0] == 'end':
                        os._exit(0)
                    os.write(ack_w, b'a')
            print('ready', c, flush=True)
            for line in sys.stdin:
                command = line.split()
                if command[0] == 'state':
                    os.write(cmd_w, b'state'); os.read(ack_r, 1)
                    print('ok', flush=True)
                elif command[0] == 'open':
                    n = os.open(path + '/c', os.O_RDWR | os.O_CREAT, 0o600)
                    os.write(n, b'new'); os.lseek(n, 0, 0)
                    os.write(cmd_w, b'open %d' % n); os.read(ack_r, 1)
                    try:
                        os.fstat(n); closed = False
                    except OSError:
                        closed = True
                    print('closed', closed, flush=True)
                elif command[0] == 'end':
                    os.write(cmd_w, b'end')
                    _, status = os.waitpid(c, 0)
                    print('end', status, flush=True)
                    break
            """

        @Test(.enabled(if: Tree.hasPython, "python3 is not installed"), .timeLimit(.minutes(2)))
        func processesSharingADescriptorTableShareItAgain() throws {
            try Tree.asSubreaper {
                let directory = try RestartTests.scratch("tree-fdtable")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store = directory + "/store"
                let original = try WorkloadProcess(
                    executable: "/usr/bin/python3", arguments: ["-c", Self.program, directory])
                let child = Tree.ids(try original.line())[0]
                #expect(try ProcessDescriptor.share(.descriptorTable, original.pid, child))
                try original.write("state")
                let recorded = try original.line()
                #expect(recorded.hasPrefix("state "), "\(recorded)")
                #expect(try original.line() == "ok")
                try RestartTests.checkpoint(original.pid, store: store, name: "fdtable")
                let detail = try TestTools.run("ld-chpox", ["--store", store, "--name", "fdtable", "--plan"])
                #expect(detail.output.contains("sharing the descriptor table of \(original.pid)"), "\(detail.output)")
                Tree.killTree([original.pid, child])

                let restarted = try RestartTests.restart(store: store, name: "fdtable", generation: 0)
                // The one table, as recorded: the same numbers, flags and offsets.
                try restarted.write("state")
                let now = try restarted.line()
                #expect(now == recorded, "\(now) after \(recorded) before")
                #expect(try restarted.line() == "ok")
                #expect(try ProcessDescriptor.share(.descriptorTable, original.pid, child))
                // What root opens now the child reads by its number; what the child closes is
                // closed for root.
                try restarted.write("open")
                let opened = try restarted.line()
                #expect(opened.hasPrefix("child ") && opened.hasSuffix(" new"), "\(opened)")
                #expect(try restarted.line() == "closed True")
                #expect(try restarted.send("end") == "end 0")
                #expect(try restarted.child.wait() == .exited(0))
            }
        }
    }
}
