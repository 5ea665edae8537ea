#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Syscall
import Tracee

/// Reads the sockets of a frozen process. A UNIX socket whose peer is another socket of the
/// same process (socketpair(2)), or whose peer was closed, is recorded with its type, shutdown
/// state and the messages queued to it, read without consuming them: on a copy of the
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

    init(_ pid: Int32) {
        self.pid = pid
        var held: [UInt64: Int32] = [:]
        for fd in (try? ProcFS.descriptors(pid)) ?? [] {
            guard let inode = ProcFS.descriptorTarget(pid, fd).flatMap(Self.inode(of:)) else { continue }
            held[inode] = min(held[inode] ?? fd, fd)
        }
        self.held = held
    }

    deinit { process?.close() }

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
                    "\(Self.familyName(domain)) socket: only UNIX socket pairs whose ends are both in the "
                        + "process are restored")
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
            if diagnosis.isListening {
                return .refused("a listening UNIX socket: servers' sockets are not restored")
            }
            if let name = diagnosis.name {
                return .refused("a UNIX socket bound to \(Self.address(name)): named UNIX sockets are not restored")
            }
            if let refusal = peerRefusal(inode: inode, diagnosis.peer) { return .refused(refusal) }
            var socket = ProcessImage.UnixSocket(inode: inode, type: type, peer: UInt64(diagnosis.peer ?? 0))
            let credentials = try copy.peerCredentials()
            guard credentials.pid == pid else {
                return .refused(
                    "its peer credentials (SO_PEERCRED) name pid \(credentials.pid), the process that made the pair; "
                        + "a restart would name this one")
            }
            socket.peerCredentials = [credentials.user, credentials.group]
            if diagnosis.shutdown & UnixSocketDiagnosis.receiveShutdown != 0 { socket.readShutdown = true }
            if diagnosis.shutdown & UnixSocketDiagnosis.sendShutdown != 0 { socket.writeShutdown = true }
            let events = try copy.readyEvents()
            if events.contains(.priority) {
                return .refused("out-of-band data (MSG_OOB) is queued in it, which is not restored")
            }
            if events.contains(.error) {
                // A stream's peer closed with data unread in it leaves ECONNRESET here; nothing
                // else is made again.
                guard socket.peer == 0, type == .stream else {
                    // A datagram or seqpacket receive returns (and clears) the error before any
                    // message, a peek too: the queue cannot be read without changing the socket.
                    return .refused(
                        "an error is pending on it (SO_ERROR), which a restart cannot set again and which "
                            + "reading its queue would clear")
                }
                socket.resetPending = true
            }
            if try copy.socketOption(.passCredentials) != 0 { socket.passCredentials = true }
            let defaults = try Self.defaultBuffers(typeNumber)
            let buffers = (try copy.socketOption(.sendBuffer), try copy.socketOption(.receiveBuffer))
            if buffers.0 != defaults.0 { socket.sendBuffer = buffers.0 }
            if buffers.1 != defaults.1 { socket.receiveBuffer = buffers.1 }
            let peekOffset = try copy.socketOption(.peekOffset)
            if peekOffset >= 0 { socket.peekOffset = peekOffset }
            switch try queue(of: copy, socket, peekOffset: peekOffset, queued: Int(diagnosis.queuedBytes ?? 0)) {
            case .success(let messages):
                if type != .stream, let refusal = unseenRefusal(messages, socket, typeNumber: typeNumber) {
                    return .refused(refusal)
                }
                socket.queue = messages
            case .failure(let refusal): return .refused(refusal.reason)
            }
            return .socket(socket)
        } catch {
            return .refused("its state cannot be read (\(error))")
        }
    }

    /// Why a socket with peer `peer` (sock_diag's answer) cannot be restored; nil when it can:
    /// its peer is another socket of the process connected back to it, or was closed.
    private func peerRefusal(inode: UInt64, _ peer: UInt32?) -> String? {
        guard let peer else { return "a UNIX socket that is not connected: its peer is none" }
        guard peer != 0 else { return nil }  // the peer was closed
        guard held[UInt64(peer)] != nil else {
            if let holder = Self.holder(of: UInt64(peer), besides: pid) {
                return "its peer socket:[\(peer)] is in another process (pid \(holder)): "
                    + "sockets shared between processes are not restored"
            }
            return "its peer socket:[\(peer)] is in no process (a descriptor in flight?): not restored"
        }
        guard let back = try? UnixSocketDiagnosis.of(inode: UInt64(peer)),
            back.peer == UInt32(truncatingIfNeeded: inode)
        else {
            return "its peer socket:[\(peer)] is connected to another socket: one-way datagram connections "
                + "are not restored"
        }
        return nil
    }

    struct Refusal: Error { var reason: String }

    /// The messages queued to the socket, peeked one after another from offset 0. Datagrams
    /// and seqpackets keep their boundaries (one Data each, empty ones too); a stream's bytes
    /// are one Data. Control data (descriptors, credentials) in the queue is refused.
    private func queue(
        of copy: FileDescriptor, _ socket: ProcessImage.UnixSocket, peekOffset: Int32, queued: Int
    ) throws(Errno) -> Result<[Data], Refusal> {
        try copy.setSocketOption(.peekOffset, to: 0)
        defer { try? copy.setSocketOption(.peekOffset, to: peekOffset) }
        var messages: [Data] = []
        var total = 0
        // A stream stops at its last queued byte: one more peek would return end of file, or
        // take (and clear) an error pending after the data.
        while socket.type != .stream || total < queued {
            let (count, flags): (Int, FileDescriptor.MessageFlags)
            do {
                (count, flags) = try buffer.withMutableRawBytes { (raw) throws(Errno) in
                    try copy.receive(into: raw, flags: [.peek, .dontWait])
                }
            } catch let error where error == .wouldBlock {
                break
            }
            if flags.contains(.controlTruncated) {
                return .failure(
                    Refusal(
                        reason: socket.passCredentials == true
                            ? "SO_PASSCRED is set and messages are queued: the credentials that come with them "
                                + "are not restored"
                            : "its queue holds control data (descriptors or credentials in flight), which a "
                                + "restart cannot send again"))
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
            total += count
            guard total <= Self.queueLimit, messages.count <= 1 << 20 else {
                return .failure(Refusal(reason: "its queue holds more than \(Format.bytes(Int64(Self.queueLimit)))"))
            }
        }
        if socket.type == .stream { messages = total == 0 ? [] : [messages.reduce(into: Data()) { $0 += $1 }] }
        // A datagram socket's count is its first message's length.
        let seen = socket.type == .datagram ? messages.first?.count ?? 0 : total
        guard seen == queued else {
            return .failure(Refusal(reason: "its queue read \(seen) bytes where sock_diag counts \(queued)"))
        }
        return .success(messages)
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

    /// A bound name as `ss` shows it: a path, or "@name" for an abstract one.
    static func address(_ name: [UInt8]) -> String {
        guard let first = name.first else { return "an empty name" }
        guard first == 0 else { return String(decoding: name.prefix { $0 != 0 }, as: UTF8.self) }
        // An abstract name is every byte of the address: programs often pad it with NULs.
        var bytes = name.dropFirst()
        while bytes.last == 0 { bytes = bytes.dropLast() }
        let shown = bytes.map { $0 >= 0x20 && $0 < 0x7f ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }
        return "the abstract name @" + shown.joined()
    }
}
