#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Syscall

/// Reads an IPv4 or IPv6 socket of a frozen process through a copy of its descriptor
/// (pidfd_getfd(2)), leaving it as it was: its transport, state, addresses, shutdown state
/// (sock_diag), the options the program changed from a new socket's (each compared with a
/// socket cpx makes of the same kind), a classic socket filter, and for an established TCP
/// connection its sequence numbers, queues, negotiated options and window, read in TCP repair
/// mode (CAP_NET_ADMIN), which is then left without a window probe and with SO_REUSEADDR put
/// back (leaving repair mode clears it). What cannot be made again exactly is refused.
enum InetSocketCapture {
    typealias Socket = ProcessImage.InetSocket
    typealias Option = FileDescriptor.OptionName

    struct Refusal: Error { var reason: String }

    static let solSocket: Int32 = 1, solIP: Int32 = 0, solIPv6: Int32 = 41, solTCP: Int32 = 6, solUDP: Int32 = 17
    static let solUDPLite: Int32 = 136
    static let tcpInfo = Option(level: solTCP, name: 11)
    static let maxSegment = Option(level: solTCP, name: 2)
    /// MAX_TCP_WINDOW: the largest TCP_MAXSEG setsockopt(2) takes.
    static let maxUserSegment: Int32 = 32767
    static let reuseAddress = Option(level: solSocket, name: 2)
    static let bufferLock = Option(level: solSocket, name: 72)
    static let getFilter = Option(level: solSocket, name: 26)
    static let repair = TCPRepair.repair
    static let repairQueue = TCPRepair.queue
    static let queueSequence = TCPRepair.queueSequence
    static let timestamp = TCPRepair.timestamp
    static let repairWindow = TCPRepair.window

    /// An option compared with a new socket's and set again when it differs: an integer, or
    /// bytes (`capacity` of them at most).
    struct Known {
        var label: String
        var option: Option
        var capacity: Int? = nil
        /// Read for a socket that is not an established connection only (an established one
        /// has it from its connection: TCP_MAXSEG, TCP_WINDOW_CLAMP).
        var unconnectedOnly = false
    }

