import Syscall

extension ProcessImage {
    /// One TCP connection of a tree (established or half-closed) whose peer is outside it: where it is, and the
    /// connection as a packet filter holds it.
    public struct OutsideConnection: Sendable, Equatable {
        public var pid: Int32
        public var fd: Int32
        public var connection: PacketFilter.Connection
    }

    /// The TCP connections (established or half-closed) of `images` (one tree) whose peer socket no process of
    /// the tree holds: a restart cannot make their peer, and once the process is gone the peer
    /// would be reset unless their packets are held (`cpx --kill` holds them).
    public static func outsideConnections(_ images: [ProcessImage]) -> [OutsideConnection] {
        var ends: Set<PacketFilter.Connection> = []
        for image in images {
            for descriptor in image.descriptors {
                if let connection = descriptor.inet.flatMap(Self.established) { ends.insert(connection) }
            }
        }
        var outside: [OutsideConnection] = []
        for image in images {
            for descriptor in image.descriptors {
                guard let connection = descriptor.inet.flatMap(Self.established) else { continue }
                if !ends.contains(connection.reversed) {
                    outside.append(OutsideConnection(pid: image.pid, fd: descriptor.fd, connection: connection))
                }
            }
        }
        return outside
    }

    private static func established(_ inet: InetSocket) -> PacketFilter.Connection? {
        guard inet.state.isConnection, inet.transport == .tcp, let local = inet.local, let remote = inet.remote
        else { return nil }
        return PacketFilter.Connection(
            localHost: local.host, localPort: local.port, remoteHost: remote.host, remotePort: remote.port)
    }
}
