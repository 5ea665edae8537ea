#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// Reads the sockets of a frozen process. A UNIX socket whose peer is another socket of the
/// process or of its tree connected back to it (socketpair(2)), or whose peer was closed, or
/// that is connected to none (bound or not, listening or not), or a datagram socket connected
/// to a named socket of the tree, is recorded with its type, name, shutdown state and the
/// messages queued to it, read without consuming them: on a copy of the
/// descriptor (pidfd_getfd(2)), SO_PEEK_OFF set to 0 and MSG_PEEK repeated, then SO_PEEK_OFF
/// put back, so the process's queue is left as it was. The kernel's sock_diag names the peer.
/// Any other socket is refused, each with its own reason.
///
/// What a peek cannot tell: an empty datagram or seqpacket message that was peeked once is
/// skipped by every later peek at an offset (the kernel marks it peeked). With the peer alive
/// its send memory shows one is missing (refused); with the peer closed there is nothing to
/// compare with, and such a message, peeked by an earlier checkpoint, is not recorded.
final class SocketCapture {
    enum Outcome {
        case socket(ProcessImage.UnixSocket)
        /// An IPv4 or IPv6 socket (`InetSocketCapture`).
        case inet(ProcessImage.InetSocket)
        case refused(String)
    }

    let pid: Int32
    /// The socket inodes the process holds, each with its lowest descriptor.
    private let held: [UInt64: Int32]
    /// The socket inodes the other processes of its tree hold, each with one that holds it.
    private let elsewhere: [UInt64: Int32]
    /// The other processes of its tree.
    private let tree: [Int32]
    /// The sockets whose peer is outside the tree that the user named (`cpx --external-unix`).
    private let externalUnix: [ExternalUnix]
    /// The files in flight read so far (cpx's copies, kept open until the end so that kcmp
    /// tells when one is in flight again), each with its record.
    private var inFlight: [(copy: FileDescriptor, file: ProcessImage.UnixSocket.InFlightFile)] = []
    private var process: ProcessDescriptor?
    /// Sockets already recorded (their queue on their first descriptor): a later descriptor
    /// on one gets the same record without its queue.
    private var recorded: [UInt64: Outcome] = [:]
    /// Where queued messages are peeked into, one for every socket of the process.
    private lazy var buffer = [UInt8](repeating: 0, count: Self.messageLimit)

    /// The longest message a queue may hold; a longer one is refused (its boundary would be lost).
    static let messageLimit = 4 << 20
    /// The most bytes one socket's queue may hold in the image.
    static let queueLimit = 256 << 20

    /// The sockets of `pid`; `tree` lists the other processes checkpointed with it.
    init(_ pid: Int32, tree: [Int32] = [], externalUnix: [ExternalUnix] = []) {
        self.pid = pid
        self.externalUnix = externalUnix
        var held: [UInt64: Int32] = [:]
        for fd in (try? ProcFS.descriptors(pid)) ?? [] {
            guard let inode = ProcFS.descriptorTarget(pid, fd).flatMap(Self.inode(of:)) else { continue }
            held[inode] = min(held[inode] ?? fd, fd)
        }
        self.held = held
        var elsewhere: [UInt64: Int32] = [:]
        for other in tree where other != pid {
            for fd in (try? ProcFS.descriptors(other)) ?? [] {
                guard let inode = ProcFS.descriptorTarget(other, fd).flatMap(Self.inode(of:)) else { continue }
                if elsewhere[inode] == nil { elsewhere[inode] = other }
            }
        }
        self.elsewhere = elsewhere
        self.tree = tree.filter { $0 != pid }
    }

    deinit {
        process?.close()
        for file in inFlight { file.copy.close() }
    }

    /// The inode of a /proc/PID/fd link that reads "socket:[inode]"; nil for anything else.
    static func inode(of target: String) -> UInt64? {
        guard target.hasPrefix("socket:["), target.hasSuffix("]") else { return nil }
        return UInt64(target.dropFirst("socket:[".count).dropLast())
    }

    /// nil when `target` (the fd's /proc link) is not a socket.
    func capture(_ fd: Int32, target: String) -> Outcome? {
        guard let inode = Self.inode(of: target) else { return nil }
        if let earlier = recorded[inode] {
            guard case .socket(var socket) = earlier else { return earlier }
            socket.queue = nil
            return .socket(socket)
        }
        let outcome = read(fd, inode: inode)
        recorded[inode] = outcome
        return outcome
    }

