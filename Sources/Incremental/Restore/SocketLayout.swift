#if canImport(Glibc)
import Glibc
#endif

/// Which process of a tree makes each UNIX socket, decided from the images alone. Sockets
/// connected to each other (a pair, a datagram socket and the named one it is connected to)
/// are made together, by one process: the first of the tree that holds one of them. A socket
/// another process holds is kept for it, which takes it (pidfd_getfd) in its own
/// `SocketPhase`, run after this one's (the phases run process by process, parents first).
public struct SocketLayout: Sendable {
    /// One socket of the tree: its record (with its queue) and who holds it where.
    public struct Record: Sendable, Equatable {
        /// The process holding it (its own open file: not one inherited from an earlier one).
        public var holder: Int32
        public var socket: ProcessImage.UnixSocket
        /// Its descriptors in `holder`, lowest first.
        public var descriptors: [SocketPhase.Placement]
        /// O_NONBLOCK and the other F_SETFL flags of its open file.
        public var statusFlags: Int32
    }

    public var records: [UInt64: Record] = [:]
    /// Every socket's inode, in the order its holders list them, processes in tree order.
    public var order: [UInt64] = []
    /// The process that makes each socket.
    public var creators: [UInt64: Int32] = [:]

    public init(_ processes: [ProcessImage]) {
        for process in processes {
            let sockets = process.descriptors.filter { $0.kind == .socket && $0.socket != nil && $0.inherited == nil }
            for descriptor in sockets.sorted(by: { $0.fd < $1.fd }) {
                guard let socket = descriptor.socket else { continue }
                let placement = SocketPhase.Placement(fd: descriptor.fd, closeOnExec: descriptor.flags & O_CLOEXEC != 0)
                if var record = records[socket.inode] {
                    record.descriptors.append(placement)
                    if record.socket.queue == nil { record.socket.queue = socket.queue }
                    records[socket.inode] = record
                } else {
                    records[socket.inode] = Record(
                        holder: process.pid, socket: socket, descriptors: [placement],
                        statusFlags: descriptor.flags & DescriptorPhase.statusFlags)
                    order.append(socket.inode)
                }
            }
        }
        var parent: [UInt64: UInt64] = [:]
        func root(_ inode: UInt64) -> UInt64 {
            var at = inode
            while let up = parent[at], up != at { at = up }
            return at
        }
        // Joined: a socket and its peer; an accepted socket and its listener; a socket waiting
        // in a listener's accept queue and that listener (the listener's maker connects them).
        for inode in order {
            guard let socket = records[inode]?.socket else { continue }
            for other in [socket.peer, socket.acceptedFrom ?? 0, socket.pendingOn ?? 0]
            where other != 0 && records[other] != nil {
                let (a, b) = (root(inode), root(other))
                if a != b { parent[b] = a }
            }
        }
        var makers: [UInt64: Int32] = [:]
        for inode in order {
            guard let holder = records[inode]?.holder else { continue }
            let group = root(inode)
            if makers[group] == nil { makers[group] = holder }
            creators[inode] = makers[group]
        }
    }

    /// What a restart cannot make as it was, one line each: a socket whose SO_PEERCRED names a
    /// process other than the one that makes it, or whose peer is in none of the images.
    public var refusals: [String] {
        order.compactMap { inode in
            guard let record = records[inode], let creator = creators[inode] else { return nil }
            let who = "process \(record.holder): socket:[\(inode)]"
            if record.socket.peer != 0, records[record.socket.peer] == nil {
                return "\(who): its peer socket:[\(record.socket.peer)] is held by no process of the checkpoint"
            }
            for listener in [record.socket.acceptedFrom, record.socket.pendingOn].compactMap({ $0 }) {
                guard let listening = records[listener]?.socket, listening.listening == true else {
                    return "\(who): the listening socket:[\(listener)] it was connected through is held by no "
                        + "process of the checkpoint"
                }
            }
            if let pid = record.socket.peerPid, pid != creator {
                return "\(who): its peer credentials (SO_PEERCRED) name pid \(pid), where a restart makes it in "
                    + "process \(creator) (the first of the tree to hold it or a socket connected to it)"
            }
            return nil
        }
    }

    /// The sockets process `pid` makes, in order.
    func made(by pid: Int32) -> [Record] {
        order.compactMap { creators[$0] == pid ? records[$0] : nil }
    }

    /// The sockets process `pid` holds that another process makes.
    func taken(by pid: Int32) -> [Record] {
        order.compactMap { inode in
            guard let record = records[inode], record.holder == pid, creators[inode] != pid else { return nil }
            return record
        }
    }
}
