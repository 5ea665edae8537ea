import Foundation

/// UNIX sockets a restart can make again: the two ends of a socketpair(2) held by the process
/// (or one end, its peer closed), each with what it had queued to read. Recorded by
/// `SocketCapture`, made again by `SocketPhase`.
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
        /// The inode of the other end of the pair; 0 when the other end was closed.
        public var peer: UInt64
        /// shutdown(2) on this end: no more reads (the kernel's RCV_SHUTDOWN), no more writes
        /// (SEND_SHUTDOWN). A stream's shutdown shows on both ends.
        public var readShutdown: Bool? = nil
        public var writeShutdown: Bool? = nil
        /// What this end will read, in order: each message of a datagram or seqpacket socket, a
        /// stream's bytes as one. Recorded on the socket's first descriptor only (nil on the
        /// others).
        public var queue: [Data]? = nil
        /// SO_PEEK_OFF when the program set it (nil: -1, peeking at the head).
        public var peekOffset: Int32? = nil
        /// SO_PASSCRED was set.
        public var passCredentials: Bool? = nil
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

        enum CodingKeys: String, CodingKey {
            case inode, type, peer, readShutdown, writeShutdown, queue, peekOffset, passCredentials, resetPending,
                peerCredentials, sendBuffer, receiveBuffer
        }

        public init(inode: UInt64, type: SocketType, peer: UInt64) {
            (self.inode, self.type, self.peer) = (inode, type, peer)
        }

        /// What it is, for people.
        public var summary: String {
            let name = "UNIX \(type.rawValue) socket"
            var words = [peer == 0 ? "\(name), its peer closed" : "\(name) paired with socket \(peer)"]
            if let queue, !queue.isEmpty {
                let bytes = queue.reduce(0) { $0 + $1.count }
                words.append(
                    type == .stream ? "\(bytes) bytes queued" : "\(queue.count) messages (\(bytes) bytes) queued")
            }
            let shut = [(readShutdown, "reading"), (writeShutdown, "writing")].filter { $0.0 == true }.map(\.1)
            if !shut.isEmpty { words.append("shut down for " + shut.joined(separator: " and ")) }
            if resetPending == true { words.append("a connection reset pending") }
            return words.joined(separator: ", ")
        }
    }
}
