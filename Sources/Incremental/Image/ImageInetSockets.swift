import Foundation

/// IPv4 and IPv6 sockets a restart can make again: TCP sockets not connected or listening,
/// established TCP connections (made again in TCP repair mode), UDP, UDP-Lite and ping sockets,
/// bound or not, connected or not. Recorded by `InetSocketCapture`, made again by
/// `InetSocketPhase`.
extension ProcessImage {
    public struct InetSocket: Codable, Sendable, Equatable {
        public enum Family: String, Codable, Sendable {
            case ipv4, ipv6
        }

        /// The socket's type and protocol together.
        public enum Transport: String, Codable, Sendable {
            /// SOCK_STREAM, IPPROTO_TCP.
            case tcp
            /// SOCK_DGRAM, IPPROTO_UDP.
            case udp
            /// SOCK_DGRAM, IPPROTO_UDPLITE.
            case udplite
            /// SOCK_DGRAM, IPPROTO_ICMP or IPPROTO_ICMPV6 (ping sockets).
            case ping
            /// SOCK_RAW, of protocol `rawProtocol`.
            case raw
        }

        public enum State: String, Codable, Sendable {
            /// Not connected (TCP_CLOSE): a new socket, bound or not, or a datagram socket
            /// without a peer.
            case unconnected
            /// listen(2) was called; `backlog` is its argument as the kernel holds it.
            case listening
            /// A datagram socket connected to `remote`.
            case connected
            /// A TCP connection (TCP_ESTABLISHED) to `remote`, with `connection`.
            case established
            /// A TCP connection to `remote` half closed, with `connection`: this end sent its
            /// FIN (shutdown(2) for writing), not acknowledged yet (TCP_FIN_WAIT1).
            case finWait1 = "fin-wait-1"
            /// Its FIN sent and acknowledged; the peer may still send (TCP_FIN_WAIT2).
            case finWait2 = "fin-wait-2"
            /// The peer's FIN received: reads end after the queued bytes; this end may still
            /// send (TCP_CLOSE_WAIT).
            case closeWait = "close-wait"
            /// The peer's FIN received, then this end's sent, not acknowledged yet
            /// (TCP_LAST_ACK).
            case lastAck = "last-ack"
            /// Both FINs crossed: this end's not acknowledged yet, the peer's received
            /// (TCP_CLOSING).
            case closing
            /// A non-blocking connect(2) to `remote` not answered yet (TCP_SYN_SENT): made again by
            /// a new connect (a new SYN: the peer answered none, so none of it is known there).
            case synSent = "syn-sent"
            /// A TCP connection to `remote` (from `local`) made again closed, for a program that
            /// reconnects (`cpx --tcp-close` records its connections to peers outside the tree
            /// so; `ld-chpox --tcp-close` turns every connection of the image into one): a new
            /// socket with its options, not bound, not connected, shut down both ways, whose
            /// next read returns end of file and next write fails with EPIPE. Never connected:
            /// no `connection`. An older restart refuses the state.
            case closed

            /// A TCP connection, established or half closed: made again in repair mode.
            public var isConnection: Bool {
                switch self {
                case .established, .finWait1, .finWait2, .closeWait, .lastAck, .closing: true
                case .unconnected, .listening, .connected, .synSent, .closed: false
                }
            }

            /// This end sent its FIN (its send sequence counts it).
            public var sentFin: Bool { [.finWait1, .finWait2, .lastAck, .closing].contains(self) }

            /// The peer's FIN was received (the receive sequence counts it).
            public var receivedFin: Bool { [.closeWait, .lastAck, .closing].contains(self) }
        }

        /// An address and port, as getsockname(2)/getpeername(2) read it.
        public struct Address: Codable, Sendable, Equatable, CustomStringConvertible {
            /// inet_ntop(3)'s text: "127.0.0.1", "::1", "::ffff:127.0.0.1".
            public var host: String
            public var port: UInt16
            /// IPv6 only: sin6_flowinfo and sin6_scope_id, when not 0.
            public var flowInfo: UInt32? = nil
            public var scope: UInt32? = nil

            enum CodingKeys: String, CodingKey { case host, port, flowInfo, scope }

            public init(host: String, port: UInt16) { (self.host, self.port) = (host, port) }

            public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
        }

        /// A socket option the program changed from a new socket's value, set again with
        /// setsockopt(2) in the order recorded.
        public struct Option: Codable, Sendable, Equatable {
            /// Its C name: "SO_REUSEADDR", "TCP_NODELAY".
            public var label: String
            public var level: Int32
            public var name: Int32
            /// An integer option's value.
            public var value: Int32? = nil
            /// A struct or string option's bytes (SO_LINGER, SO_RCVTIMEO, SO_BINDTODEVICE...).
            public var bytes: [UInt8]? = nil

            enum CodingKeys: String, CodingKey { case label, level, name, value, bytes }

            public init(label: String, level: Int32, name: Int32, value: Int32? = nil, bytes: [UInt8]? = nil) {
                (self.label, self.level, self.name, self.value, self.bytes) = (label, level, name, value, bytes)
            }
        }

