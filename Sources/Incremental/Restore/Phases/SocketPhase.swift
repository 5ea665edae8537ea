#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Syscall
import Tracee

/// The UNIX sockets, made again after the other descriptors and before the epolls that may
/// watch them. A pair is one socketpair(2) of its type (an end whose peer was closed is made
/// and closed last, as the program had done: a stream end then reads its queue and end of
/// file, and a reset when the closed end had data left unread); any other socket is one
/// socket(2). Then names are bound (a stale socket file of the same socket removed first;
/// owner and mode set again), listeners listen, what each socket had queued to read is sent
/// again (by its pair's other end, else from an unnamed socket to its name, a datagram's
/// messages one by one so their boundaries hold), datagram sockets connect to the named ones
/// they were connected to, options are set, ends are shut down as they were, names that were
/// unlinked are unlinked again, and each socket is moved to its descriptor numbers (duplicates
/// dup'ed from the first) with its status flags.
///
/// `SocketLayout` decides which process makes each socket: one connected to a socket of
/// another process of the tree may be made here and kept for that process, which takes it.
public struct SocketPhase: RestartPhase {
    /// A descriptor number a socket is put at.
    public struct Placement: Sendable, Equatable {
        public var fd: Int32
        public var closeOnExec: Bool
    }

    /// The sockets this process makes, for itself or for another process of its tree.
    public var made: [SocketLayout.Record]
    /// The sockets this process holds that another process made (taken from it).
    public var taken: [SocketLayout.Record]
    /// The effective uid and gid a pair is made under where it records none.
    public var user: UInt32
    public var group: UInt32
    /// Above every descriptor of the image: sockets are kept there while their numbers are
    /// set, so that none lands on another's number.
    public var holderBase: Int32
    /// This process's pid in the image.
    public var pid: Int32
    /// Its descriptors `DescriptorPhase` has put in place before the sockets (files, pipes):
    /// the only ones besides sockets a descriptor in flight may be sent from.
    public var placedBefore: Set<Int32>

    public var name: String { "UNIX sockets" }
    public var steps: [String] {
        made.map { record in
            let fds = record.descriptors.map { "fd \($0.fd)" + ($0.closeOnExec ? " (close-on-exec)" : "") }
            let place =
                record.holder != pid
                ? "kept for process \(record.holder) (its " + fds.joined(separator: ", ") + ")"
                : fds.joined(separator: ", ")
            var words = ["\(place): \(record.socket.summary)"]
            if record.statusFlags & O_NONBLOCK != 0 { words.append("non-blocking") }
            return words.joined(separator: ", ")
        }
            + taken.map { record in
                let fds = record.descriptors.map { "fd \($0.fd)" }.joined(separator: ", ")
                return "\(fds): socket \(record.socket.inode), made by another process of the tree"
            }
    }

    /// The pairs among `made`, for a reader of the plan: each pair's two inodes (0 for a
    /// closed peer), first as made.
    public var pairs: [[UInt64]] {
        var seen: Set<UInt64> = []
        var pairs: [[UInt64]] = []
        let accepted = acceptedPeers
        for record in made where !seen.contains(record.socket.inode) {
            guard Self.isPairEnd(record.socket), !accepted.contains(record.socket.inode) else { continue }
            seen.insert(record.socket.inode)
            seen.insert(record.socket.peer)
            pairs.append([record.socket.inode, record.socket.peer])
        }
        return pairs
    }

    public init(image: ProcessImage, layout: TreeLayout? = nil) {
        let sockets = layout?.sockets ?? SocketLayout([image])
        pid = image.pid
        made = sockets.made(by: image.pid)
        taken = sockets.taken(by: image.pid)
        user = image.credentials.user.effective
        group = image.credentials.group.effective
        holderBase = max((image.descriptors.map(\.fd).max() ?? 2) + 1, DescriptorPhase.holderBase)
        placedBefore = Set(
            image.descriptors.filter {
                [.file, .deletedFile, .sparseDeletedFile, .deletedNode, .pipe].contains($0.kind) && $0.inherited == nil
            }.map(\.fd)
        )
    }

    /// Made by socketpair(2): connected back to its peer, or its peer closed.
    static func isPairEnd(_ socket: ProcessImage.UnixSocket) -> Bool {
        socket.unconnected != true && socket.oneWay != true && socket.pendingOn == nil && socket.acceptedFrom == nil
            && socket.external?.action != .reconnect
    }

