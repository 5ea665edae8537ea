import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// Pseudo-terminals (a /dev/ptmx master and its /dev/pts/N slave) come back with their
    /// number, line settings and window size, and carry data both ways again; one with data
    /// queued is refused with its reason. (zdtm pty*, tty* cover controlling terminals, hung-up
    /// slaves and ptys shared by several processes.)
    @Suite struct PseudoTerminalTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
        static let ptys = FileManager.default.fileExists(atPath: "/dev/ptmx")

        /// Opens a pair, turns echo off, sets other speeds and an interrupt character, a window
        /// size, and holds the slave at a second number. Told "go", it reports what it reads of
        /// them, writes to the master and reads it from the slave, and back.
        static let program = """
            import fcntl, os, struct, sys, termios
            master, slave = os.openpty()
            attributes = termios.tcgetattr(slave)
            attributes[3] &= ~termios.ECHO
            attributes[4] = attributes[5] = termios.B9600
            attributes[6][termios.VINTR] = b"\\x07"
            termios.tcsetattr(slave, termios.TCSANOW, attributes)
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("4H", 33, 101, 7, 9))
            second = os.dup(slave)
            print("ready", flush=True)
            for line in sys.stdin:
                a = termios.tcgetattr(slave)
                size = struct.unpack("4H", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\\0" * 8))
                os.write(master, b"ping\\n")
                got = os.read(slave, 100)
                os.write(second, b"pong\\n")
                back = os.read(master, 100)
                print(os.ttyname(slave), os.ttyname(second), a[0], a[1], a[2], a[3], a[4], a[5], a[6][termios.VINTR],
                      "%dx%d/%dx%d" % size, got, back, flush=True)
            """

        @Test(.enabled(if: python && ptys, "needs python3 and /dev/ptmx"), .timeLimit(.minutes(2)))
        func aPairComesBackWithItsNumberAndSettings() throws {
            let directory = try RestartTests.scratch("pty")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.program])
            #expect(try original.line() == "ready")
            let before = try original.send("go")
            // What the program set, as it read it: not the defaults.
            #expect(before.contains("33x101/7x9"), "\(before)")
            #expect(before.contains("b'\\x07'"), "\(before)")
            #expect(before.contains("b'ping\\n' b'pong\\r\\n'"), "\(before)")
            try RestartTests.checkpoint(original.pid, store: store, name: "pty")
            try RestartTests.checkpoint(original.pid, store: store, name: "pty")
            let shown = try TestTools.run("dumpinfo", ["--store", store, "--generation", "1"])
            #expect(shown.status == 0, "\(shown.errors)")
            // The checkpoint read the pair without changing it.
            #expect(try original.send("go") == before)
            RestartTests.end(original)

            for generation in [1, 0] {
                let restarted = try RestartTests.restart(store: store, name: "pty", generation: generation)
                #expect(try restarted.send("go") == before, "generation \(generation)")
                RestartTests.end(restarted)
            }
        }

        /// A session leader's controlling terminal, a pty it holds, comes back as that: the
        /// same slave, its foreground group, /dev/tty opened through it.
        static let controllingProgram = """
            import fcntl, os, struct, sys
            os.setsid()
            master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
            fcntl.ioctl(master, 0x40045431, struct.pack("i", 0))  # TIOCSPTLCK: unlock
            number = struct.unpack("I", fcntl.ioctl(master, 0x80045430, b"\\0" * 4))[0]  # TIOCGPTN
            slave = os.open("/dev/pts/%d" % number, os.O_RDWR)  # no O_NOCTTY: its controlling terminal
            tty = os.open("/dev/tty", os.O_RDWR)
            print("ready", flush=True)
            for line in sys.stdin:
                stat = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
                os.write(master, b"hi\\n")
                got = os.read(tty, 100)
                echo = os.read(master, 100)  # the line discipline echoed it: read, nothing stays queued
                print(os.ttyname(slave), int(stat[4]) == os.stat(slave).st_rdev, os.getsid(0) == os.getpid(),
                      os.tcgetpgrp(tty) == os.getpgrp(), got, echo, flush=True)
            """

        @Test(.enabled(if: python && ptys, "needs python3 and /dev/ptmx"), .timeLimit(.minutes(2)))
        func aControllingTerminalComesBack() throws {
            let directory = try RestartTests.scratch("pty-ctty")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", Self.controllingProgram])
            #expect(try original.line() == "ready")
            let before = try original.send("go")
            #expect(before.hasSuffix(" True True True b'hi\\n' b'hi\\r\\n'"), "\(before)")
            try RestartTests.checkpoint(original.pid, store: store, name: "ctty")
            RestartTests.end(original)
            let restarted = try RestartTests.restart(store: store, name: "ctty", generation: 0)
            #expect(try restarted.send("go") == before)
            RestartTests.end(restarted)
        }

        /// Bytes written to the master and not read from the slave (and their echo, waiting in
        /// the master) are refused: a restart cannot put them back as the line discipline had them.
        @Test(.enabled(if: python && ptys, "needs python3 and /dev/ptmx"), .timeLimit(.minutes(2)))
        func queuedDataIsRefused() throws {
            let directory = try RestartTests.scratch("pty-queued")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let program = """
                import os, sys
                master, slave = os.openpty()
                os.write(master, b"typed\\n")
                print("ready", master, flush=True)
                sys.stdin.readline()
                """
            let target = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", program])
            let ready = try target.line().split(separator: " ")
            #expect(ready.count == 2)
            let run = try TestTools.run("cpx", ["--store", directory + "/store", "--name", "queued", "\(target.pid)"])
            #expect(run.status != 0)
            let master = ready.count == 2 ? String(ready[1]) : "?"
            #expect(run.errors.contains("fd \(master): /dev/ptmx: "), "\(run.errors)")
            #expect(run.errors.contains("queued terminal data is not restored"), "\(run.errors)")
            RestartTests.end(target)
        }
    }
}
