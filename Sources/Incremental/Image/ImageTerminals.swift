import Foundation

/// Unix98 pseudo-terminals a restart makes again (`PseudoTerminalCapture` records them,
/// `PseudoTerminalPhase` makes them): a pair whose master a process of the tree holds, with the
/// slave's number, line settings, window size, lock, packet and exclusive modes, owner and
/// permissions, and the session it is the controlling terminal of; or slaves whose master was
/// closed (hung up). Nothing was queued in either direction (refused otherwise).
extension ProcessImage.Descriptor {
    /// A descriptor of the master (`kind` pty-master: the whole pair's state) or of a slave
    /// (`kind` pty-slave: its number; the state is on the master's descriptors).
    public struct PseudoTerminal: Codable, Sendable, Equatable {
        /// N of /dev/pts/N, given again at restart.
        public var index: Int32
        /// A slave whose master was closed: made, then hung up by closing its master.
        public var hungUp: Bool? = nil
        /// The pair's state, on a master's descriptors.
        public var state: State? = nil
        /// A descriptor of /dev/tty: the slave as the process's controlling terminal, opened
        /// again by that name once it is that again.
        public var controlling: Bool? = nil

        enum CodingKeys: String, CodingKey { case index, hungUp, state, controlling }

        public init(index: Int32, hungUp: Bool? = nil, state: State? = nil, controlling: Bool? = nil) {
            (self.index, self.hungUp, self.state, self.controlling) = (index, hungUp, state, controlling)
        }

        public struct State: Codable, Sendable, Equatable {
            /// The slave's termios2: c_iflag, c_oflag, c_cflag, c_lflag.
            public var flags: [UInt32]
            /// c_line.
            public var line: UInt8
            /// c_cc, the kernel's 19 control characters.
            public var controlCharacters: [UInt8]
            /// c_ispeed, c_ospeed.
            public var speeds: [UInt32]
            /// Rows, columns, x and y pixels (TIOCGWINSZ).
            public var window: [UInt16]
            /// The slave is locked (TIOCGPTLCK): no open of it succeeds.
            public var locked: Bool
            /// Packet mode (TIOCPKT) on the master.
            public var packet: Bool
            /// Exclusive mode (TIOCEXCL) of the master and of the slave.
            public var masterExclusive: Bool
            public var slaveExclusive: Bool
            /// The slave was opened and every descriptor of it closed since (the master reads
            /// EIO, poll reports a hang-up). A slave never opened is refused at capture.
            public var slaveClosed: Bool
            /// /dev/pts/N's owner, group and permission bits.
            public var owner: UInt32
            public var group: UInt32
            public var permissions: UInt32
            /// The session (its leader's pid) the slave is the controlling terminal of, and its
            /// foreground process group; nil when it is nobody's.
            public var session: Int32?
            public var foregroundGroup: Int32?

            enum CodingKeys: String, CodingKey {
                case flags, line, controlCharacters, speeds, window, locked, packet, masterExclusive,
                    slaveExclusive, slaveClosed, owner, group, permissions, session, foregroundGroup
            }

            public init(
                flags: [UInt32], line: UInt8, controlCharacters: [UInt8], speeds: [UInt32], window: [UInt16],
                locked: Bool, packet: Bool, masterExclusive: Bool, slaveExclusive: Bool, slaveClosed: Bool,
                owner: UInt32, group: UInt32, permissions: UInt32, session: Int32?,
                foregroundGroup: Int32?
            ) {
                (self.flags, self.line, self.controlCharacters, self.speeds) = (flags, line, controlCharacters, speeds)
                (self.window, self.locked, self.packet) = (window, locked, packet)
                (self.masterExclusive, self.slaveExclusive) = (masterExclusive, slaveExclusive)
                self.slaveClosed = slaveClosed
                (self.owner, self.group, self.permissions) = (owner, group, permissions)
                (self.session, self.foregroundGroup) = (session, foregroundGroup)
            }
        }
    }
}
