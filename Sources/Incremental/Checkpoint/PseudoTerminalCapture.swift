#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// Reads the Unix98 pseudo-terminals a process holds (/dev/ptmx masters, /dev/pts/N slaves)
/// through copies of its descriptors (pidfd_getfd(2)), leaving them as they were: the pair's
/// number, the slave's line settings and window size, the lock, packet and exclusive modes, the
/// slave's owner and permissions, and the session it is the controlling terminal of.
///
/// Refused: bytes queued in either direction (a restart cannot put them back as the line
/// discipline had them: echoed, edited, in packet mode), a slave never opened (what the master
/// wrote to it cannot be counted without opening it, which would change the pair), a slave
/// locked again after it was opened, a master of another devpts instance. A slave whose master
/// no process of the tree holds is another program's terminal (the user's): not one of these
/// (nil), unless its master was closed (hung up), which a restart makes again.
///
/// What FIONREAD cannot see is not seen: a canonical-mode line not ended yet (no newline) is
/// not counted by it, nor bytes still in the tty's flip buffer not yet handed to the line
/// discipline (a few microseconds after a write, the tree being frozen).
enum PseudoTerminalCapture {
    enum Outcome {
        case master(ProcessImage.Descriptor.PseudoTerminal)
        case slave(ProcessImage.Descriptor.PseudoTerminal)
        case refused(String)
    }

    /// The Unix98 pty major numbers: 136 to 143 (UNIX98_PTY_MAJOR_COUNT 8).
    static let slaveMajors: ClosedRange<UInt32> = 136...143

    /// N of a /proc link "/dev/pts/N" (or "/dev/pts/N (deleted)", a slave hung up by its master's
    /// close); nil for anything else.
    static func slaveIndex(_ target: String) -> Int32? {
        guard target.hasPrefix("/dev/pts/") else { return nil }
        var name = target.dropFirst("/dev/pts/".count)
        if name.hasSuffix(" (deleted)") { name = name.dropLast(" (deleted)".count) }
        guard !name.isEmpty, name.allSatisfy(\.isNumber) else { return nil }
        return Int32(name)
    }

    static func isMaster(_ target: String) -> Bool {
        target == "/dev/ptmx" || target == "/dev/pts/ptmx" || target.hasSuffix("/ptmx")
    }

    /// The pty number of a master descriptor (its fdinfo's tty-index).
    static func masterIndex(_ pid: Int32, _ fd: Int32) -> Int32? {
        (try? ProcFS.descriptorInfo(pid, fd))?["tty-index"].flatMap { Int32($0) }
    }

    /// The pty number a /proc/PID/stat tty_nr names, nil when it is no Unix98 pty slave.
    static func controllingIndex(_ ttyNumber: UInt32) -> Int32? {
        let major = (ttyNumber >> 8) & 0xfff
        let minor = (ttyNumber & 0xff) | ((ttyNumber >> 12) & 0xfff00)
        guard slaveMajors.contains(major) else { return nil }
        return Int32((major - slaveMajors.lowerBound) * 256 + minor)
    }

    /// nil when `target` is neither a pty master nor a slave of one the tree (`processes`, `pid`
    /// among them) holds or that was hung up.
    static func capture(_ pid: Int32, _ fd: Int32, target: String, processes: [Int32]) -> Outcome? {
        if isMaster(target) {
            guard target == "/dev/ptmx" || target == "/dev/pts/ptmx" else {
                return .refused("a pseudo-terminal master of another devpts instance: not recreated")
            }
            guard let index = masterIndex(pid, fd) else { return .refused("its pty number is not in fdinfo") }
            guard let flags = (try? ProcFS.descriptorInfo(pid, fd))?["flags"].flatMap({ Int32($0, radix: 8) }),
                flags & O_ACCMODE == O_RDWR
            else { return .refused("a pseudo-terminal master not open read-write: /dev/ptmx is reopened read-write") }
            return master(pid, fd, index: index, processes: processes)
        }
        guard let index = slaveIndex(target) else { return nil }
        if holders(of: index, processes: processes, master: true).first != nil {
            return .slave(.init(index: index))
        }
        // No master in the tree: a hung-up slave (its master closed) is made again; another
        // program's terminal is left to what a terminal becomes at restart.
        guard let copy = try? ProcessDescriptor.open(pid).copyAndClose(fd) else { return nil }
        defer { copy.close() }
        guard (try? copy.hungUp()) == true else { return nil }
        do {
            _ = try copy.terminalAttributes()
            return nil
        } catch {
            return error.rawValue == EIO ? .slave(.init(index: index, hungUp: true)) : nil
        }
    }

