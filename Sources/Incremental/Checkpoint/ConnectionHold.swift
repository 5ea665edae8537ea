#if canImport(Glibc)
import Glibc
#endif
import Syscall

/// `cpx --kill` of a tree with TCP connections to peers outside it (`--tcp-established`): the
/// tree is killed with those connections held for its restart, as CRIU's --tcp-established
/// dump does. Each socket is kept alive through a copy in cpx (pidfd_getfd) while the tree is
/// killed, then put in repair mode and closed: a socket closed in repair mode sends nothing
/// (no FIN, no reset). Meanwhile every packet of each connection, both ways, is dropped by a
/// rule (`PacketFilter`), so the kernel does not answer the peer's next segment with a reset;
/// the peer retransmits until the restart (`ld-chpox`) makes the socket again and releases
/// the rule.
///
/// A rule must never hold a connection a process still has open: one left by a cpx that died
/// before the kill is found by the next cpx or ld-chpox (`releaseStale`) and removed.
enum ConnectionHold {
    /// Kills `members` (stopped) with the outside connections of `images` held. Throws, with
    /// nothing held and the members still alive and stopped, when the hold cannot be made;
    /// returns what went wrong after the kill (a socket that could not enter repair mode).
    static func kill(_ members: [Int32], images: [ProcessImage]) throws(CheckpointError) -> [String] {
        var seen: Set<PacketFilter.Connection> = []
        let outside = ProcessImage.outsideConnections(images).filter { seen.insert($0.connection).inserted }
        guard !outside.isEmpty else {
            for member in members { try? Signal.send(SIGKILL, to: member) }
            return []
        }
        var copies: [(connection: PacketFilter.Connection, socket: FileDescriptor)] = []
        func closeCopies() { for copy in copies { copy.socket.close() } }
        for held in outside {
            do {
                let process = try ProcessDescriptor.open(held.pid)
                defer { process.close() }
                copies.append((held.connection, try process.copyDescriptor(held.fd)))
            } catch {
                closeCopies()
                throw .process(
                    .unsupported(
                        pid: held.pid,
                        reason: "cannot take fd \(held.fd) to hold its connection "
                            + "\(held.connection) (\(error)): the process was not killed"))
            }
        }
        do {
            try PacketFilter.hold(outside.map(\.connection))
        } catch {
            closeCopies()
            throw .process(
                .unsupported(
                    pid: members.first ?? 0,
                    reason: "cannot hold its connections to peers "
                        + "outside the tree for the restart (\(error)): the process was not killed; without --kill, cpx "
                        + "leaves it running"))
        }
        for member in members { try? Signal.send(SIGKILL, to: member) }
        var problems: [String] = []
        for copy in copies {
            do { try copy.socket.setSocketOption(TCPRepair.repair, to: 1) } catch {
                problems.append(
                    "the connection \(copy.connection) could not enter repair mode (\(error)): it was "
                        + "closed (its packets are held, but the restart may find its address still in use)")
            }
            copy.socket.close()
        }
        return problems
    }

    /// Removes the hold rules that hold nothing to wait for: those whose connection a process
    /// has open again (or still: left by a cpx that died between holding and killing, or by a
    /// restart that made the socket and died before releasing it), and those whose peer is on
    /// this host's loopback and has no socket left (its program ended: no restart can resume
    /// the connection). Returns the connections released.
    @discardableResult
    static func releaseStale() -> Set<PacketFilter.Connection> {
        guard let rules = try? PacketFilter.rules(), !rules.isEmpty else { return [] }
        let sockets = EstablishedConnections.sockets()
        let open = Set(sockets.filter(\.isHeld).map(\.connection))
        let present = Set(sockets.map(\.connection))
        let stale = Set(rules.map(\.connection)).filter { connection in
            let peer = PacketFilter.Connection(
                localHost: connection.remoteHost, localPort: connection.remotePort,
                remoteHost: connection.localHost, remotePort: connection.localPort)
            return open.contains(connection) || (isLoopback(connection.remoteHost) && !present.contains(peer))
        }
        return (try? PacketFilter.release(stale)) ?? []
    }

    static func isLoopback(_ host: String) -> Bool { host.hasPrefix("127.") || host == "::1" }
}
