#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// The state of a terminal and of a Unix98 pseudo-terminal pair (pty(7), ioctl_tty(2)), read
/// and set through a descriptor of the master (or of the slave where said). Requests made on the
/// master that concern the line (termios, window size) act on the slave's: the kernel keeps
/// them there.
extension FileDescriptor {
    /// A terminal's line settings, as the kernel's struct termios2 holds them.
    public struct TerminalAttributes: Sendable, Equatable {
        public var inputFlags: UInt32, outputFlags: UInt32, controlFlags: UInt32, localFlags: UInt32
        /// The line discipline number (c_line).
        public var line: UInt8
        /// The control characters (c_cc), the kernel's 19.
        public var controlCharacters: [UInt8]
        public var inputSpeed: UInt32, outputSpeed: UInt32

        public init(
            inputFlags: UInt32, outputFlags: UInt32, controlFlags: UInt32, localFlags: UInt32, line: UInt8,
            controlCharacters: [UInt8], inputSpeed: UInt32, outputSpeed: UInt32
        ) {
            (self.inputFlags, self.outputFlags, self.controlFlags, self.localFlags) = (
                inputFlags, outputFlags, controlFlags, localFlags
            )
            (self.line, self.controlCharacters, self.inputSpeed, self.outputSpeed) = (
                line, controlCharacters, inputSpeed, outputSpeed
            )
        }

        init(_ raw: chpox_termios2) {
            var characters = raw.c_cc
            let cc = withUnsafeBytes(of: &characters) { Array($0) }
            self.init(
                inputFlags: raw.c_iflag, outputFlags: raw.c_oflag, controlFlags: raw.c_cflag, localFlags: raw.c_lflag,
                line: raw.c_line, controlCharacters: cc, inputSpeed: raw.c_ispeed, outputSpeed: raw.c_ospeed)
        }

        var raw: chpox_termios2 {
            var raw = chpox_termios2()
            (raw.c_iflag, raw.c_oflag, raw.c_cflag, raw.c_lflag) = (inputFlags, outputFlags, controlFlags, localFlags)
            (raw.c_line, raw.c_ispeed, raw.c_ospeed) = (line, inputSpeed, outputSpeed)
            withUnsafeMutableBytes(of: &raw.c_cc) { bytes in
                for (k, value) in controlCharacters.prefix(bytes.count).enumerated() { bytes[k] = value }
            }
            return raw
        }
    }

    /// The terminal's line settings. The corresponding C constant is TCGETS2.
    public func terminalAttributes() throws(Errno) -> TerminalAttributes {
        var raw = chpox_termios2()
        _ = try control(CHPOX_TCGETS2, &raw)
        return TerminalAttributes(raw)
    }

    /// Sets the terminal's line settings at once (no drain, no flush). The corresponding C
    /// constant is TCSETS2.
    public func setTerminalAttributes(_ attributes: TerminalAttributes) throws(Errno) {
        var raw = attributes.raw
        _ = try control(CHPOX_TCSETS2, &raw)
    }

    /// The terminal's line discipline (0: N_TTY). The corresponding C constant is TIOCGETD.
    public func lineDiscipline() throws(Errno) -> Int32 {
        var discipline: Int32 = 0
        _ = try control(UInt(TIOCGETD), &discipline)
        return discipline
    }

    /// Rows, columns and pixel sizes. The corresponding C constant is TIOCGWINSZ.
    public func windowSize() throws(Errno) -> [UInt16] {
        var size = winsize()
        _ = try control(UInt(TIOCGWINSZ), &size)
        return [size.ws_row, size.ws_col, size.ws_xpixel, size.ws_ypixel]
    }

    /// Sets rows, columns and pixel sizes. The corresponding C constant is TIOCSWINSZ.
    public func setWindowSize(_ values: [UInt16]) throws(Errno) {
        guard values.count == 4 else { throw Errno(rawValue: EINVAL) }
        var size = winsize(ws_row: values[0], ws_col: values[1], ws_xpixel: values[2], ws_ypixel: values[3])
        _ = try control(UInt(TIOCSWINSZ), &size)
    }