    /// The descriptors (process, fd) of the tree's processes on master (or slave) `index`.
    static func holders(of index: Int32, processes: [Int32], master: Bool) -> [(pid: Int32, fd: Int32)] {
        var found: [(pid: Int32, fd: Int32)] = []
        for pid in processes {
            for fd in (try? ProcFS.descriptors(pid)) ?? [] {
                guard let target = ProcFS.descriptorTarget(pid, fd) else { continue }
                if master {
                    if target == "/dev/ptmx" || target == "/dev/pts/ptmx", masterIndex(pid, fd) == index {
                        found.append((pid, fd))
                    }
                } else if target == "/dev/pts/\(index)" {
                    found.append((pid, fd))
                }
            }
        }
        return found
    }

    private static func master(_ pid: Int32, _ fd: Int32, index: Int32, processes: [Int32]) -> Outcome {
        let copy: FileDescriptor
        do {
            copy = try ProcessDescriptor.open(pid).copyAndClose(fd)
        } catch {
            return .refused("pidfd_getfd cannot copy it to read it (\(error))")
        }
        defer { copy.close() }
        let name = "/dev/pts/\(index)"
        do throws(Errno) {
            guard try copy.ptyNumber() == index else { return .refused("its pty number changed while read") }
            let discipline = try copy.lineDiscipline()
            guard discipline == 0 else {
                return .refused("the line discipline of the master is \(discipline), not N_TTY: not restored")
            }
            let attributes = try copy.terminalAttributes()
            let window = try copy.windowSize()
            let locked = try copy.ptyLocked()
            let packet = try copy.packetMode()
            let masterExclusive = try copy.exclusiveMode()
            let session = try copy.terminalSession()
            let group = try copy.foregroundGroup()
            let towardMaster = try copy.bytesQueued()
            guard towardMaster == 0 else {
                return .refused(
                    "\(towardMaster) bytes the slave \(name) wrote wait in its master: queued terminal data is not "
                        + "restored (a restart cannot put it back as the line discipline had it)")
            }
            // A descriptor of the slave: one the tree holds, else one opened from the master
            // where the slave was opened and closed again (it is closed again, leaving the
            // pair as it was); a slave never opened is not opened here.
            let slave: FileDescriptor
            let held = holders(of: index, processes: processes, master: false)
            var slaveClosed = false
            if let holder = held.first {
                slave = try ProcessDescriptor.open(holder.pid).copyAndClose(holder.fd)
            } else if try copy.hungUp() {
                slaveClosed = true
                slave = try copy.openPtyPeer(O_RDONLY | O_NONBLOCK | O_CLOEXEC)
            } else {
                return .refused(
                    "no checkpointed process holds its slave \(name), which is open outside the checkpoint or was "
                        + "never opened: what waits in it cannot be counted without opening it, which would change "
                        + "the pair")
            }
            defer { slave.close() }
            if locked && (!held.isEmpty || session != nil) {
                return .refused(
                    "its slave \(name) is open or a controlling terminal but locked again (TIOCSPTLCK): not restored")
            }
            let slaveDiscipline = try slave.lineDiscipline()
            guard slaveDiscipline == 0 else {
                return .refused(
                    "the line discipline of its slave \(name) is \(slaveDiscipline), not N_TTY: not restored")
            }
            let towardSlave = try slave.bytesQueued()
            guard towardSlave == 0 else {
                return .refused(
                    "\(towardSlave) bytes written to the master wait in its slave \(name): queued terminal data is "
                        + "not restored (a restart cannot put it back as the line discipline had it)")
            }
            let status = try slave.status()
            let state = ProcessImage.Descriptor.PseudoTerminal.State(
                flags: [attributes.inputFlags, attributes.outputFlags, attributes.controlFlags, attributes.localFlags],
                line: attributes.line, controlCharacters: attributes.controlCharacters,
                speeds: [attributes.inputSpeed, attributes.outputSpeed], window: window, locked: locked,
                packet: packet, masterExclusive: masterExclusive, slaveExclusive: try slave.exclusiveMode(),
                slaveClosed: slaveClosed, owner: status.owner, group: status.group,
                permissions: status.permissions, session: session, foregroundGroup: group == 0 ? nil : group)
            return .master(.init(index: index, state: state))
        } catch {
            return .refused("its state cannot be read (\(error))")
        }
    }
}

extension ProcessDescriptor {
    /// A copy of the process's descriptor `remote`, this pidfd closed.
    fileprivate func copyAndClose(_ remote: Int32) throws(Errno) -> FileDescriptor {
        defer { close() }
        return try copyDescriptor(remote)
    }
}
