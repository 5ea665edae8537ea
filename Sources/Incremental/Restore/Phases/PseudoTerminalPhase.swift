#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall
import Tracee

/// The process's pseudo-terminal descriptors. The pairs it makes (`PseudoTerminalLayout`) are
/// made with their numbers: /dev/ptmx opened until devpts hands out N (it gives the lowest free
/// number; the lower ones opened meanwhile are closed again), refused where N is taken. ld-chpox
/// gives the pair its recorded state through a copy of the master (pidfd_getfd): the slave's
/// line settings (read back: a restart with other settings is refused), window size, packet and
/// exclusive modes, owner and permissions, then the lock. The master and a slave are kept open
/// for the tree's other processes until `SharedDescriptorPhase`. Then its own descriptors: the
/// master taken from its maker, each slave opened again from the kept one with its flags. Before
/// them, a session leader whose controlling terminal it was makes it that again (TIOCSCTTY) and
/// sets its foreground process group: its /dev/tty descriptors are then opened by that name.
public struct PseudoTerminalPhase: RestartPhase {
    public struct Entry: Sendable, Equatable {
        public var fd: Int32
        public var closeOnExec: Bool
        public var index: Int32
        public var master: Bool
        /// Open flags (access mode and status flags), O_CLOEXEC left out.
        public var flags: Int32
        /// A lower descriptor of the same open file, dup'ed.
        public var duplicateOf: Int32?
        /// /dev/tty, opened by that name once the pty is its controlling terminal again.
        public var controlling: Bool

        public init(
            fd: Int32, closeOnExec: Bool, index: Int32, master: Bool, flags: Int32, duplicateOf: Int32?,
            controlling: Bool = false
        ) {
            (self.fd, self.closeOnExec, self.index, self.master) = (fd, closeOnExec, index, master)
            (self.flags, self.duplicateOf, self.controlling) = (flags, duplicateOf, controlling)
        }
    }

    public var made: [PseudoTerminalLayout.Pair]
    public var entries: [Entry]
    /// The pair it makes its controlling terminal again, with its foreground process group.
    public var controlling: (index: Int32, foregroundGroup: Int32?)?

    public var name: String { "pseudo-terminals" }
    public var steps: [String] {
        made.map { pair in
            "make pty /dev/pts/\(pair.index)"
                + (pair.hungUp
                    ? ", its master closed once its slaves are open (hung up)"
                    : pair.state.map { state in
                        " (\(state.window[safe: 0] ?? 0)x\(state.window[safe: 1] ?? 0)"
                            + (state.locked ? ", locked" : "") + (state.packet ? ", packet mode" : "")
                            + (state.slaveClosed ? ", slave closed again" : "") + ")"
                    } ?? "")
        }
            + (controlling.map { control in
                [
                    "make /dev/pts/\(control.index) its controlling terminal"
                        + (control.foregroundGroup.map { ", foreground process group \($0)" } ?? "")
                ]
            } ?? [])
            + entries.map { entry in
                "fd \(entry.fd): "
                    + (entry.duplicateOf.map { "a duplicate of fd \($0)" }
                        ?? (entry.master
                            ? "the master of /dev/pts/\(entry.index)"
                            : entry.controlling
                                ? "/dev/tty (/dev/pts/\(entry.index))" : "/dev/pts/\(entry.index)"))
                    + (entry.closeOnExec ? " (close-on-exec)" : "")
            }
    }

    public init(image: ProcessImage, layout: TreeLayout? = nil) {
        let terminals = layout?.terminals ?? PseudoTerminalLayout([image])
        made = terminals.made(by: image.pid)
        entries = image.descriptors.sorted { $0.fd < $1.fd }.compactMap { descriptor in
            guard descriptor.kind == .ptyMaster || descriptor.kind == .ptySlave, let pty = descriptor.pty else {
                return nil
            }
            return Entry(
                fd: descriptor.fd, closeOnExec: descriptor.flags & O_CLOEXEC != 0, index: pty.index,
                master: descriptor.kind == .ptyMaster,
                flags: descriptor.flags & ~(O_CREAT | O_TRUNC | O_EXCL | O_CLOEXEC),
                duplicateOf: descriptor.duplicateOf, controlling: pty.controlling == true)
        }
        controlling =
            terminals.order.lazy.compactMap { index in
                terminals.pairs[index].flatMap { pair in
                    pair.state?.session == image.pid ? (index, pair.state?.foregroundGroup) : nil
                }
            }.first
    }