    /// A master's pty number N (its slave is /dev/pts/N). The corresponding C constant is TIOCGPTN.
    public func ptyNumber() throws(Errno) -> Int32 {
        var number: UInt32 = 0
        _ = try control(CHPOX_TIOCGPTN, &number)
        return Int32(bitPattern: number)
    }

    /// Whether a master's slave is locked (no open of it succeeds). TIOCGPTLCK.
    public func ptyLocked() throws(Errno) -> Bool { try flag(CHPOX_TIOCGPTLCK) }

    /// Locks or unlocks a master's slave. The corresponding C constant is TIOCSPTLCK.
    public func setPtyLocked(_ locked: Bool) throws(Errno) {
        var value: Int32 = locked ? 1 : 0
        _ = try control(CHPOX_TIOCSPTLCK, &value)
    }

    /// Whether a master is in packet mode. The corresponding C constant is TIOCGPKT.
    public func packetMode() throws(Errno) -> Bool { try flag(CHPOX_TIOCGPKT) }

    /// Turns a master's packet mode on or off. The corresponding C constant is TIOCPKT.
    public func setPacketMode(_ on: Bool) throws(Errno) {
        var value: Int32 = on ? 1 : 0
        _ = try control(UInt(TIOCPKT), &value)
    }

    /// Whether this side of the terminal is in exclusive mode (only CAP_SYS_ADMIN opens it
    /// again). The corresponding C constant is TIOCGEXCL.
    public func exclusiveMode() throws(Errno) -> Bool { try flag(CHPOX_TIOCGEXCL) }

    /// Puts this side in exclusive mode or out of it. The corresponding C constants are
    /// TIOCEXCL and TIOCNXCL.
    public func setExclusiveMode(_ on: Bool) throws(Errno) {
        var unused: Int32 = 0
        _ = try control(UInt(on ? TIOCEXCL : TIOCNXCL), &unused)
    }

    /// The foreground process group of the slave (through its master: the slave answers only
    /// processes it is the controlling terminal of); 0 when none. TIOCGPGRP.
    public func foregroundGroup() throws(Errno) -> Int32 {
        var group: pid_t = 0
        _ = try control(UInt(TIOCGPGRP), &group)
        return group
    }

    /// The session the slave is the controlling terminal of (asked through its master); nil
    /// when it is nobody's. The corresponding C constant is TIOCGSID.
    public func terminalSession() throws(Errno) -> Int32? {
        var session: pid_t = 0
        do {
            _ = try control(UInt(TIOCGSID), &session)
        } catch  where error.rawValue == ENOTTY {
            return nil
        }
        return session
    }

    /// A new open file of a master's slave with `flags` (O_NOCTTY always added), not looked
    /// up by path. The corresponding C constant is TIOCGPTPEER (Linux 4.13).
    public func openPtyPeer(_ flags: Int32) throws(Errno) -> FileDescriptor {
        let fd = rawValue
        let opened = try retryingInterrupts {
            chpox_ioctl_value(fd, CHPOX_TIOCGPTPEER, UInt(bitPattern: Int(flags | O_NOCTTY)))
        }.get()
        return FileDescriptor(rawValue: opened)
    }

    /// Whether poll(2) reports a hang-up now, without waiting: a master whose slave was opened
    /// and closed again, a slave whose master is gone.
    public func hungUp() throws(Errno) -> Bool {
        var entry = pollfd(fd: rawValue, events: Int16(POLLIN), revents: 0)
        _ = try retryingInterrupts { poll(&entry, 1, 0) }.get()
        return entry.revents & Int16(POLLHUP) != 0
    }

    private func flag(_ request: UInt) throws(Errno) -> Bool {
        var value: Int32 = 0
        _ = try control(request, &value)
        return value != 0
    }
}