    private func read(_ fd: Int32, inode: UInt64) -> Outcome {
        let copy: FileDescriptor
        do {
            if process == nil { process = try ProcessDescriptor.open(pid) }
            guard let process else { return .refused("its process cannot be opened") }
            copy = try process.copyDescriptor(fd)
        } catch {
            return .refused("pidfd_getfd cannot copy it to read it (\(error))")
        }
        defer { copy.close() }
        do throws(Errno) {
            let domain = try copy.socketOption(.domain)
            if domain == AF_INET || domain == AF_INET6 {
                switch InetSocketCapture.capture(copy, domain: domain, inode: inode, pid: pid) {
                case .success(let socket): return .inet(socket)
                case .failure(let refusal): return .refused(refusal.reason)
                }
            }
            guard domain == AF_UNIX else {
                return .refused(
                    "\(Self.familyName(domain)) socket: only UNIX sockets are restored")
            }
            let typeNumber = try copy.socketOption(.type)
            let types: [Int32: ProcessImage.UnixSocket.SocketType] = [
                Int32(SOCK_STREAM.rawValue): .stream, Int32(SOCK_DGRAM.rawValue): .datagram,
                Int32(SOCK_SEQPACKET.rawValue): .seqpacket,
            ]
            guard let type = types[typeNumber] else { return .refused("a UNIX socket of type \(typeNumber)") }
            let diagnosis: UnixSocketDiagnosis
            do {
                diagnosis = try UnixSocketDiagnosis.of(inode: inode)
            } catch let error where error.rawValue == ENOENT {
                return .refused("sock_diag does not find it (a socket of another network namespace?)")
            }
            var socket = ProcessImage.UnixSocket(inode: inode, type: type, peer: 0)
            if let name = diagnosis.name, !name.isEmpty {
                socket.name = Data(name)
                if name[0] != 0 {
                    switch boundFile(name, diagnosis) {
                    case .success(let file): socket.file = file
                    case .failure(let refusal): return .refused(refusal.reason)
                    }
                }
            }
            var external: ProcessImage.UnixSocket.External?
            if !diagnosis.isListening, let peer = diagnosis.peer, peer != 0, held[UInt64(peer)] == nil,
                elsewhere[UInt64(peer)] == nil
            {
                switch externalRecord(inode: inode, peer: UInt64(peer), socket, diagnosis) {
                case .success(let record): external = record
                case .failure(let refusal): return .refused(refusal.reason)
                }
            }
            let credentials = try copy.peerCredentials()
            if credentials.pid != 0, external == nil {
                guard credentials.pid == pid || elsewhere.values.contains(credentials.pid) else {
                    return .refused(
                        "its peer credentials (SO_PEERCRED) name pid \(credentials.pid), a process outside the "
                            + "checkpoint (it made the pair or listened); a restart would name another")
                }
                socket.peerCredentials = [credentials.user, credentials.group]
                socket.peerPid = credentials.pid
            }
            if diagnosis.isListening {
                // sock_diag names each waiting connection by its client's inode (0: closed).
                let waiting = diagnosis.pending?.map(UInt64.init) ?? []
                if diagnosis.pending == nil, let count = diagnosis.queuedBytes, count > 0 {
                    return .refused(
                        "\(count) connections wait in its accept queue, and sock_diag does not say whose: not restored")
                }
                if let outside = waiting.first(where: { held[$0] == nil && elsewhere[$0] == nil }) {
                    return .refused(
                        "a connection waits in its accept queue (connected, not accepted yet) from "
                            + (outside == 0 ? "a socket closed since" : "socket:[\(outside)], outside the checkpoint")
                            + ": only connections from sockets of the checkpointed tree are made again")
                }
                if !waiting.isEmpty { socket.pending = waiting }
                socket.listening = true
                socket.backlog = Int32(truncatingIfNeeded: diagnosis.sentMemory ?? 0)
                socket.unconnected = true
            } else if let external {
                socket.external = external
            } else {
                switch diagnosis.peer {
                case nil: socket.unconnected = true
                case 0?:
                    // A stream's closed peer shut it down both ways; one that was not is connected
                    // to a socket of a listener's accept queue (sock_diag names no inode for it).
                    if type != .datagram, diagnosis.shutdown != 3 {
                        guard let listener = listener(waitingFor: inode) else {
                            return .refused(
                                "it is connected to a listening socket outside the checkpoint that has not accepted it "
                                    + "yet: a connection in an accept queue is made again only to a listener of the "
                                    + "tree")
                        }
                        // What it sent waits in a socket no process holds (the one accept will
                        // return): it cannot be read.
                        let sent = try copy.queueLength(.unacknowledged)
                        guard sent == 0 else {
                            return .refused(
                                "it is connected to listening socket \(listener), which has not accepted it yet, and "
                                    + "sent data meanwhile (\(sent) bytes of queue memory, SIOCOUTQ): what waits in a "
                                    + "connection not accepted yet is not restored")
                        }
                        socket.pendingOn = listener
                    }
                case let peer?:
                    switch peerKind(inode: inode, UInt64(peer), type: type) {
                    case .failure(let refusal): return .refused(refusal.reason)
                    case .success(let oneWay):
                        socket.peer = UInt64(peer)
                        if oneWay {
                            socket.oneWay = true
                            socket.peerCredentials = nil
                            socket.peerPid = nil
                        }
                    }
                }
                if type != .datagram, diagnosis.state == UnixSocketDiagnosis.established, let name = socket.name,
                    socket.peer != 0, let listener = listener(named: [UInt8](name), like: diagnosis, besides: inode)
                {
                    socket.acceptedFrom = listener
                } else if type != .datagram, diagnosis.state == UnixSocketDiagnosis.established,
                    let name = socket.name, socket.pendingOn == nil  // bound, then connected: bound again first
                {
                    return .refused(
                        "a connected UNIX \(type.rawValue) socket with the name \(Self.address([UInt8](name))) "
                            + "(accepted from a listening socket, or bound before it connected): a restart makes "
                            + "the pair without names")
                }
            }
            if diagnosis.shutdown & UnixSocketDiagnosis.receiveShutdown != 0 { socket.readShutdown = true }
            if diagnosis.shutdown & UnixSocketDiagnosis.sendShutdown != 0 { socket.writeShutdown = true }
            let events = try copy.readyEvents()
            if events.contains(.priority) {
                return .refused("out-of-band data (MSG_OOB) is queued in it, which is not restored")
            }
            if events.contains(.error) {
                // A stream's peer closed with data unread in it leaves ECONNRESET here; nothing
                // else is made again.
                guard socket.peer == 0, type == .stream, socket.unconnected != true else {
                    // A datagram or seqpacket receive returns (and clears) the error before any
                    // message, a peek too: the queue cannot be read without changing the socket.
                    return .refused(
                        "an error is pending on it (SO_ERROR), which a restart cannot set again and which "
                            + "reading its queue would clear")
                }
                socket.resetPending = true
            }
            if try copy.socketOption(.passCredentials) != 0 { socket.passCredentials = true }
            if try copy.socketOption(.passSecurity) != 0 { socket.passSecurity = true }
            if try copy.socketOption(.reuseAddress) != 0 { socket.reuseAddress = true }
            let defaults = try Self.defaultBuffers(typeNumber)
            let buffers = (try copy.socketOption(.sendBuffer), try copy.socketOption(.receiveBuffer))
            if buffers.0 != defaults.0 { socket.sendBuffer = buffers.0 }
            if buffers.1 != defaults.1 { socket.receiveBuffer = buffers.1 }
            let peekOffset = try copy.socketOption(.peekOffset)
            if peekOffset >= 0 { socket.peekOffset = peekOffset }
            // A listener's queue holds connections; an unconnected stream's holds nothing.
            guard socket.unconnected != true || type == .datagram else { return .socket(socket) }
            switch try queue(of: copy, socket, peekOffset: peekOffset, queued: Int(diagnosis.queuedBytes ?? 0)) {
            case .success(let (messages, senders, rights)):
                // A message comes with its sender's name: the pair's other end's, which the
                // restart sends it from; none, where it is sent from an unnamed socket.
                let partnerName =
                    socket.peer != 0 && socket.oneWay != true
                    ? self.diagnosis(socket.peer)?.name ?? [] : []
                if let other = senders.first(where: { $0 != partnerName && !$0.isEmpty }) {
                    return .refused(
                        "a message from \(Self.address(other)) is queued in it: the address it came from is not "
                            + "restored")
                }
                if type != .stream, socket.oneWay != true,
                    let refusal = unseenRefusal(messages, socket, typeNumber: typeNumber)
                {
                    return .refused(refusal)
                }
                socket.queue = messages
                if !rights.isEmpty { socket.rights = rights }
            case .failure(let refusal): return .refused(refusal.reason)
            }
            return .socket(socket)
        } catch {
            return .refused("its state cannot be read (\(error))")
        }
    }