    /// Every option compared, in the order a restart sets them: the buffer sizes and their
    /// lock last (setting a size sets its lock).
    static let known: [Known] = {
        func int(_ label: String, _ level: Int32, _ name: Int32, unconnectedOnly: Bool = false) -> Known {
            Known(label: label, option: .init(level: level, name: name), unconnectedOnly: unconnectedOnly)
        }
        func bytes(_ label: String, _ level: Int32, _ name: Int32, _ capacity: Int) -> Known {
            Known(label: label, option: .init(level: level, name: name), capacity: capacity)
        }
        return [
            int("SO_REUSEADDR", solSocket, 2), int("SO_REUSEPORT", solSocket, 15), int("SO_KEEPALIVE", solSocket, 9),
            int("SO_BROADCAST", solSocket, 6), int("SO_DONTROUTE", solSocket, 5), int("SO_OOBINLINE", solSocket, 10),
            int("SO_NO_CHECK", solSocket, 11), int("SO_PRIORITY", solSocket, 12), int("SO_RCVLOWAT", solSocket, 18),
            int("SO_PASSCRED", solSocket, 16), int("SO_PASSSEC", solSocket, 34), int("SO_TIMESTAMP", solSocket, 29),
            int("SO_TIMESTAMPNS", solSocket, 35), int("SO_TIMESTAMPING", solSocket, 37), int("SO_MARK", solSocket, 36),
            int("SO_RXQ_OVFL", solSocket, 40), int("SO_WIFI_STATUS", solSocket, 41), int("SO_PEEK_OFF", solSocket, 42),
            int("SO_NOFCS", solSocket, 43), int("SO_SELECT_ERR_QUEUE", solSocket, 45),
            int("SO_BUSY_POLL", solSocket, 46), int("SO_ZEROCOPY", solSocket, 60),
            int("SO_PREFER_BUSY_POLL", solSocket, 69), int("SO_BUSY_POLL_BUDGET", solSocket, 70),
            int("SO_TXREHASH", solSocket, 74), int("SO_RCVMARK", solSocket, 75),
            bytes("SO_LINGER", solSocket, 13, 8), bytes("SO_RCVTIMEO", solSocket, 20, 16),
            bytes("SO_SNDTIMEO", solSocket, 21, 16), bytes("SO_BINDTODEVICE", solSocket, 25, 16),
            int("IP_TOS", solIP, 1), int("IP_TTL", solIP, 2), int("IP_HDRINCL", solIP, 3), int("IP_RECVOPTS", solIP, 6),
            int("IP_RETOPTS", solIP, 7), int("IP_PKTINFO", solIP, 8), int("IP_MTU_DISCOVER", solIP, 10),
            int("IP_RECVERR", solIP, 11), int("IP_RECVTTL", solIP, 12), int("IP_RECVTOS", solIP, 13),
            int("IP_FREEBIND", solIP, 15), int("IP_PASSSEC", solIP, 18), int("IP_TRANSPARENT", solIP, 19),
            int("IP_RECVORIGDSTADDR", solIP, 20), int("IP_MINTTL", solIP, 21), int("IP_NODEFRAG", solIP, 22),
            int("IP_CHECKSUM", solIP, 23), int("IP_BIND_ADDRESS_NO_PORT", solIP, 24),
            int("IP_RECVFRAGSIZE", solIP, 25), int("IP_RECVERR_RFC4884", solIP, 26),
            int("IP_MULTICAST_TTL", solIP, 33), int("IP_MULTICAST_LOOP", solIP, 34),
            int("IP_MULTICAST_ALL", solIP, 49), int("IP_LOCAL_PORT_RANGE", solIP, 51),
            int("IPV6_V6ONLY", solIPv6, 26), int("IPV6_UNICAST_HOPS", solIPv6, 16),
            int("IPV6_MULTICAST_HOPS", solIPv6, 18), int("IPV6_MULTICAST_LOOP", solIPv6, 19),
            int("IPV6_MTU_DISCOVER", solIPv6, 23), int("IPV6_RECVERR", solIPv6, 25),
            int("IPV6_MULTICAST_ALL", solIPv6, 29), int("IPV6_RECVPKTINFO", solIPv6, 49),
            int("IPV6_RECVHOPLIMIT", solIPv6, 51), int("IPV6_RECVHOPOPTS", solIPv6, 53),
            int("IPV6_RECVRTHDR", solIPv6, 56), int("IPV6_RECVDSTOPTS", solIPv6, 58),
            int("IPV6_RECVPATHMTU", solIPv6, 60), int("IPV6_DONTFRAG", solIPv6, 62),
            int("IPV6_RECVTCLASS", solIPv6, 66), int("IPV6_TCLASS", solIPv6, 67),
            int("IPV6_AUTOFLOWLABEL", solIPv6, 70), int("IPV6_ADDR_PREFERENCES", solIPv6, 72),
            int("IPV6_MINHOPCOUNT", solIPv6, 73), int("IPV6_RECVORIGDSTADDR", solIPv6, 74),
            int("IPV6_TRANSPARENT", solIPv6, 75), int("IPV6_UNICAST_IF", solIPv6, 76),
            int("IPV6_RECVFRAGSIZE", solIPv6, 77), int("IPV6_FREEBIND", solIPv6, 78),
            int("TCP_NODELAY", solTCP, 1), int("TCP_MAXSEG", solTCP, 2, unconnectedOnly: true),
            int("TCP_CORK", solTCP, 3), int("TCP_KEEPIDLE", solTCP, 4), int("TCP_KEEPINTVL", solTCP, 5),
            int("TCP_KEEPCNT", solTCP, 6), int("TCP_SYNCNT", solTCP, 7), int("TCP_LINGER2", solTCP, 8),
            int("TCP_DEFER_ACCEPT", solTCP, 9), int("TCP_WINDOW_CLAMP", solTCP, 10, unconnectedOnly: true),
            int("TCP_THIN_LINEAR_TIMEOUTS", solTCP, 16), int("TCP_USER_TIMEOUT", solTCP, 18),
            int("TCP_FASTOPEN", solTCP, 23), int("TCP_NOTSENT_LOWAT", solTCP, 25), int("TCP_SAVE_SYN", solTCP, 27),
            int("TCP_FASTOPEN_CONNECT", solTCP, 30), int("TCP_FASTOPEN_NO_COOKIE", solTCP, 34),
            int("TCP_INQ", solTCP, 36), int("TCP_TX_DELAY", solTCP, 37), bytes("TCP_CONGESTION", solTCP, 13, 16),
            int("UDP_CORK", solUDP, 1), int("UDP_ENCAP", solUDP, 100), int("UDP_NO_CHECK6_TX", solUDP, 101),
            int("UDP_NO_CHECK6_RX", solUDP, 102), int("UDP_SEGMENT", solUDP, 103), int("UDP_GRO", solUDP, 104),
            int("UDPLITE_SEND_CSCOV", solUDPLite, 10), int("UDPLITE_RECV_CSCOV", solUDPLite, 11),
            int("SO_SNDBUF", solSocket, 7), int("SO_RCVBUF", solSocket, 8), int("SO_BUF_LOCK", solSocket, 72),
        ]
    }()