    /// The sockets connected to one that a listener accepted: made by socket(2) and connected
    /// to the listener, not by socketpair(2).
    var acceptedPeers: Set<UInt64> {
        Set(made.compactMap { $0.socket.acceptedFrom != nil ? $0.socket.peer : nil })
    }

    public func run(in session: RestartSession) throws {
        let calls = session.calls
        for record in taken { try take(record, session) }
        guard !made.isEmpty else { return }
        let status = try ProcFS.status(session.pid)
        let ids = Ids(users: status.userIDs, groups: status.groupIDs)
        var holders: [UInt64: Int32] = [:]
        var closedEnds: [UInt64: Int32] = [:]
        defer {
            for holder in closedEnds.values { _ = try? calls.result(of: .close, holder) }
        }
        let byInode = Dictionary(made.map { ($0.socket.inode, $0) }, uniquingKeysWith: { first, _ in first })
        let accepted = acceptedPeers
        do {
            // An accepted socket is made by accept(2), once its listener listens (`setUp`).
            for record in made where holders[record.socket.inode] == nil && record.socket.acceptedFrom == nil {
                let socket = record.socket
                let what = "make UNIX \(socket.type.rawValue) socket \(socket.inode)"
                if Self.isPairEnd(socket) && !accepted.contains(socket.inode) {
                    if socket.peer != 0, byInode[socket.peer] == nil {
                        throw TraceeError.unsupported(
                            pid: calls.pid, reason: "\(what): its peer socket \(socket.peer) is not in the image")
                    }
                    let credentials = socket.peerCredentials ?? byInode[socket.peer]?.socket.peerCredentials
                    let (one, other) = try makePair(
                        socket.type, as: credentials?.first ?? user, credentials?.last ?? group, ids, calls, what)
                    holders[socket.inode] = one
                    if socket.peer != 0 { holders[socket.peer] = other } else { closedEnds[socket.inode] = other }
                } else {
                    let made = try calls.call(
                        .socket, AF_UNIX, SocketPhase.typeNumber(socket.type) | Int32(SOCK_CLOEXEC.rawValue), 0,
                        to: what)
                    holders[socket.inode] = try hold(Int32(made), calls, what)
                }
            }
            try setUp(holders: &holders, closedEnds: closedEnds, byInode, ids, session)
            for record in made {
                guard let holder = holders[record.socket.inode] else { continue }
                if record.holder == session.image.pid {
                    try place(holder, at: record.descriptors, flags: record.statusFlags, calls)
                    _ = try calls.result(of: .close, holder)
                } else {
                    session.tree.socketHolders[record.socket.inode] = (session.pid, holder)
                }
            }
        }
    }