    /// sock_diag's view of the sockets of the tree, read once each.
    private var diagnoses: [UInt64: UnixSocketDiagnosis?] = [:]

    private func diagnosis(_ inode: UInt64) -> UnixSocketDiagnosis? {
        if let known = diagnoses[inode] { return known }
        let read = try? UnixSocketDiagnosis.of(inode: inode)
        diagnoses[inode] = read
        return read
    }

    /// The listening socket of the tree whose accept queue holds a connection from `client`.
    private func listener(waitingFor client: UInt64) -> UInt64? {
        for inode in Array(held.keys) + Array(elsewhere.keys) {
            guard let other = diagnosis(inode), other.isListening, other.pending?.contains(UInt32(client)) == true
            else { continue }
            return inode
        }
        return nil
    }

    /// The listening socket of the tree that an accepted socket bearing `name` came from: the
    /// one bound to that name (a path's: to the same socket file, as sock_diag says).
    private func listener(named name: [UInt8], like accepted: UnixSocketDiagnosis, besides inode: UInt64) -> UInt64? {
        for candidate in Array(held.keys) + Array(elsewhere.keys) where candidate != inode {
            guard let other = diagnosis(candidate), other.isListening, other.name == name else { continue }
            if name.first != 0 {
                guard other.fileInode == accepted.fileInode, other.fileDevice == accepted.fileDevice else { continue }
            }
            return candidate
        }
        return nil
    }