    /// The longest queue of a connection kept in the image.
    static let queueLimit = 64 << 20

    /// The network namespace cpx runs in: a socket of another one is refused (the new sockets
    /// cpx compares with, and sock_diag, see only this one).
    static let ownNetwork = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")

    static func capture(_ copy: FileDescriptor, domain: Int32, inode: UInt64, pid: Int32) -> Result<Socket, Refusal> {
        do throws(Errno) {
            return try read(copy, domain: domain, inode: inode, pid: pid)
        } catch {
            return .failure(Refusal(reason: "its state cannot be read (\(error))"))
        }
    }

    private static func read(
        _ copy: FileDescriptor, domain: Int32, inode: UInt64, pid: Int32
    ) throws(Errno) -> Result<Socket, Refusal> {
        let family: Socket.Family = domain == AF_INET ? .ipv4 : .ipv6
        let familyName = family == .ipv4 ? "IPv4" : "IPv6"
        let network = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")
        guard network == ownNetwork else {
            return .failure(Refusal(reason: "an \(familyName) socket of another network namespace: not restored"))
        }
        let type = try copy.socketOption(.type)
        let proto = try copy.socketOption(Option(level: solSocket, name: 38))  // SO_PROTOCOL
        let transport: Socket.Transport
        switch (type, proto) {
        case (Int32(SOCK_STREAM.rawValue), Int32(IPPROTO_TCP)): transport = .tcp
        case (Int32(SOCK_DGRAM.rawValue), Int32(IPPROTO_UDP)): transport = .udp
        case (Int32(SOCK_DGRAM.rawValue), 136): transport = .udplite
        case (Int32(SOCK_DGRAM.rawValue), Int32(IPPROTO_ICMP)),
            (Int32(SOCK_DGRAM.rawValue), Int32(IPPROTO_ICMPV6)):
            transport = .ping
        case (Int32(SOCK_RAW.rawValue), _):
            // zdtm socket-raw restarted and then never got its raw datagram: what a raw socket
            // holds (protocol options such as ICMP_FILTER, the packets it is handed) is not all
            // read yet. Refused until it is.
            return .failure(
                Refusal(
                    reason: "a raw \(familyName) socket (protocol \(proto)): raw sockets are not restored yet "
                        + "(their protocol options are not all read)"))
        default:
            return .failure(
                Refusal(
                    reason: "an \(familyName) socket of type \(type), protocol \(proto) (SCTP, MPTCP...): "
                        + "only TCP, UDP, UDP-Lite, ping and raw sockets are restored"))
        }
        let events = try copy.readyEvents()
        if events.contains(.error) {
            return .failure(
                Refusal(reason: "an error is pending on it (SO_ERROR), which a restart cannot set again"))
        }
        let local = try address(copy.localAddress())
        let remote = try copy.peerAddress().flatMap(address)
        var socket = Socket(inode: inode, family: family, transport: transport, state: .unconnected)
        if transport == .raw { socket.rawProtocol = proto }
        // A raw socket's port is its protocol: bound only to an address.
        if let local, (local.port != 0 && transport != .raw) || !isWildcard(local.host) { socket.local = local }
        if transport == .raw, events.contains(.hangUp) {
            return .failure(Refusal(reason: "a raw socket shut down: not restored"))
        }
        let name = "\(familyName) \(transport.rawValue.uppercased()) socket"
        if transport == .tcp {
            let info = try copy.socketOptionBytes(tcpInfo, capacity: 104)
            guard info.count >= 32 else { return .failure(Refusal(reason: "TCP_INFO is too short")) }
            func word(_ at: Int) -> UInt32 {
                info.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) }
            }
            switch info[0] {
            case 7: socket.state = .unconnected  // TCP_CLOSE
            case 10:  // TCP_LISTEN: tcpi_unacked is the accept queue, tcpi_sacked its limit
                socket.state = .listening
                socket.backlog = Int32(bitPattern: word(28))
                if word(24) > 0 {
                    return .failure(
                        Refusal(
                            reason: "a listening \(name) on \(local?.description ?? "?") with \(word(24)) "
                                + "connections not accepted yet: they are not restored"))
                }
            case 1, 4, 5, 8, 9, 11:  // ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING
                socket.state = connectionStates[info[0]] ?? .established
                socket.remote = remote
                if events.contains(.priority) {
                    return .failure(Refusal(reason: "out-of-band data (MSG_OOB) is queued in it, not restored"))
                }
            case 2:  // SYN_SENT: its peer is only in the kernel's table (getpeername says ENOTCONN)
                guard try copy.statusFlags() & O_NONBLOCK != 0 else {
                    return .failure(
                        Refusal(
                            reason: "a \(name) connecting (SYN_SENT) in a blocking connect(2): a thread waits in "
                                + "it, which a restart cannot make again"))
                }
                guard
                    let peer = EstablishedConnections.sockets().first(where: { $0.inode == inode && $0.state == 2 })
                else {
                    return .failure(Refusal(reason: "a \(name) connecting (SYN_SENT) whose peer is not listed"))
                }
                socket.state = .synSent
                socket.remote = Socket.Address(host: peer.connection.remoteHost, port: peer.connection.remotePort)
                if family == .ipv6, !socket.remote!.host.contains(":") {
                    socket.remote!.host = "::ffff:" + socket.remote!.host
                }
            default:
                return .failure(
                    Refusal(
                        reason: "a \(name) in state \(tcpStateName(info[0])) (\(local?.description ?? "?") to "
                            + "\(remote?.description ?? "?")): only listening, unconnected, established and "
                            + "half-closed TCP sockets are restored"))
            }
        } else if let remote {
            socket.state = .connected
            socket.remote = remote
        }
        if transport != .ping, transport != .raw,
            let diagnosis = try InetSocketDiagnosis.of(
                inode: inode, family: domain, protocol: proto, local: try? copy.localAddress(),
                remote: try? copy.peerAddress())
        {
            if diagnosis.shutdown & 1 != 0 { socket.readShutdown = true }
            if diagnosis.shutdown & 2 != 0 { socket.writeShutdown = true }
        }
        if socket.state == .listening, socket.readShutdown == true || socket.writeShutdown == true {
            return .failure(Refusal(reason: "a \(name) shut down for reading or writing: not restored"))
        }
        // A connection is shut down for writing exactly when it sent its FIN; for reading when
        // it received the peer's, or the program asked (shutdown(SHUT_RD), made again so).
        if socket.state.isConnection, (socket.writeShutdown == true) != socket.state.sentFin {
            return .failure(
                Refusal(
                    reason: "a \(name) in state \(tcpStateName(info0(copy))) "
                        + (socket.writeShutdown == true ? "shut down for writing" : "not shut down for writing")
                        + ": not restored"))
        }
        if transport != .tcp {
            // A peek of no bytes: EAGAIN when nothing waits (its pending error was refused above).
            var none: [UInt8] = [0]
            let queued: Bool
            do {
                _ = try none.withMutableRawBytes { (raw) throws(Errno) in
                    try copy.receive(
                        into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<0]), flags: [.peek, .dontWait])
                }
                queued = true
            } catch let error where error == .wouldBlock {
                queued = false
            }
            if queued {
                return .failure(
                    Refusal(
                        reason:
                            "datagrams wait in the receive queue of this \(name) (\(local?.description ?? "unbound")): "
                            + "queued datagrams are not restored"))
            }
            if transport == .udp || transport == .udplite, try copy.queueLength(.unacknowledged) > 0 {
                return .failure(
                    Refusal(reason: "a corked \(name) holds data not sent yet (UDP_CORK): not restored"))
            }
        }
        switch try options(
            copy, domain: domain, type: type, protocol: proto, established: socket.state.isConnection)
        {
        case .success(let options): if !options.isEmpty { socket.options = options }
        case .failure(let refusal): return .failure(refusal)
        }
        switch try filter(copy) {
        case .success(let filter): socket.filter = filter
        case .failure(let refusal): return .failure(refusal)
        }
        if socket.state.isConnection {
            switch try steadyConnections([copy]) {
            case .success(let connections):
                socket.connection = connections[0]
                if let state = connections[0].state { socket.state = state }
                socket.connection?.state = nil
            case .failure(let refusal): return .failure(refusal)
            }
        }
        return .success(socket)
    }

    /// How many times the connections are read before cpx gives up on their settling.
    static let settleAttempts = 40

    /// The connections of `copies` read together while none of them moved: the kernel goes on
    /// carrying a frozen tree's connections (segments in flight, window probes, acks), and a
    /// connection read while it moves, or one end read before and the other after a segment
    /// passed between them, restarts with bytes missing and then waits for them forever (zdtm
    /// socket-tcpbuf6-local, under load). Each try reads TCP_INFO's byte counters before and
    /// after reading them all; equal counters mean no sequence number moved meanwhile (the
    /// processes, frozen, neither write nor read), so the reads are one instant's.
    static func steadyConnections(_ copies: [FileDescriptor]) throws(Errno) -> Result<[Socket.Connection], Refusal> {
        for attempt in 0..<settleAttempts {
            if attempt > 0 { usleep(UInt32(min(attempt, 10)) * 5_000) }
            var before: [[UInt64]] = []
            for copy in copies { before.append(try progress(copy)) }
            var read: [Result<Socket.Connection, Refusal>] = []
            for copy in copies { read.append(try connection(copy)) }
            var after: [[UInt64]] = []
            for copy in copies { after.append(try progress(copy)) }
            guard before == after else { continue }
            var connections: [Socket.Connection] = []
            for outcome in read {
                switch outcome {
                case .success(let connection): connections.append(connection)
                case .failure(let refusal): return .failure(refusal)
                }
            }
            return .success(connections)
        }
        return .failure(
            Refusal(
                reason: "its connection kept moving while its process was frozen (\(settleAttempts) reads, "
                    + "segments still passing): try again"))
    }

    /// TCP_INFO's tcpi_bytes_acked and tcpi_bytes_received: they count every move of the
    /// connection's unacknowledged and next-expected sequence numbers.
    private static func progress(_ copy: FileDescriptor) throws(Errno) -> [UInt64] {
        let info = try copy.socketOptionBytes(tcpInfo, capacity: 136)
        guard info.count >= 136 else { return [] }
        return [120, 128].map { at in info.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt64.self) } }
    }

    /// Every established connection of the frozen tree read again, all together, once none of
    /// them moves (`steadyConnections`): each process's were read when it was captured, one
    /// after another, while segments could still pass between two of them.
    static func settle(_ images: inout [ProcessImage]) -> [String] {
        var copies: [FileDescriptor] = []
        var inodes: [UInt64] = []
        defer { for copy in copies { copy.close() } }
        for image in images {
            let ends = image.descriptors.filter { descriptor in
                descriptor.inet?.connection != nil && !inodes.contains(descriptor.inet!.inode)
            }
            guard !ends.isEmpty else { continue }
            do throws(Errno) {
                let process = try ProcessDescriptor.open(image.pid)
                for end in ends where !inodes.contains(end.inet!.inode) {
                    copies.append(try process.copyDescriptor(end.fd))
                    inodes.append(end.inet!.inode)
                }
            } catch {
                return ["process \(image.pid): its TCP connections cannot be read again (\(error))"]
            }
        }
        guard !copies.isEmpty else { return [] }
        let connections: [Socket.Connection]
        do throws(Errno) {
            switch try steadyConnections(copies) {
            case .success(let read): connections = read
            case .failure(let refusal): return ["the tree's TCP connections: " + refusal.reason]
            }
        } catch {
            return ["the tree's TCP connections cannot be read again (\(error))"]
        }
        let byInode = Dictionary(uniqueKeysWithValues: zip(inodes, connections))
        for k in images.indices {
            for d in images[k].descriptors.indices {
                guard let inode = images[k].descriptors[d].inet?.inode,
                    images[k].descriptors[d].inet?.connection != nil,
                    let connection = byInode[inode]
                else { continue }
                images[k].descriptors[d].inet?.connection = connection
                if let state = connection.state { images[k].descriptors[d].inet?.state = state }
                images[k].descriptors[d].inet?.connection?.state = nil
            }
        }
        return []
    }

    /// The options whose value differs from a new socket's of the same kind.
    private static func options(
        _ copy: FileDescriptor, domain: Int32, type: Int32, protocol proto: Int32, established: Bool
    ) throws(Errno) -> Result<[Socket.Option], Refusal> {
        let fresh = try FileDescriptor.socket(domain: domain, type: type, protocol: proto)
        defer { fresh.close() }
        let locks = (try? copy.socketOption(bufferLock)) ?? 0
        var options: [Socket.Option] = []
        // A TCP socket cannot set multicast options; an accepted one reads the hop limit of
        // the packet that opened it there.
        let stream = type == Int32(SOCK_STREAM.rawValue)
        for known in known
        where !(established && known.unconnectedOnly) && !(stream && known.label.contains("MULTICAST")) {
            if let capacity = known.capacity {
                guard let value = try? copy.socketOptionBytes(known.option, capacity: capacity) else { continue }
                let initial = try? fresh.socketOptionBytes(known.option, capacity: capacity)
                if value != initial {
                    options.append(
                        .init(label: known.label, level: known.option.level, name: known.option.name, bytes: value))
                }
                continue
            }
            guard let value = try? copy.socketOption(known.option) else { continue }
            let initial = try? fresh.socketOption(known.option)
            // TCP_MAXSEG of a socket whose connection is over reads the connection's MSS
            // (mss_cache) unless the program set one: a value above MAX_TCP_WINDOW (32767) is
            // the kernel's, which no program can set (zdtm socket-tcp-close2).
            if known.label == "TCP_MAXSEG", value > maxUserSegment { continue }
            // A buffer size is the program's when it set it (its lock bit): otherwise TCP
            // tunes it by itself.
            if known.label == "SO_SNDBUF" {
                if locks & 1 == 0 { continue }
            } else if known.label == "SO_RCVBUF" {
                if locks & 2 == 0 { continue }
            } else if value == initial {
                continue
            }
            options.append(.init(label: known.label, level: known.option.level, name: known.option.name, value: value))
        }
        return .success(options)
    }

    /// A classic BPF filter's instructions (SO_GET_FILTER); nil without one. An eBPF filter
    /// (SO_ATTACH_BPF) cannot be read back: refused.
    private static func filter(_ copy: FileDescriptor) throws(Errno) -> Result<[UInt8]?, Refusal> {
        let count = try copy.socketOptionLength(getFilter)
        guard count > 0 else { return .success(nil) }
        do {
            let bytes = try copy.socketFilter(count: count)
            guard bytes.count == count * 8 else {
                return .failure(Refusal(reason: "its socket filter reads \(bytes.count / 8) of \(count) instructions"))
            }
            return .success(bytes)
        } catch {
            return .failure(Refusal(reason: "it has an eBPF socket filter (SO_ATTACH_BPF), which cannot be read back"))
        }
    }

    /// An established connection, read in repair mode: the socket is put in repair mode and
    /// back whatever happens, without a window probe and with SO_REUSEADDR as it was.
    private static func connection(_ copy: FileDescriptor) throws(Errno) -> Result<Socket.Connection, Refusal> {
        let reuse = try copy.socketOption(reuseAddress)
        do {
            try copy.setSocketOption(repair, to: 1)
        } catch {
            return .failure(
                Refusal(
                    reason: "TCP repair mode cannot be entered to read its connection (\(error); needs CAP_NET_ADMIN)"))
        }
        defer {
            try? copy.setSocketOption(repair, to: TCPRepair.offWithoutProbe)
            if reuse != 0 { try? copy.setSocketOption(reuseAddress, to: reuse) }
        }
        try copy.setSocketOption(repairQueue, to: TCPRepair.receiveQueue)
        let receiveSequence = UInt32(bitPattern: try copy.socketOption(queueSequence))
        let received = Int(try copy.queueLength(.received))
        let receiveQueue = try peek(copy, count: received)
        try copy.setSocketOption(repairQueue, to: TCPRepair.sendQueue)
        let sendSequence = UInt32(bitPattern: try copy.socketOption(queueSequence))
        var unacknowledged = Int(try copy.queueLength(.unacknowledged))
        var unsent = Int(try copy.queueLength(.unsent))
        // The send queue's counts take in this end's FIN while it is not acknowledged (and not
        // sent): it is no byte of the queue (zdtm socket-tcp-fin-wait1).
        let stateCode = (try copy.socketOptionBytes(tcpInfo, capacity: 8)).first ?? 0
        guard let state = connectionStates[stateCode] else {
            return .failure(
                Refusal(reason: "its connection went to state \(tcpStateName(stateCode)) while it was read: try again"))
        }
        var finQueued: Bool? = nil
        if state.sentFin {
            if state != .finWait2 {
                guard unacknowledged > 0 else {
                    return .failure(Refusal(reason: "its FIN is not acknowledged, and not in its send queue"))
                }
                unacknowledged -= 1
            }
            finQueued = unsent > 0
            unsent = max(unsent - 1, 0)
        }
        let sendQueue = try peek(copy, count: unacknowledged)
        guard received <= queueLimit, unacknowledged <= queueLimit else {
            return .failure(Refusal(reason: "its queues hold more than \(Format.bytes(Int64(queueLimit)))"))
        }
        guard receiveQueue.count == received, sendQueue.count == unacknowledged else {
            return .failure(
                Refusal(
                    reason: "its queues read \(receiveQueue.count) and \(sendQueue.count) bytes where the kernel "
                        + "counts \(received) and \(unacknowledged)"))
        }
        let info = try copy.socketOptionBytes(tcpInfo, capacity: 104)
        let mss = UInt32(bitPattern: try copy.socketOption(maxSegment))
        let window = try copy.socketOptionBytes(repairWindow, capacity: 20)
        guard info.count >= 8, window.count == 20 else {
            return .failure(Refusal(reason: "TCP_INFO or TCP_REPAIR_WINDOW reads short"))
        }
        // tcpi_options: TCPI_OPT_TIMESTAMPS 1, TCPI_OPT_SACK 2, TCPI_OPT_WSCALE 4.
        let flags = info[5]
        var connection = Socket.Connection(
            sendSequence: sendSequence, receiveSequence: receiveSequence, sendQueue: Data(sendQueue),
            unsent: unsent, receiveQueue: Data(receiveQueue), mss: mss, sack: flags & 2 != 0,
            timestamps: flags & 1 != 0,
            window: (0..<5).map { i in
                window.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self) }
            })
        connection.finQueued = finQueued
        connection.state = state
        if flags & 4 != 0 {
            connection.sendScale = info[6] & 0x0f
            connection.receiveScale = info[6] >> 4
        }
        connection.buffers = [
            try copy.socketOption(.sendBuffer), try copy.socketOption(.receiveBuffer),
            try copy.socketOption(bufferLock),
        ]
        if connection.timestamps { connection.timestamp = UInt32(bitPattern: try copy.socketOption(timestamp)) }
        return .success(connection)
    }

    /// The first `count` bytes of the queue repair mode selected, peeked.
    private static func peek(_ copy: FileDescriptor, count: Int) throws(Errno) -> [UInt8] {
        guard count > 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: min(count, queueLimit) + 1)
        let got = try buffer.withMutableRawBytes { (raw) throws(Errno) in
            try copy.receive(into: raw, flags: [.peek, .dontWait]).count
        }
        return Array(buffer.prefix(got))
    }

    /// An address as getsockname/getpeername wrote it (sockaddr_in or sockaddr_in6).
    static func address(_ bytes: [UInt8]) -> Socket.Address? {
        guard bytes.count >= 8 else { return nil }
        let family = Int32(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) })
        let port = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        var text = [CChar](repeating: 0, count: 64)
        if family == AF_INET {
            let host = Array(bytes[4..<8])
            _ = inet_ntop(AF_INET, host, &text, 64)
            return .init(host: String(cString: text), port: port)
        }
        guard family == AF_INET6, bytes.count >= 28 else { return nil }
        let host = Array(bytes[8..<24])
        _ = inet_ntop(AF_INET6, host, &text, 64)
        var address = Socket.Address(host: String(cString: text), port: port)
        let flow = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) }
        let scope = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 24, as: UInt32.self) }
        if flow != 0 { address.flowInfo = flow }
        if scope != 0 { address.scope = scope }
        return address
    }

    static func isWildcard(_ host: String) -> Bool { host == "0.0.0.0" || host == "::" }

    /// TCP_INFO's tcpi_state of the connections restored: ESTABLISHED and the half-closed ones.
    static let connectionStates: [UInt8: Socket.State] = [
        1: .established, 4: .finWait1, 5: .finWait2, 8: .closeWait, 9: .lastAck, 11: .closing,
    ]

    private static func info0(_ copy: FileDescriptor) -> UInt8 {
        (try? copy.socketOptionBytes(tcpInfo, capacity: 8))?.first ?? 0
    }

    static func tcpStateName(_ state: UInt8) -> String {
        let names = [
            1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE",
            8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
        ]
        return names[Int(state)] ?? "\(state)"
    }

    /// The established connections of the tree whose peer socket no process of it holds: a
    /// restart cannot make their peer again, and the peer resets them once the process is
    /// gone unless its packets are held. Refused unless `external` (cpx --tcp-established,
    /// which `cpx --kill` holds) or `close` (cpx --tcp-close: recorded without their state, to
    /// be made again closed, `InetSocket.State.closed`); with `skip` (--skip-unsupported) they
    /// are left out of the image instead.
    static func unheldPeers(_ images: inout [ProcessImage], external: Bool, close: Bool, skip: Bool) -> [String] {
        guard !external else { return [] }
        var refused: [String] = []
        for outside in ProcessImage.outsideConnections(images) {
            guard let k = images.firstIndex(where: { $0.pid == outside.pid }),
                let d = images[k].descriptors.firstIndex(where: { $0.fd == outside.fd })
            else { continue }
            if close {
                images[k].descriptors[d].inet?.close()
                continue
            }
            let line =
                "fd \(outside.fd): a TCP connection \(outside.connection) whose peer is outside the checkpointed "
                + "tree: between checkpoint and restart the peer would reset it; cpx --tcp-established restores it "
                + "anyway (with --kill, its packets are held until the restart), cpx --tcp-close records it to be "
                + "restored closed (for programs that reconnect)"
            refused.append(images.count == 1 || k == 0 ? line : "process \(outside.pid): \(line)")
            if skip {
                images[k].descriptors[d].kind = .unsupported
                images[k].descriptors[d].inet = nil
                images[k].unsupported.append(line)
            }
        }
        return skip ? [] : refused
    }
}