    public func run(in session: RestartSession) throws {
        let calls = session.calls
        for pair in made {
            let (master, slave) = try make(pair, session)
            session.tree.ptyHolders[pair.index] = (session.pid, master, slave)
        }
        if let controlling {
            let what = "make /dev/pts/\(controlling.index) its controlling terminal"
            let slave = try openSlave(controlling.index, flags: O_RDWR | O_NOCTTY, session, what)
            defer { _ = try? calls.result(of: .close, slave) }
            try calls.call(.ioctl, slave, TIOCSCTTY, 0, to: what)
            if let group = controlling.foregroundGroup {
                let inner = try session.tree.inner(group)
                try calls.withFrame { () throws(TraceeError) in
                    try calls.call(
                        .ioctl, slave, TIOCSPGRP, try calls.value(inner),
                        to: "make process group \(group) the foreground group of /dev/pts/\(controlling.index)")
                }
            }
        }
        for entry in entries {
            let what =
                "set up descriptor \(entry.fd) as " + (entry.master ? "the master of " : "") + "/dev/pts/\(entry.index)"
            let cloexec = entry.closeOnExec ? O_CLOEXEC : 0
            let opened: Int32
            if let source = entry.duplicateOf {
                opened = Int32(try calls.call(.fcntl, source, F_DUPFD_CLOEXEC, 0, to: what))
            } else if entry.controlling {
                opened = Int32(
                    try calls.withFrame { () throws(TraceeError) in
                        try calls.call(
                            .openat, AT_FDCWD, try calls.string("/dev/tty"), entry.flags | O_CLOEXEC, 0, to: what)
                    })
            } else if entry.master {
                opened = try takeMaster(entry.index, session, what)
            } else {
                opened = try openSlave(entry.index, flags: entry.flags | O_NOCTTY, session, what)
            }
            if opened != entry.fd {
                try calls.call(.dup3, opened, entry.fd, cloexec, to: what)
                _ = try calls.result(of: .close, opened)
            } else {
                try calls.call(.fcntl, entry.fd, F_SETFD, cloexec != 0 ? FD_CLOEXEC : 0, to: what)
            }
            if entry.duplicateOf == nil {
                try calls.call(.fcntl, entry.fd, F_SETFL, entry.flags & DescriptorPhase.statusFlags, to: what)
            }
        }
    }