    /// A socket connected to `peer`, a socket outside the tree: what the user said to do with it
    /// (`cpx --external-unix`, by the path the peer is bound to or by the socket's inode), or a
    /// refusal naming the socket, its peer and the option. Reconnecting takes a peer bound to an
    /// absolute path, nothing queued either way and no shutdown: what was queued would be lost.
    private func externalRecord(
        inode: UInt64, peer: UInt64, _ socket: ProcessImage.UnixSocket, _ diagnosis: UnixSocketDiagnosis
    ) -> Result<ProcessImage.UnixSocket.External, Refusal> {
        let other = self.diagnosis(peer)
        let peerName = other?.name ?? []
        let path =
            peerName.first.map { $0 != 0 } == true ? String(decoding: peerName.prefix { $0 != 0 }, as: UTF8.self) : nil
        let holder = Self.holder(of: peer, besides: pid)
        let who = holder.map { "in process \($0) outside the tree" } ?? "in no process (a descriptor in flight?)"
        let shownPeer =
            path.map { "socket:[\(peer)] bound to \($0), \(who)" }
            ?? (peerName.isEmpty
                ? "socket:[\(peer)], unnamed, \(who)"
                : "socket:[\(peer)] bound to \(Self.address(peerName)), \(who)")
        let what = "UNIX \(socket.type.rawValue) socket:[\(inode)] connected to \(shownPeer)"
        let named = externalUnix.last { spec in
            switch spec.target {
            case .inode(let named): named == inode
            case .peerPath(let named): named == path
            case .any: true
            }
        }
        guard let named else {
            let options =
                path.map { "--external-unix \($0)=reconnect (connect to it again at the restart) or =close" }
                ?? "--external-unix unix:\(inode)=close"
            return .failure(
                Refusal(
                    reason: "\(what): its peer is not checkpointed; name it external with cpx \(options) (it comes "
                        + "back with its peer closed), or checkpoint their common ancestor's tree"))
        }
        guard socket.name == nil else {
            return .failure(
                Refusal(
                    reason: "\(what), named external (\(named)): it is bound to "
                        + "\(Self.address([UInt8](socket.name ?? Data()))), which an external socket does not keep"))
        }
        var record = ProcessImage.UnixSocket.External(action: named.action, path: path, peerPid: holder)
        guard named.action == .reconnect else { return .success(record) }
        guard let path, path.hasPrefix("/") else {
            return .failure(
                Refusal(
                    reason: "\(what), named external to reconnect (\(named)): only a peer bound to an absolute path "
                        + "is connected to again (use =close)"))
        }
        let mine = Int(diagnosis.queuedBytes ?? 0)
        let theirs = Int(other?.queuedBytes ?? 0)
        guard mine == 0, theirs == 0, other != nil else {
            return .failure(
                Refusal(
                    reason: "\(what), named external to reconnect (\(named)): \(mine) bytes wait in it to be read and "
                        + "\(theirs) in its peer: data queued in either direction is lost by a new connection, so "
                        + "it is reconnected only with both queues empty (checkpoint again, or use =close)"))
        }
        guard diagnosis.shutdown == 0 else {
            return .failure(
                Refusal(
                    reason: "\(what), named external to reconnect (\(named)): it was shut down (shutdown(2)), which "
                        + "a new connection would not be"))
        }
        record.path = path
        return .success(record)
    }

