#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

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
/// before the kill is found by the next cpx or ld-chpox (`releaseStale`) and removed. Each
/// rule names the run that made it (`PacketFilter.Owner`): while that runs, its rules are its
/// own (a cpx holds before it kills, a restart while it makes the sockets), and no other run
/// removes them.
enum ConnectionHold {
    /// This process as the owner of the rules it makes.
    static let me: PacketFilter.Owner? = (try? ProcFS.stat(getpid())).map {
        PacketFilter.Owner(pid: getpid(), startTicks: $0.startTicks)
    }

    /// True while the run that made a rule runs.
    static func runs(_ owner: PacketFilter.Owner) -> Bool {
        (try? ProcFS.stat(owner.pid))?.startTicks == owner.startTicks
    }

    /// Holds the TCP connections of the tree `pids` whose peer socket is not in the tree (as
    /// the kernel lists them now, before the tree is frozen and read). Returns them.
    static func holdOutside(_ pids: [Int32]) throws(CheckpointError) -> Set<PacketFilter.Connection> {
        var inodes: Set<UInt64> = []
        for pid in pids {
            for fd in (try? ProcFS.descriptors(pid)) ?? [] {
                guard let target = ProcFS.descriptorTarget(pid, fd), target.hasPrefix("socket:["),
                    let inode = UInt64(target.dropFirst(8).dropLast())
                else { continue }
                inodes.insert(inode)
            }
        }
        let tree = EstablishedConnections.sockets().filter { $0.isHeld && inodes.contains($0.inode) }
        let ends = Set(tree.map(\.connection))
        let outside = Set(tree.map(\.connection).filter { !ends.contains($0.reversed) })
        do {
            try PacketFilter.hold(Array(outside), owner: me)
        } catch {
            throw .process(
                .unsupported(
                    pid: pids.first ?? 0,
                    reason: "cannot hold its connections to peers outside the tree for the restart (\(error)): "
                        + "nothing was checkpointed; without --kill, cpx leaves it running and holds nothing"))
        }
        return outside
    }

    /// Kills `members` (stopped) with the outside connections of `images` held (`held`, and
    /// any the tree opened since). Throws, with the members still alive and stopped, when the
    /// hold cannot be made (the caller releases `held`); returns the connections held for the
    /// restart and what went wrong after the kill (a socket that could not enter repair mode).
    static func kill(
        _ members: [Int32], images: [ProcessImage], held: Set<PacketFilter.Connection>
    ) throws(CheckpointError) -> (held: [PacketFilter.Connection], problems: [String]) {
        var seen: Set<PacketFilter.Connection> = []
        let outside = ProcessImage.outsideConnections(images).filter { seen.insert($0.connection).inserted }
        var copies: [(connection: PacketFilter.Connection, socket: FileDescriptor)] = []
        func closeCopies() { for copy in copies { copy.socket.close() } }
        for connection in outside {
            do {
                let process = try ProcessDescriptor.open(connection.pid)
                defer { process.close() }
                copies.append((connection.connection, try process.copyDescriptor(connection.fd)))
            } catch {
                closeCopies()
                throw .process(
                    .unsupported(
                        pid: connection.pid,
                        reason: "cannot take fd \(connection.fd) to hold its connection \(connection.connection) "
                            + "(\(error)): the process was not killed"))
            }
        }
        let late = seen.subtracting(held)
        do {
            try PacketFilter.hold(Array(late), owner: me)
        } catch {
            closeCopies()
            throw .process(
                .unsupported(
                    pid: members.first ?? 0,
                    reason: "cannot hold its connections to peers outside the tree for the restart (\(error)): "
                        + "the process was not killed; without --kill, cpx leaves it running"))
        }
        // Held but not in the image (closed meanwhile): nothing to wait for.
        _ = try? PacketFilter.release(held.subtracting(seen))
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
        return (outside.map(\.connection), problems)
    }

    /// Removes the hold rules that hold nothing to wait for: those whose connection a process
    /// has open again (or still: left by a cpx that died between holding and killing, or by a
    /// restart that made the socket and died before releasing it), and those whose peer is on
    /// this host's loopback and has no socket left (its program ended: no restart can resume
    /// the connection). A connection that a running cpx or ld-chpox holds is its, whatever its
    /// socket: that run releases it. Returns the connections released.
    @discardableResult
    static func releaseStale() -> Set<PacketFilter.Connection> {
        guard let rules = try? PacketFilter.rules(), !rules.isEmpty else { return [] }
        let owned = Set(rules.filter { $0.owner.map(runs) ?? false }.map(\.connection))
        let sockets = EstablishedConnections.sockets()
        let open = Set(sockets.filter(\.isHeld).map(\.connection))
        let present = Set(sockets.map(\.connection))
        let stale = Set(rules.map(\.connection)).subtracting(owned).filter { connection in
            open.contains(connection) || (isLoopback(connection.remoteHost) && !present.contains(connection.reversed))
        }
        return (try? PacketFilter.release(stale)) ?? []
    }

    /// The held connections of `images` made this process's (a restart's, while it makes their
    /// sockets): a rule naming it is added beside each, so no other run removes the hold before
    /// the restart releases it. Connections not held now stay so.
    static func adopt(_ images: [ProcessImage]) {
        let outside = Set(ProcessImage.outsideConnections(images).map(\.connection))
        guard !outside.isEmpty, let rules = try? PacketFilter.rules() else { return }
        let held = Set(rules.map(\.connection)).intersection(outside)
        try? PacketFilter.hold(Array(held), owner: me)
    }

    static func isLoopback(_ host: String) -> Bool { host.hasPrefix("127.") || host == "::1" }
}
