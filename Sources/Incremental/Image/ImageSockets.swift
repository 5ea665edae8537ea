import Foundation

/// UNIX sockets a restart can make again: the two ends of a connected pair (socketpair(2), or
/// two datagram sockets connected to each other), in one process or two of its tree, or one end
/// whose peer was closed; a socket connected to no other, bound to a name or not, listening or
/// not; a datagram socket connected to a named one of the tree. Each with what it had queued to
/// read. Recorded by `SocketCapture`, made again by `SocketPhase`.
extension ProcessImage {
    public struct UnixSocket: Codable, Sendable, Equatable {
        /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
        public enum SocketType: String, Codable, Sendable {
            case stream, datagram, seqpacket
        }

        /// The socket's inode (its /proc link reads socket:[inode]): the descriptors that show
        /// one inode share the socket.
        public var inode: UInt64
        public var type: SocketType
        /// The inode of the other end of the pair; 0 when the other end was closed, or when it
        /// is connected to none (`unconnected`). A datagram socket connected to another that is
        /// not connected back (`oneWay`) names that one.
        public var peer: UInt64
        /// Connected to no socket (socket(2), maybe bound, maybe listening).
        public var unconnected: Bool? = nil
        /// A datagram socket connected to `peer`, a named socket connected elsewhere or to none
        /// (or to itself): made again by connect(2) to its name.
        public var oneWay: Bool? = nil
        /// The address it is bound to, as sock_diag gives it: a path's bytes, or an abstract
        /// name (a NUL, then every byte of the name).
        public var name: Data? = nil
        /// The socket file a path name made: what `ls -l` showed of it, and whether it was
        /// unlinked since.
        public var file: BoundFile? = nil
        /// listen(2) was called on it, with this backlog (no connection waited to be accepted).
        public var listening: Bool? = nil
        public var backlog: Int32? = nil
        /// SO_REUSEADDR was set.
        public var reuseAddress: Bool? = nil
        /// The pid SO_PEERCRED names: the process that made the pair or called listen(2). A
        /// restart makes such a socket in that process.
        public var peerPid: Int32? = nil
        /// shutdown(2) on this end: no more reads (the kernel's RCV_SHUTDOWN), no more writes
        /// (SEND_SHUTDOWN). A stream's shutdown shows on both ends.
        public var readShutdown: Bool? = nil
        public var writeShutdown: Bool? = nil
        /// What this end will read, in order: each message of a datagram or seqpacket socket, a
        /// stream's bytes as one (in pieces where some carry descriptors: each such piece, one
        /// send's, apart). Recorded on the socket's first descriptor only (nil on the
        /// others).
        public var queue: [Data]? = nil
        /// SO_PEEK_OFF when the program set it (nil: -1, peeking at the head).
        public var peekOffset: Int32? = nil
        /// SO_PASSCRED was set.
        public var passCredentials: Bool? = nil
        /// SO_PASSSEC was set.
        public var passSecurity: Bool? = nil
        /// A stream or seqpacket end whose peer was closed with data unread in it: the peer's
        /// close left ECONNRESET pending here, what its next read after the queue returns.
        public var resetPending: Bool? = nil
        /// The effective uid and gid SO_PEERCRED names: those of the process when it made the
        /// pair (its pid is the process's own; another pid is refused).
        public var peerCredentials: [UInt32]? = nil
        /// SO_SNDBUF and SO_RCVBUF as getsockopt reads them, when the program changed them from
        /// a new socket's.
        public var sendBuffer: Int32? = nil
        public var receiveBuffer: Int32? = nil
        /// A stream or seqpacket end that accept(2) returned from this listening socket of the
        /// tree (it bears the listener's name): made again by connecting its peer to the
        /// listener and accepting.
        public var acceptedFrom: UInt64? = nil
        /// A listener's accept queue: the sockets of the tree connected to it and not accepted
        /// yet, in the order accept(2) would return them (each with nothing sent yet).
        public var pending: [UInt64]? = nil
        /// A socket connected to this listening socket of the tree and not accepted yet: made
        /// again by connect(2) once the listener listens.
        public var pendingOn: UInt64? = nil
        /// The open files in flight in its queue (SCM_RIGHTS), each set with the message of
        /// `queue` it rides on (a stream's piece): sent again with it.
        public var rights: [QueuedRights]? = nil
        /// A socket whose peer was outside the tree, named external at the checkpoint (`cpx
        /// --external-unix`): made again connected to `path` again, or with its peer closed.
        /// An image holding one has format `externalFormat`, which a chpox that does not know it
        /// refuses.
        public var external: External? = nil