    /// Everything after the sockets exist, in the order the kernel needs it.
    private func setUp(
        holders: inout [UInt64: Int32], closedEnds: [UInt64: Int32], _ byInode: [UInt64: SocketLayout.Record],
        _ ids: Ids, _ session: RestartSession
    ) throws {
        let calls = session.calls
        func holder(_ inode: UInt64) -> Int32 { holders[inode] ?? -1 }
        var inFlight = InFlightFiles(calls: calls, pid: session.pid, placed: placedBefore)
        defer { inFlight.close() }
        // The descriptors in flight that ride on each message of a socket's queue.
        func rights(of socket: ProcessImage.UnixSocket, _ what: String) throws -> [Int: [Int32]] {
            guard let rights = socket.rights, !rights.isEmpty else { return [:] }
            guard byInode[socket.inode]?.holder == session.image.pid else {
                throw TraceeError.unsupported(
                    pid: calls.pid,
                    reason: "\(what): descriptors are in flight in it, and another process of the tree makes it")
            }
            var byMessage: [Int: [Int32]] = [:]
            for entry in rights {
                guard (socket.queue ?? []).indices.contains(entry.message) else {
                    throw TraceeError.unsupported(
                        pid: calls.pid, reason: "\(what): descriptors in flight with no message of its queue")
                }
                byMessage[entry.message, default: []] += try inFlight.descriptors(entry, sockets: holders, what)
            }
            return byMessage
        }
        // Buffer sizes first: the sender's bounds what the queue it fills may hold.
        func setBuffers(_ socket: ProcessImage.UnixSocket, on fd: Int32) throws {
            let what = "set the buffers of UNIX socket \(socket.inode)"
            if let size = socket.sendBuffer {
                try setBuffer(.sendBufferForce, else: .sendBuffer, size, on: fd, calls, what)
            }
            if let size = socket.receiveBuffer {
                try setBuffer(.receiveBufferForce, else: .receiveBuffer, size, on: fd, calls, what)
            }
        }
        for record in made where record.socket.acceptedFrom == nil {
            try setBuffers(record.socket, on: holder(record.socket.inode))
        }
        // An accepted socket bears its listener's name; it gets it from accept(2), not bind.
        func isDeleted(_ record: SocketLayout.Record) -> Bool {
            record.socket.file?.deleted == true && record.socket.acceptedFrom == nil
        }
        for record in made where !isDeleted(record) && record.socket.acceptedFrom == nil {
            guard let name = record.socket.name else { continue }
            try bind(record.socket, [UInt8](name), on: holder(record.socket.inode), session)
        }
        // A name unlinked while its socket stayed bound: bound again (whatever is at the path
        // now moved aside meanwhile), what it had queued sent and the sockets connected to it
        // connected while the name reaches it, then unlinked again.
        func listen(_ socket: ProcessImage.UnixSocket) throws {
            let what = "make UNIX socket \(socket.inode) listen"
            let credentials = socket.peerCredentials
            try making(as: credentials?.first ?? user, credentials?.last ?? group, ids, calls, what) {
                try calls.call(.listen, holder(socket.inode), socket.backlog ?? 0, to: what)
            }
        }
        // The connections a listener had accepted: each peer connects to the listener's name
        // (under the ids SO_PEERCRED gives the accepted end) and the listener accepts it, one
        // at a time while its accept queue is empty. Then those still waiting in its accept
        // queue connect, in the order accept(2) would have returned them.
        func connectThrough(_ listener: ProcessImage.UnixSocket, named name: Data) throws {
            for record in made where record.socket.acceptedFrom == listener.inode {
                let socket = record.socket
                let what = "make UNIX socket \(socket.inode), accepted from socket \(listener.inode)"
                guard let client = holders[socket.peer] else {
                    throw TraceeError.unsupported(
                        pid: calls.pid, reason: "\(what): its peer is not made by this process")
                }
                let credentials = socket.peerCredentials
                try making(as: credentials?.first ?? user, credentials?.last ?? group, ids, calls, what) {
                    try connect(socket, to: name, on: client, calls)
                }
                let accepted = try calls.call(
                    .accept4, holder(listener.inode), 0, 0, Int32(SOCK_CLOEXEC.rawValue), to: what)
                let kept = try hold(Int32(accepted), calls, what)
                holders[socket.inode] = kept
                try setBuffers(socket, on: kept)
            }
            for client in listener.pending ?? [] {
                guard let connecting = holders[client], let socket = byInode[client]?.socket else {
                    throw TraceeError.unsupported(
                        pid: calls.pid,
                        reason: "connect UNIX socket \(client) to listening socket \(listener.inode): it is not "
                            + "made by this process")
                }
                try connect(socket, to: name, on: connecting, calls)
            }
        }
        // A name unlinked while its socket stayed bound: bound again (whatever is at the path
        // now moved aside meanwhile), what it had queued sent and the sockets connected to it
        // connected while the name reaches it (a listener listening first), then unlinked again.
        for record in made where isDeleted(record) {
            guard let name = record.socket.name else { continue }
            let path = Self.path([UInt8](name))
            let full = path.hasPrefix("/") ? path : "/proc/\(session.pid)/cwd/\(path)"
            let aside = full + ".chpox-\(record.socket.inode)"
            let what = "bind UNIX socket \(record.socket.inode) to \(path), unlinked since"
            let moved = (try? FileDescriptor.currentDirectory.status(of: full)) != nil
            if moved {
                do {
                    try FileDescriptor.currentDirectory.rename(full, to: aside)
                } catch {
                    throw TraceeError.from(error, pid: calls.pid, "\(what): move aside what is at that path in")
                }
            }
            // Its directory may be gone too (removed after the unlink, zdtm sk-unix01): made
            // for the bind, removed again after the unlink.
            let parents = try makeParents(of: full, session, what)
            try bind(record.socket, [UInt8](name), on: holder(record.socket.inode), session)
            if !Self.isPairEnd(record.socket) && !(record.socket.queue ?? []).isEmpty {
                try sendQueue(
                    record.socket, calls,
                    rights: try rights(of: record.socket, "queue what UNIX socket \(record.socket.inode) held"))
            }
            for client in made where client.socket.oneWay == true && client.socket.peer == record.socket.inode {
                try connect(client.socket, to: name, on: holder(client.socket.inode), calls)
            }
            if record.socket.listening == true {
                try listen(record.socket)
                try connectThrough(record.socket, named: name)
            }
            do {
                try FileDescriptor.currentDirectory.removeFile(full)
                if moved { try FileDescriptor.currentDirectory.rename(aside, to: full) }
                for directory in parents.reversed() { try FileDescriptor.currentDirectory.removeDirectory(directory) }
            } catch {
                throw TraceeError.from(error, pid: calls.pid, "\(what): unlink it again in")
            }
        }
        for record in made where record.socket.listening == true && !isDeleted(record) {
            try listen(record.socket)
            if let name = record.socket.name { try connectThrough(record.socket, named: name) }
        }
        // What a socket that is no pair's end had queued came from unnamed sockets (the
        // checkpoint refused any other sender): sent to its name before a datagram socket
        // connects (a connected one takes only its peer's).
        for record in made where !Self.isPairEnd(record.socket) && !(record.socket.queue ?? []).isEmpty {
            guard !isDeleted(record), record.socket.acceptedFrom == nil, record.socket.pendingOn == nil else {
                continue
            }
            try sendQueue(
                record.socket, calls,
                rights: try rights(of: record.socket, "queue what UNIX socket \(record.socket.inode) held"))
        }
        for record in made where record.socket.oneWay == true {
            let socket = record.socket
            guard let target = byInode[socket.peer], !isDeleted(target) else { continue }
            guard let name = target.socket.name else {
                throw TraceeError.unsupported(
                    pid: calls.pid,
                    reason: "connect UNIX datagram socket \(socket.inode) to socket \(socket.peer): it has no name")
            }
            try connect(socket, to: name, on: holder(socket.inode), calls)
        }
        // A socket whose peer was outside the tree, named to reconnect (cpx --external-unix):
        // connected to its peer's path again (nothing was queued either way).
        for record in made where record.socket.external?.action == .reconnect {
            let socket = record.socket
            guard let path = socket.external?.path, (socket.queue ?? []).isEmpty else {
                throw TraceeError.unsupported(
                    pid: calls.pid,
                    reason: "connect UNIX socket \(socket.inode) again: its image names no path, or holds a queue")
            }
            try connect(socket, to: Data(path.utf8), on: holder(socket.inode), calls)
        }
        for record in made where Self.isPairEnd(record.socket) || record.socket.acceptedFrom != nil {
            let socket = record.socket
            let what = "queue what UNIX socket \(socket.inode) held"
            let sender = socket.peer == 0 ? closedEnds[socket.inode] ?? -1 : holder(socket.peer)
            let files = try rights(of: socket, what)
            for (k, message) in (socket.queue ?? []).enumerated() {
                try send(message, from: sender, socket.type, calls, what, rights: files[k] ?? [])
            }
        }
        for record in made {
            let socket = record.socket, fd = holder(socket.inode)
            let what = "set the options of UNIX socket \(socket.inode)"
            if let offset = socket.peekOffset { try setOption(.peekOffset, offset, on: fd, calls, what) }
            if socket.passCredentials == true { try setOption(.passCredentials, 1, on: fd, calls, what) }
            if socket.passSecurity == true { try setOption(.passSecurity, 1, on: fd, calls, what) }
            if socket.reuseAddress == true { try setOption(.reuseAddress, 1, on: fd, calls, what) }
        }
        // A byte sent to the closed peer, unread when it is closed: the survivor's ECONNRESET.
        for inode in closedEnds.keys where byInode[inode]?.socket.resetPending == true {
            let type = byInode[inode]?.socket.type ?? .stream
            try send(Data([0]), from: holder(inode), type, calls, "leave a byte unread in the closed peer of \(inode)")
        }
        for record in made {
            let socket = record.socket
            let how: Int32? =
                socket.readShutdown == true && socket.writeShutdown == true
                ? Int32(SHUT_RDWR)
                : socket.readShutdown == true ? Int32(SHUT_RD) : socket.writeShutdown == true ? Int32(SHUT_WR) : nil
            if let how {
                try calls.call(
                    .shutdown, holder(socket.inode), how, to: "shut UNIX socket \(socket.inode) down as it was")
            }
        }
    }