    /// How a socket is connected to `peer` (a live socket): false when `peer` is connected back
    /// to it (a pair), true when it is a datagram socket connected to `peer`, a named socket of
    /// the tree connected elsewhere (`oneWay`); a refusal otherwise.
    private func peerKind(
        inode: UInt64, _ peer: UInt64, type: ProcessImage.UnixSocket.SocketType
    )
        -> Result<Bool, Refusal>
    {
        guard held[peer] != nil || elsewhere[peer] != nil else {
            if let holder = Self.holder(of: peer, besides: pid) {
                return .failure(
                    Refusal(
                        reason: "its peer socket:[\(peer)] is in process \(holder), which is not checkpointed with it "
                            + "(checkpoint their common ancestor's tree)"))
            }
            return .failure(Refusal(reason: "its peer socket:[\(peer)] is in no process (a descriptor in flight?)"))
        }
        guard let back = diagnosis(peer) else {
            return .failure(Refusal(reason: "its peer socket:[\(peer)] cannot be read by sock_diag"))
        }
        if back.peer.map(UInt64.init) == inode, peer != inode { return .success(false) }
        guard type == .datagram, let name = back.name, !name.isEmpty else {
            return .failure(
                Refusal(
                    reason: "its peer socket:[\(peer)] is connected to another socket and has no name to connect to "
                        + "again"))
        }
        return .success(true)
    }

    /// The socket file of path `name` (relative names from the process's working directory):
    /// its owner and mode when it is the one the socket made (sock_diag's file), else marked
    /// deleted (unlinked since, or replaced).
    private func boundFile(
        _ name: [UInt8], _ diagnosis: UnixSocketDiagnosis
    ) -> Result<
        ProcessImage.UnixSocket.BoundFile, Refusal
    > {
        let path = String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
        guard let inode = diagnosis.fileInode, let device = diagnosis.fileDevice else {
            return .failure(Refusal(reason: "sock_diag gives no file for its name \(path)"))
        }
        var file = ProcessImage.UnixSocket.BoundFile(
            inode: UInt64(inode), device: UInt64(device), owner: 0, group: 0, mode: 0)
        let full = path.hasPrefix("/") ? path : "/proc/\(pid)/cwd/\(path)"
        if let status = try? FileDescriptor.currentDirectory.status(of: full), status.inode == UInt64(inode),
            Self.sameDevice(status.device, kernel: device)
        {
            (file.owner, file.group, file.mode) = (status.owner, status.group, status.permissions)
            return .success(file)
        }
        guard path.hasPrefix("/") else {
            return .failure(
                Refusal(
                    reason: "bound to the relative name \(path), which does not name its socket file from its "
                        + "working directory (bound from another directory, or unlinked since)"))
        }
        file.deleted = true
        return .success(file)
    }