        /// An established TCP connection as TCP repair mode reads it.
        public struct Connection: Codable, Sendable, Equatable {
            /// The sequence number after the last byte written (write_seq) and after the last
            /// byte received (rcv_nxt): TCP_QUEUE_SEQ of the send and receive queues. A FIN
            /// takes one number: each counts the FIN of its direction when there is one.
            public var sendSequence: UInt32
            public var receiveSequence: UInt32
            /// Bytes written and not acknowledged by the peer yet, the last `unsent` of them not
            /// sent at all.
            public var sendQueue: Data
            public var unsent: Int
            /// Bytes received and not read yet.
            public var receiveQueue: Data
            /// The negotiated options (TCP_REPAIR_OPTIONS): MSS, window scales (nil: none),
            /// SACK, timestamps.
            public var mss: UInt32
            public var sendScale: UInt8? = nil
            public var receiveScale: UInt8? = nil
            public var sack: Bool
            public var timestamps: Bool
            /// TCP_TIMESTAMP: the connection's timestamp clock, when timestamps are on.
            public var timestamp: UInt32? = nil
            /// TCP_REPAIR_WINDOW: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
            public var window: [UInt32]
            /// SO_SNDBUF, SO_RCVBUF (as TCP tuned them, or the program set them) and SO_BUF_LOCK:
            /// the queues are written back with larger buffers, then these are set.
            public var buffers: [Int32]? = nil
            /// A connection whose FIN this end sent (`State.sentFin`): true when the FIN waits
            /// in the send queue behind bytes not sent yet, or for the peer's window to open.
            /// `sendSequence` counts the FIN; `sendQueue` and `unsent` count bytes only.
            public var finQueued: Bool? = nil
            /// The state the connection was read in (the socket's `state`, kept with the
            /// reading it goes with); not in the image.
            public var state: State? = nil

            enum CodingKeys: String, CodingKey {
                case sendSequence, receiveSequence, sendQueue, unsent, receiveQueue, mss, sendScale, receiveScale,
                    sack, timestamps, timestamp, window, buffers, finQueued
            }

            public init(
                sendSequence: UInt32, receiveSequence: UInt32, sendQueue: Data, unsent: Int, receiveQueue: Data,
                mss: UInt32, sack: Bool, timestamps: Bool, window: [UInt32]
            ) {
                (self.sendSequence, self.receiveSequence) = (sendSequence, receiveSequence)
                (self.sendQueue, self.unsent, self.receiveQueue) = (sendQueue, unsent, receiveQueue)
                (self.mss, self.sack, self.timestamps, self.window) = (mss, sack, timestamps, window)
            }
        }

        /// The socket's inode: the descriptors that show one inode share the socket.
        public var inode: UInt64
        public var family: Family
        public var transport: Transport
        public var state: State
        /// Where it is bound; nil when it is not (port 0 on the wildcard address).
        public var local: Address? = nil
        /// Its peer (connected, established and half closed).
        public var remote: Address? = nil
        /// listen(2)'s backlog (listening).
        public var backlog: Int32? = nil
        /// shutdown(2) of a datagram socket: no more reads, no more writes.
        public var readShutdown: Bool? = nil
        public var writeShutdown: Bool? = nil
        /// The options set, in the order they are set again.
        public var options: [Option]? = nil
        /// A classic BPF socket filter (SO_ATTACH_FILTER): its struct sock_filter instructions,
        /// 8 bytes each.
        public var filter: [UInt8]? = nil
        /// An established or half-closed connection's state.
        public var connection: Connection? = nil
        /// A raw socket's protocol (socket(2)'s third argument).
        public var rawProtocol: Int32? = nil

        enum CodingKeys: String, CodingKey {
            case inode, family, transport, state, local, remote, backlog, readShutdown, writeShutdown, options, filter,
                connection, rawProtocol
        }

        public init(inode: UInt64, family: Family, transport: Transport, state: State) {
            (self.inode, self.family, self.transport, self.state) = (inode, family, transport, state)
        }

        /// What it is, for people.
        public var summary: String {
            let name = (family == .ipv4 ? "IPv4 " : "IPv6 ") + transport.rawValue.uppercased() + " socket"
            var words = [name]
            switch state {
            case .unconnected: words.append(local.map { "bound to \($0)" } ?? "not bound")
            case .listening: words.append("listening on \(local?.description ?? "?") (backlog \(backlog ?? 0))")
            case .connected, .established:
                words.append("\(local?.description ?? "?") connected to \(remote?.description ?? "?")")
            case .closed:
                words.append(
                    "closed (its connection \(local?.description ?? "?") to \(remote?.description ?? "?") is not "
                        + "restored: reads return end of file, writes fail with EPIPE)")
            case .finWait1, .finWait2, .closeWait, .lastAck, .closing, .synSent:
                words.append(
                    "\(local?.description ?? "?") connected to \(remote?.description ?? "?") "
                        + "(\(state.rawValue.uppercased()))")
            }
            if let connection {
                words.append("\(connection.receiveQueue.count) bytes to read, \(connection.sendQueue.count) to send")
            }
            let shut = [(readShutdown, "reading"), (writeShutdown, "writing")].filter { $0.0 == true }.map(\.1)
            if !shut.isEmpty { words.append("shut down for " + shut.joined(separator: " and ")) }
            if let options, !options.isEmpty { words.append(options.map(\.label).joined(separator: " ")) }
            if filter != nil { words.append("a socket filter") }
            return words.joined(separator: ", ")
        }
    }
}