    /// Connects socket `fd` to the socket bound to `name`: a datagram socket to the one it
    /// was connected to, a stream or seqpacket one to a listener.
    private func connect(_ socket: ProcessImage.UnixSocket, to name: Data, on fd: Int32, _ calls: RemoteCalls) throws {
        let what =
            "connect UNIX \(socket.type.rawValue) socket \(socket.inode) to \(ProcessImage.UnixSocket.address([UInt8](name)))"
        try calls.withFrame { () throws(TraceeError) in
            let address = try calls.bytes(Self.address([UInt8](name)))
            try calls.call(.connect, fd, address, 2 + name.count, to: what)
        }
    }

    /// A sockaddr_un of `name`: the family, then the name's bytes.
    static func address(_ name: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: sa_family_t(AF_UNIX)) { Array($0) } + name
    }

    /// The path of a path name (its bytes up to the first NUL).
    static func path(_ name: [UInt8]) -> String {
        String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// The directories missing on the way to `path`, made (mode 0700) from the nearest one
    /// that exists, which must belong to the image's user (or the image be trusted as root's):
    /// a restart never makes a directory where its image's user could not. Returns them, the
    /// outermost first.
    private func makeParents(of path: String, _ session: RestartSession, _ what: String) throws -> [String] {
        var missing: [String] = []
        var directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        while !directory.isEmpty, (try? FileDescriptor.currentDirectory.status(of: directory)) == nil {
            missing.append(directory)
            directory = String(directory[..<(directory.lastIndex(of: "/") ?? directory.startIndex)])
        }
        guard !missing.isEmpty else { return [] }
        let existing = directory.isEmpty ? "/" : directory
        guard let status = try? FileDescriptor.currentDirectory.status(of: existing),
            status.owner == user || session.tree.trustedAsRoot
        else {
            throw TraceeError.unsupported(
                pid: session.calls.pid,
                reason: "\(what): its directory \(missing.last!) is gone, and \(existing) does not belong to uid "
                    + "\(user): not made again there")
        }
        var made: [String] = []
        for name in missing.reversed() {
            do {
                try FileDescriptor.currentDirectory.makeDirectory(name)
            } catch {
                for done in made.reversed() { try? FileDescriptor.currentDirectory.removeDirectory(done) }
                throw TraceeError.from(error, pid: session.calls.pid, "\(what): make its gone directory \(name) for")
            }
            made.append(name)
        }
        return made
    }

    /// Binds `fd` to `name`. A path must be free: a socket file left there by the checkpointed
    /// socket itself (the same file, the socket gone) is removed first; anything else there is
    /// refused. The new file gets the recorded owner and mode.
    private func bind(
        _ socket: ProcessImage.UnixSocket, _ name: [UInt8], on fd: Int32, _ session: RestartSession
    ) throws {
        let calls = session.calls
        let shown = ProcessImage.UnixSocket.address(name)
        let what = "bind UNIX socket \(socket.inode) to \(shown)"
        if name.first != 0 {
            let path = Self.path(name)
            let full = path.hasPrefix("/") ? path : "/proc/\(session.pid)/cwd/\(path)"
            if let status = try? FileDescriptor.currentDirectory.status(of: full) {
                let stale =
                    status.isSocket
                    && socket.file.map {
                        $0.inode == status.inode && SocketCapture.sameDevice(status.device, kernel: UInt32($0.device))
                    } == true
                guard stale, (try? UnixSocketDiagnosis.of(inode: socket.inode)) == nil else {
                    throw TraceeError.unsupported(
                        pid: calls.pid,
                        reason: "\(what): \(path) exists"
                            + (stale
                                ? ", still bound by the checkpointed socket" : ", and is not the socket file it left")
                            + " (remove it, or restart where that name is free)")
                }
                do {
                    try FileDescriptor.currentDirectory.removeFile(full)
                } catch {
                    throw TraceeError.from(error, pid: calls.pid, "\(what): remove its stale socket file of")
                }
            }
        }
        try calls.withFrame { () throws(TraceeError) in
            let address = try calls.bytes(Self.address(name))
            var result = try calls.result(of: .bind, fd, address, 2 + name.count)
            // An abstract name still held by the checkpointed socket itself, which no process
            // holds any more: a socket that was in flight (SCM_RIGHTS) is freed by the kernel's
            // garbage collector, and its name with it. The collector runs when a UNIX socket is
            // released while descriptors are in flight: a pair made and closed here starts it.
            if result == -Int(EADDRINUSE), name.first == 0, (try? UnixSocketDiagnosis.of(inode: socket.inode)) != nil,
                SocketCapture.holder(of: socket.inode, besides: 0) == nil
            {
                for _ in 0..<Self.collectorWaits where result == -Int(EADDRINUSE) {
                    if let (one, other) = try? FileDescriptor.socketPair(type: Int32(SOCK_DGRAM.rawValue)) {
                        one.close()
                        other.close()
                    }
                    usleep(10_000)
                    result = try calls.result(of: .bind, fd, address, 2 + name.count)
                }
            }
            try calls.check(result, what)
        }
        guard let file = socket.file, file.deleted != true else { return }
        let path = Self.path(name)
        try calls.withFrame { () throws(TraceeError) in
            let at = try calls.string(path)
            try calls.call(.fchownat, AT_FDCWD, at, file.owner, file.group, 0, to: "\(what): give it its owner")
            try calls.call(.fchmodat, AT_FDCWD, at, file.mode, to: "\(what): give it its mode")
        }
    }

    /// How many times (10 ms apart) a bind waits for the kernel's garbage collector to free
    /// the checkpointed socket that still holds its abstract name.
    static let collectorWaits = 200

    /// Sends what `socket` (a named datagram socket) had queued, from a new unnamed socket.
    private func sendQueue(_ socket: ProcessImage.UnixSocket, _ calls: RemoteCalls, rights: [Int: [Int32]]) throws {
        let what = "queue what UNIX socket \(socket.inode) held"
        guard let name = socket.name, socket.type == .datagram else {
            throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): it has no name to send it to")
        }
        let sender = try calls.call(
            .socket, AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, to: what)
        defer { _ = try? calls.result(of: .close, sender) }
        try calls.withFrame { () throws(TraceeError) in
            let address = try calls.bytes(Self.address([UInt8](name)))
            try calls.call(.connect, sender, address, 2 + name.count, to: what)
        }
        for (k, message) in (socket.queue ?? []).enumerated() {
            try send(message, from: Int32(sender), socket.type, calls, what, rights: rights[k] ?? [])
        }
    }

    /// Takes a socket another process of the tree made for this one, and puts it at its numbers.
    private func take(_ record: SocketLayout.Record, _ session: RestartSession) throws {
        let calls = session.calls
        let inode = record.socket.inode
        let what = "take UNIX socket \(inode) from the process that made it"
        guard let holder = session.tree.socketHolders[inode] else {
            throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): it was not made")
        }
        let opened = try calls.call(.pidfdOpen, session.tree.inner(outer: holder.pid), 0, to: what)
        let pidfd = try calls.call(.fcntl, opened, F_DUPFD_CLOEXEC, holderBase, to: what)
        _ = try calls.result(of: .close, opened)
        defer { _ = try? calls.result(of: .close, pidfd) }
        let copy = try calls.call(.pidfdGetfd, pidfd, holder.fd, 0, to: what)
        let kept = try hold(Int32(copy), calls, what)
        try place(kept, at: record.descriptors, flags: record.statusFlags, calls)
        _ = try calls.result(of: .close, kept)
    }

    /// `fd` moved above every number of the image (the kernel may have handed out a number
    /// another socket is to take).
    private func hold(_ fd: Int32, _ calls: RemoteCalls, _ what: String) throws -> Int32 {
        let holder = Int32(try calls.call(.fcntl, fd, F_DUPFD_CLOEXEC, holderBase, to: what))
        _ = try calls.result(of: .close, fd)
        return holder
    }

    /// Puts `holder` at `descriptors` (the first dup'ed from it, the others from the first)
    /// and sets its status flags.
    private func place(_ holder: Int32, at descriptors: [Placement], flags: Int32, _ calls: RemoteCalls) throws {
        guard let first = descriptors.first else { return }
        let what = "put a UNIX socket at descriptor \(first.fd)"
        try calls.call(.dup3, holder, first.fd, first.closeOnExec ? O_CLOEXEC : 0, to: what)
        try calls.call(.fcntl, first.fd, F_SETFL, flags, to: "\(what): set its status flags")
        for other in descriptors.dropFirst() {
            try calls.call(
                .dup3, first.fd, other.fd, other.closeOnExec ? O_CLOEXEC : 0,
                to: "\(what): descriptor \(other.fd), a duplicate of \(first.fd)")
        }
    }

    /// A socketpair of `type` made under `user` and `group` (its SO_PEERCRED), both ends held.
    private func makePair(
        _ type: ProcessImage.UnixSocket.SocketType, as user: UInt32, _ group: UInt32, _ ids: Ids,
        _ calls: RemoteCalls, _ what: String
    ) throws -> (Int32, Int32) {
        let made = try making(as: user, group, ids, calls, what) {
            try calls.withFrame { () throws(TraceeError) in
                let ends = try calls.reserve(8)
                try calls.call(
                    .socketpair, AF_UNIX, Self.typeNumber(type) | Int32(SOCK_CLOEXEC.rawValue), 0, ends, to: what)
                return try calls.words(at: ends, count: 1)[0]
            }
        }
        let one = try hold(Int32(truncatingIfNeeded: made), calls, what)
        let other = try hold(Int32(truncatingIfNeeded: made >> 32), calls, what)
        return (one, other)
    }

    /// The stub's real, effective, saved and filesystem ids (/proc/PID/status's Uid and Gid).
    struct Ids {
        var users: [UInt32]
        var groups: [UInt32]
        var user: UInt32 { users.count == 4 ? users[1] : 0 }
        var group: UInt32 { groups.count == 4 ? groups[1] : 0 }
    }

    /// Runs `body` with the stub's effective ids set to `user` and `group` (a socketpair and a
    /// listen take SO_PEERCRED from them), then puts its ids back as they were, the filesystem
    /// ids too (setresuid moves them with the effective ones). Needs root when they differ.
    private func making<T>(
        as user: UInt32, _ group: UInt32, _ ids: Ids, _ calls: RemoteCalls, _ what: String,
        _ body: () throws -> T
    ) throws -> T {
        guard user != ids.user || group != ids.group, ids.users.count == 4, ids.groups.count == 4 else {
            return try body()
        }
        let keep = -1
        try calls.call(.setresgid, keep, group, keep, to: "\(what): take gid \(group), which its SO_PEERCRED names")
        try calls.call(.setresuid, keep, user, keep, to: "\(what): take uid \(user), which its SO_PEERCRED names")
        let result = try body()
        try calls.call(.setresuid, keep, ids.user, keep, to: "\(what): take back uid \(ids.user)")
        try calls.call(.setresgid, keep, ids.group, keep, to: "\(what): take back gid \(ids.group)")
        // setfsuid and setfsgid answer the previous id, never an error.
        _ = try calls.result(of: .setfsuid, ids.users[3])
        _ = try calls.result(of: .setfsgid, ids.groups[3])
        return result
    }

    /// socketpair(2)'s type argument.
    static func typeNumber(_ type: ProcessImage.UnixSocket.SocketType) -> Int32 {
        switch type {
        case .stream: Int32(SOCK_STREAM.rawValue)
        case .datagram: Int32(SOCK_DGRAM.rawValue)
        case .seqpacket: Int32(SOCK_SEQPACKET.rawValue)
        }
    }

    /// Bytes sent in one remote call from the scratch pages; a longer message goes through a
    /// mapping of its own, unmapped after.
    static let scratchPiece = 8192

    /// Sends `message` from `holder` without waiting: one message of a datagram or seqpacket
    /// socket, or a stream's bytes, as many calls as it takes; with `rights`, the stub's
    /// descriptors it carries (SCM_RIGHTS, sendmsg(2)).
    private func send(
        _ message: Data, from holder: Int32, _ type: ProcessImage.UnixSocket.SocketType, _ calls: RemoteCalls,
        _ what: String, rights: [Int32] = []
    ) throws {
        let bytes = [UInt8](message)
        let flags = Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL)
        func sendAll(at address: UInt64) throws(TraceeError) {
            var sent = 0
            repeat {
                let count =
                    rights.isEmpty
                    ? try calls.result(of: .sendto, holder, address + UInt64(sent), bytes.count - sent, flags, 0, 0)
                    : try calls.withFrame { () throws(TraceeError) in
                        try calls.result(
                            of: .sendmsg, holder,
                            try Self.messageHeader(address + UInt64(sent), bytes.count - sent, rights, calls), flags)
                    }
                if count == -Int(EAGAIN) {
                    throw .unsupported(
                        pid: calls.pid,
                        reason: "\(what): the queue does not fit in the new socket (its sender's SO_SNDBUF, "
                            + "net.core.wmem_max)")
                }
                try calls.check(count, what)
                // A stream's piece that carries descriptors goes in one call, one piece as it was.
                guard type == .stream && rights.isEmpty ? count > 0 || bytes.isEmpty : count == bytes.count else {
                    throw .unsupported(pid: calls.pid, reason: "\(what): sent \(count) of \(bytes.count) bytes")
                }
                sent += count
            } while sent < bytes.count
        }
        if bytes.count <= Self.scratchPiece {
            try calls.withFrame { () throws(TraceeError) in
                try sendAll(at: bytes.isEmpty ? try calls.reserve(1) : try calls.bytes(bytes))
            }
            return
        }
        let size = (bytes.count + Page.size - 1) / Page.size * Page.size
        let buffer = try calls.call(
            .mmap, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, to: "\(what): a buffer")
        defer { _ = try? calls.result(of: .munmap, buffer, size) }
        try calls.write(bytes, at: UInt64(buffer))
        try sendAll(at: UInt64(buffer))
    }

    /// A msghdr in the stub's scratch for `count` bytes at `address` carrying `rights`
    /// (one SCM_RIGHTS control message); its address.
    static func messageHeader(
        _ address: UInt64, _ count: Int, _ rights: [Int32], _ calls: RemoteCalls
    ) throws(TraceeError) -> UInt64 {
        let vector = try calls.words([address, UInt64(count)])
        // cmsghdr: its length (header and descriptors), level, type; the space padded to 8.
        var control = BinaryWriter(capacity: 16 + rights.count * 4 + 4)
        control.append(UInt64(16 + rights.count * 4))
        control.append(UInt32(SOL_SOCKET))
        control.append(UInt32(SCM_RIGHTS))
        for fd in rights { control.append(UInt32(bitPattern: fd)) }
        if rights.count % 2 == 1 { control.append(UInt32(0)) }
        let controlAddress = try calls.bytes(control.bytes, alignment: 8)
        // msghdr: name, name length, iovec, its count, control, its length, flags.
        return try calls.words([0, 0, vector, 1, controlAddress, UInt64(control.bytes.count), 0])
    }

    /// Sets a buffer size as getsockopt read it back (the kernel doubles what it is given):
    /// beyond the system's maximum where the stub may (`force`, CAP_NET_ADMIN), else as far as
    /// the maximum lets it.
    private func setBuffer(
        _ force: FileDescriptor.SocketOption, else plain: FileDescriptor.SocketOption, _ size: Int32, on fd: Int32,
        _ calls: RemoteCalls, _ what: String
    ) throws {
        let forced = try calls.withFrame { () throws(TraceeError) in
            try calls.result(of: .setsockopt, fd, SOL_SOCKET, force.rawValue, try calls.value(size / 2), 4)
        }
        if forced < 0 { try setOption(plain, size / 2, on: fd, calls, what) }
    }

    private func setOption(
        _ option: FileDescriptor.SocketOption, _ value: Int32, on fd: Int32, _ calls: RemoteCalls, _ what: String
    ) throws {
        try calls.withFrame { () throws(TraceeError) in
            let address = try calls.value(value)
            try calls.call(.setsockopt, fd, SOL_SOCKET, option.rawValue, address, 4, to: what)
        }
    }
}