    /// A user-space st_dev (glibc's encoding) and a kernel dev_t (major << 20 | minor) name
    /// the same device.
    static func sameDevice(_ device: UInt64, kernel: UInt32) -> Bool {
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff)
        let minor = (device & 0xff) | ((device >> 12) & ~0xff)
        return major == UInt64(kernel >> 20) && minor == UInt64(kernel & 0xfffff)
    }

    struct Refusal: Error { var reason: String }

    /// The messages queued to the socket, peeked one after another from offset 0. Datagrams
    /// and seqpackets keep their boundaries (one Data each, empty ones too); a stream's bytes
    /// are one Data. Descriptors in flight (SCM_RIGHTS) come with each peek as copies in cpx:
    /// each is recorded with its message (`inFlight(_:)`), in a datagram or seqpacket queue
    /// only. Credentials are refused.
    private func queue(
        of copy: FileDescriptor, _ socket: ProcessImage.UnixSocket, peekOffset: Int32, queued: Int
    ) throws(Errno) -> Result<([Data], [[UInt8]], [ProcessImage.UnixSocket.QueuedRights]), Refusal> {
        try copy.setSocketOption(.peekOffset, to: 0)
        defer { try? copy.setSocketOption(.peekOffset, to: peekOffset) }
        var messages: [Data] = []
        var senders: [[UInt8]] = []
        var rights: [ProcessImage.UnixSocket.QueuedRights] = []
        var total = 0
        // A stream stops at its last queued byte: one more peek would return end of file, or
        // take (and clear) an error pending after the data.
        while socket.type != .stream || total < queued {
            let (count, flags, sender, control): (Int, FileDescriptor.MessageFlags, [UInt8], FileDescriptor.Control)
            do {
                (count, flags, sender, control) = try buffer.withMutableRawBytes { (raw) throws(Errno) in
                    try copy.receiveWithControl(into: raw, flags: [.peek, .dontWait])
                }
            } catch let error where error == .wouldBlock {
                break
            }
            if control.credentials || !control.others.isEmpty || flags.contains(.controlTruncated) {
                for file in control.descriptors { file.close() }
                return .failure(
                    Refusal(
                        reason: socket.passCredentials == true
                            ? "SO_PASSCRED is set and messages are queued: the credentials that come with them "
                                + "are not restored"
                            : control.credentials
                                ? "its queue holds credentials in flight (SCM_CREDENTIALS), which a restart cannot "
                                    + "send again"
                                : "its queue holds control data a restart cannot send again"
                                    + (control.others.first.map { " (level \($0.level), type \($0.type))" } ?? "")))
            }
            // A stream's peek runs over plain bytes up to and through the first piece (one
            // send's skb) that carries descriptors, and no peek tells where that piece starts
            // (a peek from any byte before it brings its descriptors): a restart would hand
            // them to a read of the bytes before. One byte brought with them is that piece.
            if !control.descriptors.isEmpty {
                guard socket.type != .stream || count == 1 else {
                    for file in control.descriptors { file.close() }
                    return .failure(
                        Refusal(
                            reason: "descriptors are in flight in its stream queue (SCM_RIGHTS) with \(count) bytes "
                                + "before or with them, and where the bytes they came with start cannot be read: "
                                + "which read receives them would not be kept"))
                }
                var files: [ProcessImage.UnixSocket.InFlightFile] = []
                var refusal: Refusal?
                for file in control.descriptors {
                    guard refusal == nil else {
                        file.close()
                        continue
                    }
                    switch inFlight(file) {
                    case .success(let described): files.append(described)
                    case .failure(let refused): refusal = refused
                    }
                }
                if let refusal { return .failure(refusal) }
                rights.append(.init(message: messages.count, files: files))
            }
            if flags.contains(.truncated) {
                return .failure(
                    Refusal(reason: "a message longer than \(Format.bytes(Int64(Self.messageLimit))) is queued"))
            }
            if count == 0 {
                // A stream's end of file before the count sock_diag gave: the check below says so.
                if socket.type == .stream { break }
                // A seqpacket socket shut down for reading answers 0 at its end, once every queued
                // byte was seen (an empty message after the last byte cannot be told from it; the
                // check of the peer's send memory refuses one). Otherwise 0 is an empty message.
                if socket.type == .seqpacket, socket.readShutdown == true, total >= queued { break }
            }
            messages.append(Data(buffer[..<count]))
            if socket.type != .stream { senders.append(sender) }
            total += count
            guard total <= Self.queueLimit, messages.count <= 1 << 20 else {
                return .failure(Refusal(reason: "its queue holds more than \(Format.bytes(Int64(Self.queueLimit)))"))
            }
        }
        if socket.type == .stream { (messages, rights) = Self.joined(messages, rights) }
        // A datagram socket's count is its first message's length.
        let seen = socket.type == .datagram ? messages.first?.count ?? 0 : total
        guard seen == queued else {
            return .failure(Refusal(reason: "its queue read \(seen) bytes where sock_diag counts \(queued)"))
        }
        return .success((messages, senders, rights))
    }

    /// The interest list of an epoll in flight (cpx's copy `file`), from fdinfo: "tfd: 5
    /// events: 19 data: 5 pos:0 ino:1a sdev:8", the inode naming the file watched. Each must be
    /// a UNIX socket the process holds (one open file each: a socket is never opened again),
    /// watched level-triggered (an edge already seen is not read).
    private func epollTargets(
        _ file: FileDescriptor, _ shown: String
    ) -> Result<([ProcessImage.EpollTarget], [UInt64]), Refusal> {
        guard let lines = try? ProcFS.descriptorInfoLines(getpid(), file.rawValue) else {
            return .failure(Refusal(reason: "\(shown): its interest list cannot be read"))
        }
        var targets: [ProcessImage.EpollTarget] = []
        var watched: [UInt64] = []
        for line in lines where line.hasPrefix("tfd:") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            func field(_ name: String, radix: Int) -> UInt64? {
                guard let at = words.firstIndex(where: { $0.hasPrefix(name + ":") }) else { return nil }
                let inline = words[at].dropFirst(name.count + 1)
                let text = inline.isEmpty && at + 1 < words.count ? words[at + 1] : inline
                return UInt64(text, radix: radix)
            }
            guard let fd = field("tfd", radix: 10), let events = field("events", radix: 16),
                let data = field("data", radix: 16), let inode = field("ino", radix: 16)
            else { return .failure(Refusal(reason: "\(shown): its interest list does not read as expected: \(line)")) }
            guard held[inode] != nil, diagnosis(inode) != nil else {
                return .failure(
                    Refusal(
                        reason: "\(shown) is an epoll no process holds, watching a file that is no UNIX socket the "
                            + "process holds (inode \(inode)): only those are watched again"))
            }
            let edgeTriggered: UInt64 = 1 << 31  // EPOLLET
            let oneShot: UInt64 = 1 << 30  // EPOLLONESHOT
            guard events & (edgeTriggered | oneShot) == 0 else {
                return .failure(
                    Refusal(
                        reason: "\(shown) is an epoll no process holds, watching socket \(inode) edge-triggered or "
                            + "one-shot: which edges it saw is not read"))
            }
            targets.append(
                .init(fd: Int32(truncatingIfNeeded: fd), events: UInt32(truncatingIfNeeded: events), data: data))
            watched.append(inode)
        }
        return .success((targets, watched))
    }

    /// A stream's pieces as one Data each, the plain ones next to each other joined: the
    /// pieces that carry descriptors stay apart, each sent again on its own.
    static func joined(
        _ pieces: [Data], _ rights: [ProcessImage.UnixSocket.QueuedRights]
    ) -> ([Data], [ProcessImage.UnixSocket.QueuedRights]) {
        let carried = Dictionary(rights.map { ($0.message, $0) }, uniquingKeysWith: { first, _ in first })
        var joined: [Data] = []
        var moved: [ProcessImage.UnixSocket.QueuedRights] = []
        var plain = false
        for (k, piece) in pieces.enumerated() where !piece.isEmpty || carried[k] != nil {
            if var entry = carried[k] {
                entry.message = joined.count
                moved.append(entry)
                joined.append(piece)
                plain = false
            } else if plain {
                joined[joined.count - 1] += piece
            } else {
                joined.append(piece)
                plain = true
            }
        }
        return (joined, moved)
    }

    /// What an open file in flight is, `file` being cpx's copy of it (kept, or closed here):
    /// the open file of a descriptor of the process (kcmp), an end of a pipe, or a regular
    /// file. One that another process of the tree holds, or of another kind, is refused.
    private func inFlight(_ file: FileDescriptor) -> Result<ProcessImage.UnixSocket.InFlightFile, Refusal> {
        let me = getpid()
        for earlier in inFlight
        where (try? ProcessDescriptor.shareOpenFile(me, earlier.copy.rawValue, me, file.rawValue)) == true {
            file.close()
            return .success(earlier.file)
        }
        let id = inFlight.count
        var kept = false
        defer { if !kept { file.close() } }
        guard let target = ProcFS.descriptorTarget(me, file.rawValue),
            let info = try? ProcFS.descriptorInfo(me, file.rawValue),
            let flags = info["flags"].flatMap({ Int32($0, radix: 8) })
        else {
            return .failure(Refusal(reason: "a descriptor in flight in its queue cannot be read"))
        }
        let flagsKept = flags & ~(O_CLOEXEC | CHPOX_O_LARGEFILE)
        let shown = "a descriptor in flight in its queue (\(target))"
        func holds(_ process: Int32) -> Int32? {
            for fd in (try? ProcFS.descriptors(process)) ?? [] where ProcFS.descriptorTarget(process, fd) == target {
                if (try? ProcessDescriptor.shareOpenFile(process, fd, me, file.rawValue)) == true { return fd }
            }
            return nil
        }
        var described = ProcessImage.UnixSocket.InFlightFile(kind: .descriptor, id: id, flags: flagsKept)
        let status: FileDescriptor.Status
        do {
            status = try file.status()
        } catch {
            return .failure(Refusal(reason: "\(shown) cannot be read (\(error))"))
        }
        if let fd = holds(pid) {
            if let inode = Self.inode(of: target) {
                guard (try? file.socketOption(.domain)) == AF_UNIX else {
                    return .failure(
                        Refusal(
                            reason: "\(shown) is the open file of its fd \(fd), a socket made after the UNIX "
                                + "sockets' queues are sent: not restored"))
                }
                described.socket = inode
            } else if !status.isFIFO && !status.isRegularFile || !target.hasPrefix("/") && !target.hasPrefix("pipe:[")
                || target.hasPrefix("/memfd:")
            {
                return .failure(
                    Refusal(
                        reason: "\(shown) is the open file of its fd \(fd), of a kind a restart makes after the "
                            + "queues are sent: not restored"))
            }
            described.fd = fd
        } else if let other = tree.first(where: { holds($0) != nil }) {
            return .failure(
                Refusal(
                    reason: "\(shown) is an open file process \(other) of the tree holds: only one the process holds "
                        + "itself, or none holds, is sent again"))
        } else if target.hasPrefix("pipe:["), status.isFIFO {
            described.kind = .pipe
            described.pipe = status.inode
            func onPipe(_ process: Int32) -> Int32? {
                ((try? ProcFS.descriptors(process)) ?? []).first { ProcFS.descriptorTarget(process, $0) == target }
            }
            if let fd = onPipe(pid) {
                described.through = fd
            } else if let other = tree.first(where: { onPipe($0) != nil }) {
                return .failure(
                    Refusal(reason: "\(shown) is an end of a pipe process \(other) of the tree holds: not restored"))
            } else {
                let queued = (try? file.bytesQueued()) ?? -1
                guard queued == 0 else {
                    return .failure(
                        Refusal(
                            reason: "\(shown) is an end of a pipe no process holds, with \(queued) bytes in it: what "
                                + "such a pipe holds is not restored"))
                }
                described.capacity = try? file.pipeCapacity()
            }
        } else if status.isRegularFile, target.hasPrefix("/"), !target.hasSuffix(" (deleted)") {
            described.kind = .file
            described.path = target
            guard let offset = info["pos"].flatMap({ Int64($0) }) else {
                return .failure(Refusal(reason: "\(shown): its offset cannot be read"))
            }
            described.offset = offset
        } else if target == "anon_inode:[eventpoll]" {
            described.kind = .epoll
            switch epollTargets(file, shown) {
            case .success(let (targets, watched)): (described.targets, described.watched) = (targets, watched)
            case .failure(let refusal): return .failure(refusal)
            }
        } else {
            return .failure(
                Refusal(
                    reason: "\(shown) is an open file no process holds, of a kind not made again for a message "
                        + "(only pipes, regular files and epolls watching UNIX sockets are)"))
        }
        inFlight.append((file, described))
        kept = true
        return .success(described)
    }

    /// What a peek cannot see: an empty datagram or seqpacket message that was peeked once
    /// (by an earlier checkpoint, or the program) is skipped by every later peek at an offset.
    /// The peer's send memory tells: the messages read are sent again between two sockets of
    /// this process, and they must take the memory the peer's queued ones take. Nil when they
    /// do, or when the peer was closed (nothing to compare with).
    private func unseenRefusal(_ messages: [Data], _ socket: ProcessImage.UnixSocket, typeNumber: Int32) -> String? {
        guard socket.peer != 0, let queued = (try? UnixSocketDiagnosis.of(inode: socket.peer))?.sentMemory else {
            return nil
        }
        do throws(Errno) {
            let (sender, receiver) = try FileDescriptor.socketPair(type: typeNumber)
            defer {
                sender.close()
                receiver.close()
            }
            // The peer's send buffer bounds what it could queue: ours is made as large.
            if let fd = held[socket.peer], let process {
                let peer = try process.copyDescriptor(fd)
                defer { peer.close() }
                try sender.setSocketOption(.sendBufferForce, to: try peer.socketOption(.sendBuffer) / 2)
            }
            let inode = try sender.status().inode
            func send(_ bytes: [UInt8]) throws(Errno) {
                _ = try bytes.withRawBytes { (raw) throws(Errno) in try sender.send(raw, flags: .dontWait) }
            }
            func memory() throws(Errno) -> Int { Int(try UnixSocketDiagnosis.of(inode: inode).sentMemory ?? 0) }
            for message in messages { try send([UInt8](message)) }
            let replayed = try memory()
            guard replayed != Int(queued) else { return nil }
            try send([])
            let empty = try memory() - replayed
            if Int(queued) > replayed, empty > 0, (Int(queued) - replayed) % empty == 0 {
                let count = (Int(queued) - replayed) / empty
                return (count == 1 ? "an empty message is" : "\(count) empty messages are")
                    + " queued that a peek no longer shows (an earlier peek saw them): where they stand in its "
                    + "queue cannot be read"
            }
            return "the messages its peer queued take \(queued) bytes of memory where those read take "
                + "\(replayed): part of its queue cannot be read"
        } catch {
            return "its queue cannot be checked against its peer's (\(error))"
        }
    }

    /// SO_SNDBUF and SO_RCVBUF of a new socket of this type (net.core.wmem_default and
    /// rmem_default, as the kernel doubles them): a socket of the process with other sizes had
    /// them set, and gets them again.
    static func defaultBuffers(_ typeNumber: Int32) throws(Errno) -> (Int32, Int32) {
        let (one, other) = try FileDescriptor.socketPair(type: typeNumber)
        defer {
            one.close()
            other.close()
        }
        return (try one.socketOption(.sendBuffer), try one.socketOption(.receiveBuffer))
    }

    /// A process other than `pid` holding socket `inode` (the first found in /proc).
    static func holder(of inode: UInt64, besides pid: Int32) -> Int32? {
        let target = "socket:[\(inode)]"
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
        for other in pids where other != pid {
            for fd in (try? ProcFS.descriptors(other)) ?? [] where ProcFS.descriptorTarget(other, fd) == target {
                return other
            }
        }
        return nil
    }

    static func familyName(_ domain: Int32) -> String {
        switch domain {
        case AF_INET: "an IPv4"
        case AF_INET6: "an IPv6"
        case AF_NETLINK: "a netlink"
        case AF_PACKET: "a packet"
        default: "an address family \(domain)"
        }
    }

    /// A bound name as `ss` shows it: a path, or "the abstract name @name".
    static func address(_ name: [UInt8]) -> String {
        let shown = ProcessImage.UnixSocket.address(name)
        return name.first == 0 ? "the abstract name " + shown : shown
    }
}
