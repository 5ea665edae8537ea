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

    /// The TCP connections of `images` made again closed (`InetSocket.State.closed`): each
    /// with the connection it had.
    public static func closedConnections(_ images: [ProcessImage]) -> [OutsideConnection] {
        images.flatMap { image in
            image.descriptors.compactMap { descriptor in
                guard let inet = descriptor.inet, inet.state == .closed, let local = inet.local,
                    let remote = inet.remote
                else { return nil }
                return OutsideConnection(
                    pid: image.pid, fd: descriptor.fd,
                    connection: PacketFilter.Connection(
                        localHost: local.host, localPort: local.port, remoteHost: remote.host, remotePort: remote.port))
            }
        }
    }

    /// This image (and its tree) with every TCP connection, established or half closed, to be
    /// made again closed (`ld-chpox --tcp-close`): its state dropped, its addresses kept to say
    /// which it was.
    public func closingConnections() -> ProcessImage {
        var image = self
        image.descriptors = descriptors.map(Self.closing)
        image.tree = tree?.map { member in
            var member = member
            member.descriptors = member.descriptors.map(Self.closing)
            return member
        }
        return image
    }

    private static func closing(_ descriptor: Descriptor) -> Descriptor {
        guard let inet = descriptor.inet, inet.transport == .tcp, inet.state.isConnection else { return descriptor }
        var descriptor = descriptor
        descriptor.inet?.close()
        return descriptor
    }

    private static func established(_ inet: InetSocket) -> PacketFilter.Connection? {
        guard inet.state.isConnection, inet.transport == .tcp, let local = inet.local, let remote = inet.remote
        else { return nil }
        return PacketFilter.Connection(
            localHost: local.host, localPort: local.port, remoteHost: remote.host, remotePort: remote.port)
    }
}

extension ProcessImage.InetSocket {
    /// Made again closed, not connected (`State.closed`): the connection's state is dropped,
    /// its addresses kept.
    public mutating func close() {
        state = .closed
        connection = nil
        readShutdown = nil
        writeShutdown = nil
    }
}