    /// Makes `pair` in the stub: its master and (for the others, and for a slave closed again)
    /// one slave, kept above the image's descriptors.
    private func make(_ pair: PseudoTerminalLayout.Pair, _ session: RestartSession) throws -> (Int32, Int32) {
        let calls = session.calls
        let what = "make pseudo-terminal /dev/pts/\(pair.index)"
        var lower: [Int32] = []
        defer { for fd in lower { _ = try? calls.result(of: .close, fd) } }
        var master: Int32 = -1
        while master < 0 {
            let opened = Int32(
                try calls.withFrame { () throws(TraceeError) in
                    try calls.call(
                        .openat, AT_FDCWD, try calls.string("/dev/ptmx"), O_RDWR | O_NOCTTY | O_CLOEXEC, 0, to: what)
                })
            let number = try calls.withFrame { () throws(TraceeError) in
                let slot = try calls.reserve(8)
                try calls.call(.ioctl, opened, CHPOX_TIOCGPTN, slot, to: what)
                return Int32(truncatingIfNeeded: try calls.words(at: slot, count: 1)[0])
            }
            if number == pair.index {
                master = Int32(try calls.call(.fcntl, opened, F_DUPFD_CLOEXEC, DescriptorPhase.holderBase, to: what))
                _ = try calls.result(of: .close, opened)
            } else if number < pair.index {
                lower.append(opened)
            } else {
                _ = try calls.result(of: .close, opened)
                throw TraceeError.unsupported(
                    pid: calls.pid,
                    reason: "\(what): /dev/pts/\(pair.index) is taken (devpts gave \(number) as the lowest free "
                        + "number above those opened); close the terminal that has it, or restart elsewhere")
            }
        }
        do {
            let local = try ProcessDescriptor.open(session.pid)
            defer { local.close() }
            let copy = try local.copyDescriptor(master)
            defer { copy.close() }
            if let state = pair.state {
                let attributes = FileDescriptor.TerminalAttributes(
                    inputFlags: state.flags[safe: 0] ?? 0, outputFlags: state.flags[safe: 1] ?? 0,
                    controlFlags: state.flags[safe: 2] ?? 0, localFlags: state.flags[safe: 3] ?? 0, line: state.line,
                    controlCharacters: state.controlCharacters, inputSpeed: state.speeds[safe: 0] ?? 0,
                    outputSpeed: state.speeds[safe: 1] ?? 0)
                try copy.setTerminalAttributes(attributes)
                guard try copy.terminalAttributes() == attributes else {
                    throw TraceeError.unsupported(
                        pid: calls.pid,
                        reason: "\(what): the kernel does not take its recorded line settings as they were")
                }
                try copy.setWindowSize(state.window)
                if state.packet { try copy.setPacketMode(true) }
                if state.masterExclusive { try copy.setExclusiveMode(true) }
            }
            try copy.setPtyLocked(false)
            let opened = try calls.call(
                .ioctl, master, CHPOX_TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC, to: "\(what): open its slave")
            let slave = Int32(try calls.call(.fcntl, opened, F_DUPFD_CLOEXEC, DescriptorPhase.holderBase, to: what))
            _ = try calls.result(of: .close, opened)
            if let state = pair.state {
                let slaveCopy = try local.copyDescriptor(slave)
                defer { slaveCopy.close() }
                let status = try slaveCopy.status()
                if status.owner != state.owner || status.group != state.group {
                    try slaveCopy.setOwner(user: state.owner, group: state.group)
                }
                if status.permissions != state.permissions { try slaveCopy.setPermissions(state.permissions) }
                if state.slaveExclusive { try slaveCopy.setExclusiveMode(true) }
                if state.locked { try copy.setPtyLocked(true) }
            }
            return (master, slave)
        } catch let error as TraceeError {
            throw error
        } catch let error as Errno {
            throw TraceeError.from(error, pid: calls.pid, "set the state of /dev/pts/\(pair.index) in")
        }
    }

    /// The master of pair `index`: a duplicate of the one this process keeps, or a copy of the
    /// maker's (pidfd_getfd), above the image's descriptors.
    private func takeMaster(_ index: Int32, _ session: RestartSession, _ what: String) throws -> Int32 {
        let calls = session.calls
        guard let holder = session.tree.ptyHolders[index] else {
            throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): /dev/pts/\(index) was not made")
        }
        if holder.pid == session.pid {
            return Int32(try calls.call(.fcntl, holder.master, F_DUPFD_CLOEXEC, DescriptorPhase.holderBase, to: what))
        }
        let opened = try calls.call(.pidfdOpen, session.tree.inner(outer: holder.pid), 0, to: what)
        let pidfd = try calls.call(.fcntl, opened, F_DUPFD_CLOEXEC, DescriptorPhase.holderBase, to: what)
        _ = try calls.result(of: .close, opened)
        defer { _ = try? calls.result(of: .close, pidfd) }
        return Int32(try calls.call(.pidfdGetfd, pidfd, holder.master, 0, to: what))
    }

    /// A new open file of pair `index`'s slave with `flags`, opened from the one its maker keeps.
    private func openSlave(_ index: Int32, flags: Int32, _ session: RestartSession, _ what: String) throws -> Int32 {
        guard let holder = session.tree.ptyHolders[index] else {
            throw TraceeError.unsupported(pid: session.pid, reason: "\(what): /dev/pts/\(index) was not made")
        }
        return try session.openOfTree("/proc/\(holder.pid)/fd/\(holder.slave)", flags: flags, to: what)
    }
}

extension Array {
    fileprivate subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