        /// What a restart does with a socket whose peer was outside the tree.
        public struct External: Codable, Sendable, Equatable {
            public enum Action: String, Codable, Sendable {
                /// A new socket of its type connects to `path` again, at its descriptors.
                case reconnect
                /// It comes back with its peer closed (a pair's end whose other end is closed).
                case close
            }

            public var action: Action
            /// The path its peer was bound to (to connect to again); nil for an unnamed peer.
            public var path: String? = nil
            /// The pid of a process that held the peer at the checkpoint, for people.
            public var peerPid: Int32? = nil

            public init(action: Action, path: String? = nil, peerPid: Int32? = nil) {
                (self.action, self.path, self.peerPid) = (action, path, peerPid)
            }

            enum CodingKeys: String, CodingKey { case action, path, peerPid }

            /// What it is, for people.
            public var summary: String {
                let peer = path ?? "an unnamed socket" + (peerPid.map { " in process \($0)" } ?? "")
                return switch action {
                case .reconnect: "external: connected again to \(peer) at the restart"
                case .close: "external (peer \(peer)): its peer closed at the restart"
                }
            }
        }

        /// Descriptors sent with one queued message.
        public struct QueuedRights: Codable, Sendable, Equatable {
            /// The index in `queue` of the message they came with.
            public var message: Int
            /// In the order the receiver gets them.
            public var files: [InFlightFile]

            public init(message: Int, files: [InFlightFile]) { (self.message, self.files) = (message, files) }
        }

        /// An open file in flight: one a descriptor of the process has open too (sent again from
        /// it), or one that no process holds, made again for the message.
        public struct InFlightFile: Codable, Sendable, Equatable {
            public enum Kind: String, Codable, Sendable {
                /// The open file of descriptor `fd` of the process (a UNIX socket's: `socket`).
                case descriptor
                /// An end of pipe `pipe`: opened again through descriptor `through` of the process
                /// on the same pipe, or of a new pipe (empty) when no process holds one.
                case pipe
                /// The regular file at `path`, opened again with `flags` at `offset`.
                case file
                /// An epoll no process holds, made again with its interest list `targets`, each
                /// a UNIX socket of the process (`watched`, by inode, in the same order).
                case epoll
            }

            public var kind: Kind
            /// One number for each open file: the same one in flight twice (in one queue or
            /// two) is one open file sent twice.
            public var id: Int
            /// Its access mode and status flags (F_GETFL).
            public var flags: Int32
            public var fd: Int32? = nil
            public var socket: UInt64? = nil
            public var pipe: UInt64? = nil
            public var through: Int32? = nil
            /// A new pipe's capacity (F_GETPIPE_SZ).
            public var capacity: Int? = nil
            public var path: String? = nil
            public var offset: Int64? = nil
            public var targets: [EpollTarget]? = nil
            public var watched: [UInt64]? = nil

            public init(kind: Kind, id: Int, flags: Int32) { (self.kind, self.id, self.flags) = (kind, id, flags) }

            /// What it is, for people.
            public var summary: String {
                switch kind {
                case .descriptor: "the open file of fd \(fd ?? -1)"
                case .pipe:
                    (flags & 3 == 0 ? "a read end" : "a write end") + " of pipe \(pipe ?? 0)"
                        + (through.map { " (as fd \($0)'s)" } ?? " (a new one)")
                case .file: "\(path ?? "?") at offset \(offset ?? 0)"
                case .epoll: "an epoll watching " + (watched ?? []).map { "socket \($0)" }.joined(separator: ", ")
                }
            }
        }

