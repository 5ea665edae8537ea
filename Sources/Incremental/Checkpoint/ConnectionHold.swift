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
/// A rule must never hold a connection a process still has open once the run that made it has
/// gone: one left by a cpx that died before the kill is found by the next cpx or ld-chpox
/// (`releaseStale`) and removed; one whose cpx still runs (`PacketFilter.Owner`) is its own.
enum ConnectionHold {
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
            try PacketFilter.hold(Array(outside))
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
            try PacketFilter.hold(Array(late))
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
        problems += awaitClosed(Set(outside.map(\.connection)))
        return (outside.map(\.connection), problems)
    }

    /// Waits until no process holds a socket of `connections` any more. The killed processes
    /// close their sockets as they exit, a while after SIGKILL (every thread stops first): a
    /// run beside this one that looked in between, once this cpx has exited, would see the
    /// connections open and take their holds for stale (`releaseStale`), and the peer would be
    /// reset. Returns what is still open after 10 s.
    static func awaitClosed(_ connections: Set<PacketFilter.Connection>) -> [String] {
        let deadline = ClockTime.monotonic() + 10_000_000_000
        var open = connections
        while true {
            open = connections.intersection(EstablishedConnections.sockets().filter(\.isHeld).map(\.connection))
            if open.isEmpty || ClockTime.monotonic() > deadline { break }
            CurrentProcess.sleep(microseconds: 2000)
        }
        return open.sorted { $0.description < $1.description }.map {
            "the connection \($0) still had its socket open 10 s after the kill: a cpx or ld-chpox run may "
                + "take its hold for stale and release it before the restart"
        }
    }

    /// Removes the hold rules that hold nothing to wait for: those whose connection a process
    /// has open again (or still: left by a cpx that died between holding and killing, or by a
    /// restart that made the socket and died before releasing it), and those whose peer is on
    /// this host's loopback and has no socket left (its program ended: no restart can resume
    /// the connection). A rule whose owner still runs is never stale: a cpx holds a connection
    /// still open until its kill, a restart makes the socket before it releases the hold, and a
    /// run beside them (another cpx, another ld-chpox) must not take their holds away, which
    /// would have the peer reset. Returns the connections released.
    @discardableResult
    static func releaseStale() -> Set<PacketFilter.Connection> {
        guard let rules = try? PacketFilter.rules(), !rules.isEmpty else { return [] }
        let released = try? PacketFilter.release { rules in
            // The owners first, then the sockets: a socket seen open before its owner was seen
            // gone may be one that owner has killed and closed since.
            let ownerless = rules.filter { !($0.owner?.isAlive ?? false) }
            guard !ownerless.isEmpty else { return [] }
            let sockets = EstablishedConnections.sockets()
            let open = Set(sockets.filter(\.isHeld).map(\.connection))
            let present = Set(sockets.map(\.connection))
            return ownerless.filter { rule in
                open.contains(rule.connection)
                    || (isLoopback(rule.connection.remoteHost) && !present.contains(rule.connection.reversed))
            }
        }
        return released ?? []
    }

    static func isLoopback(_ host: String) -> Bool { host.hasPrefix("127.") || host == "::1" }
}