        enum CodingKeys: String, CodingKey {
            case inode, type, peer, readShutdown, writeShutdown, queue, peekOffset, passCredentials, passSecurity,
                resetPending,
                peerCredentials, sendBuffer, receiveBuffer, unconnected, oneWay, name, file, listening, backlog,
                reuseAddress, peerPid, acceptedFrom, pending, pendingOn, rights, external
        }

        /// The socket file of a path name.
        public struct BoundFile: Codable, Sendable, Equatable {
            /// Its inode and device as sock_diag (UNIX_DIAG_VFS) gave them: a stale file found
            /// at the path at restart is this one when they match.
            public var inode: UInt64
            public var device: UInt64
            public var owner: UInt32
            public var group: UInt32
            /// Its permission bits.
            public var mode: UInt32
            /// The path was unlinked (or the file replaced) while the socket stayed bound: it is
            /// bound again, then unlinked.
            public var deleted: Bool? = nil

            public init(inode: UInt64, device: UInt64, owner: UInt32, group: UInt32, mode: UInt32) {
                (self.inode, self.device, self.owner, self.group, self.mode) = (inode, device, owner, group, mode)
            }
        }

        public init(inode: UInt64, type: SocketType, peer: UInt64) {
            (self.inode, self.type, self.peer) = (inode, type, peer)
        }

        /// What it is, for people.
        public var summary: String {
            let kind = "UNIX \(type.rawValue) socket"
            var words: [String]
            if listening == true {
                words = ["\(kind) listening (backlog \(backlog ?? 0))"]
                if let pending, !pending.isEmpty { words.append("\(pending.count) connections not accepted yet") }
            } else if let pendingOn {
                words = ["\(kind) connecting to socket \(pendingOn), not accepted yet"]
            } else if let acceptedFrom {
                words = ["\(kind) paired with socket \(peer), accepted from socket \(acceptedFrom)"]
            } else if unconnected == true {
                words = ["\(kind), unconnected"]
            } else if let external {
                words = ["\(kind), " + external.summary]
            } else if oneWay == true {
                words = ["\(kind) connected to socket \(peer)"]
            } else {
                words = [peer == 0 ? "\(kind), its peer closed" : "\(kind) paired with socket \(peer)"]
            }
            if let name {
                words.append("bound to \(Self.address([UInt8](name)))" + (file?.deleted == true ? " (deleted)" : ""))
            }
            if let queue, !queue.isEmpty {
                let bytes = queue.reduce(0) { $0 + $1.count }
                words.append(
                    type == .stream ? "\(bytes) bytes queued" : "\(queue.count) messages (\(bytes) bytes) queued")
            }
            if let rights, !rights.isEmpty {
                words.append(
                    "descriptors in flight: "
                        + rights.flatMap(\.files).map(\.summary).joined(separator: ", "))
            }
            let shut = [(readShutdown, "reading"), (writeShutdown, "writing")].filter { $0.0 == true }.map(\.1)
            if !shut.isEmpty { words.append("shut down for " + shut.joined(separator: " and ")) }
            if resetPending == true { words.append("a connection reset pending") }
            return words.joined(separator: ", ")
        }

        /// A bound name as `ss` shows it: a path, or "@name" for an abstract one.
        public static func address(_ name: [UInt8]) -> String {
            guard let first = name.first else { return "an empty name" }
            guard first == 0 else { return String(decoding: name.prefix { $0 != 0 }, as: UTF8.self) }
            // An abstract name is every byte of the address: programs often pad it with NULs.
            var bytes = name.dropFirst()
            while bytes.last == 0 { bytes = bytes.dropLast() }
            let shown = bytes.map {
                $0 >= 0x20 && $0 < 0x7f ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16)
            }
            return "@" + shown.joined()
        }
    }
}
