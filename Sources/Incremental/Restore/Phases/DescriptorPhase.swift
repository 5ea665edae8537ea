#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// The saved descriptor table at the same numbers, the working directory and the umask.
/// Terminals and pipes on 0-2 become ld-chpox's own stdio at the same number (a pipe only in
/// the tree's first process, and only one it does not hold both ends of: a pipe it made and
/// moved onto 0-2 to capture its own output is its own); other terminals its stdout; other
/// pipes a pipe whose other end is closed (reads see end of file, writes EPIPE), as if the
/// peer had exited. Images that recorded a pipe's buffer get it back: each pipe is created once
/// with its capacity and bytes, each of its open files reopened from it with the recorded
/// access and status flags, duplicates dup'ed again.
public struct DescriptorPhase: RestartPhase {
    /// A pipe to create before the descriptors: anonymous, or a FIFO reopened by `path`.
    public struct PipeSetup: Sendable, Equatable {
        public var inode: UInt64
        public var capacity: Int
        public var path: String?
        public var contents: Data

        public init(inode: UInt64, capacity: Int, path: String?, contents: Data) {
            (self.inode, self.capacity, self.path, self.contents) = (inode, capacity, path, contents)
        }
    }

    /// What one descriptor becomes.
    public enum Setup: Sendable, Equatable {
        /// The stub's copy of its stdin (0), stdout (1) or stderr (2).
        case stdio(Int32)
        /// One end of a new pipe whose other end is closed.
        case pipeWithoutPeer(readEnd: Bool)
        /// The path opened again with these open flags, then moved to `offset` when set.
        case reopen(path: String, flags: Int32, offset: Int64?)
        /// One of its own namespaces (TYPE of /proc/self/ns/TYPE), opened in the restarted process.
        case namespace(type: String, flags: Int32)
        /// A deleted directory (of `deletedDirectories`), opened again with these flags.
        case deletedDirectory(Int, flags: Int32)
        /// A deleted file: a new file of `size` bytes, the bytes of its data ranges (`contents`,
        /// one range after another; the whole file when `attributes` is nil) written, the rest
        /// left holes; opened, then unlinked.
        case recreate(
            contents: Data, size: Int64, flags: Int32, offset: Int64, attributes: ProcessImage.Descriptor.DeletedFile?)
        /// A deleted device node or symbolic link made again beside where it was, opened with
        /// these flags, then removed (`RecreatedNode`); nil: the image recorded none.
        case recreateNode(ProcessImage.Descriptor.DeletedNode?, flags: Int32, offset: Int64)
        /// A deleted file the memory layout recreated for mappings (`deletedFiles` index),
        /// opened again with these open flags, then moved to `offset`.
        case reopenDeleted(file: Int, flags: Int32, offset: Int64)
        /// The open file of a lower descriptor, shared again (dup3).
        case duplicate(of: Int32)
        /// One open file of pipe `inode` (of `pipes`), opened with this access mode, then given
        /// these status flags (F_SETFL). `created`: one pipe(2) made (no O_LARGEFILE, which any
        /// open sets), given the end pipe2 made in the stub; the others are opened again.
        case pipeEnd(inode: UInt64, access: Int32, statusFlags: Int32, created: Bool)
        /// The deleted file of a lower descriptor opened again with these flags.
        case sameDeletedFile(as: Int32, flags: Int32, offset: Int64)
        /// The deleted file another process of the tree recreated (its descriptor `fd`),
        /// opened again with these flags.
        case deletedFileOf(pid: Int32, fd: Int32, flags: Int32, offset: Int64)
        /// Memory file `file` (`MemoryLayoutPhase` made it), opened again with these flags;
        /// `created`: the open file memfd_create made itself, given these status flags (F_SETFL).
        case memoryFile(file: Int, flags: Int32, offset: Int64, created: Bool)
    }

    public struct Entry: Sendable, Equatable {
        public var fd: Int32
        public var closeOnExec: Bool
        public var setup: Setup

        public init(fd: Int32, closeOnExec: Bool, setup: Setup) {
            self.fd = fd
            self.closeOnExec = closeOnExec
            self.setup = setup
        }
    }

    /// Standard descriptors the image did not have: closed.
    public var closed: [Int32]
    public var entries: [Entry]
    public var pipes: [PipeSetup]
    /// Pipes of the tree another process creates (`TreeLayout`): their ends are opened from
    /// that process's.
    public var foreignPipes: Set<UInt64> = []
    /// Pipes this process creates that other processes open ends of: kept open for them until
    /// `SharedDescriptorPhase`.
    public var exportedPipes: Set<UInt64> = []
    /// Owners a recreated deleted file may be given: the image's own ids (any, for an image
    /// that ran as root: it could have chowned the file itself).
    var users: Set<UInt32>, groups: Set<UInt32>, anyOwner: Bool
    public var workingDirectory: String
    public var umask: UInt32
    /// Directories deleted while it held them, made again under their names, opened, removed.
    public var deletedDirectories: [ProcessImage.Descriptor.DeletedDirectory] = []
    /// Its working directory when it was deleted (an index in `deletedDirectories`).
    public var deletedWorkingDirectory: Int?
    /// How many deleted files `MemoryLayoutPhase` recreated and keeps open for this phase.
    public var deletedFileCount: Int
    /// How many memory files it made and keeps open (after the deleted files).
    public var memoryFileCount: Int = 0
    /// The seals each memfd it made gets back (F_ADD_SEALS), once every process of the tree
    /// has mapped it (a write seal forbids writable shared mappings after it) and before its
    /// descriptors are opened.
    public var seals: [(file: Int, seals: UInt32)] = []
    /// The process whose descriptor table this one shares (CLONE_FILES): that one makes every
    /// descriptor, and this one touches none (not even its own stdio copies, which are that
    /// one's too); only its working directory and umask are its own.
    public var tableOf: Int32?

    public var name: String { "descriptors" }
    public var steps: [String] {
        tableOf.map { ["its descriptor table is process \($0)'s (shared, clone CLONE_FILES): made there"] } ?? []
            + closed.map { "close \($0)" }
            + pipes.map { pipe in
                (pipe.path.map { "reopen FIFO \($0)" } ?? "create a pipe")
                    + " (inode \(pipe.inode)) of \(pipe.capacity)"
                    + " bytes holding \(pipe.contents.count)"
                    + (exportedPipes.contains(pipe.inode) ? ", kept for other processes" : "")
            }
            + entries.map { entry in
                let what: String
                switch entry.setup {
                case .stdio(let source): what = "ld-chpox's \(["stdin", "stdout", "stderr"][Int(source)])"
                case .pipeWithoutPeer(let readEnd):
                    what = "the \(readEnd ? "read" : "write") end of a pipe without peer"
                case .reopen(let path, _, let offset): what = path + (offset.map { " at offset \($0)" } ?? "")
                case .namespace(let type, _): what = "its own \(type) namespace (/proc/self/ns/\(type))"
                case .deletedDirectory(let k, _):
                    what =
                        "deleted directory \(deletedDirectories.indices.contains(k) ? deletedDirectories[k].path : "?")"
                case .recreate(let contents, let size, _, let offset, let attributes):
                    what =
                        "a deleted file recreated (\(size) bytes, \(contents.count) of data"
                        + (attributes.map { ", mode 0\(String($0.permissions, radix: 8))" } ?? "")
                        + ") at offset \(offset)"
                case .recreateNode(let node, _, _):
                    what = "a deleted \(node?.summary ?? "node") made again, opened, removed"
                case .duplicate(let source): what = "a duplicate of fd \(source)"
                case .pipeEnd(let inode, let access, let statusFlags, _):
                    let mode = access == O_RDONLY ? "read" : access == O_WRONLY ? "write" : "read-write"
                    what =
                        "a \(mode) end of pipe \(inode)" + (foreignPipes.contains(inode) ? " of another process" : "")
                        + (statusFlags & O_NONBLOCK != 0 ? " (non-blocking)" : "")
                case .sameDeletedFile(let source, _, let offset):
                    what = "the deleted file of fd \(source) at offset \(offset)"
                case .reopenDeleted(let file, _, let offset):
                    what = "deleted file \(file), recreated for its mappings, at offset \(offset)"
                case .deletedFileOf(let pid, let fd, _, let offset):
                    what = "the deleted file of descriptor \(fd) of process \(pid) at offset \(offset)"
                case .memoryFile(let file, _, let offset, let created):
                    what =
                        "memory file \(file)" + (created ? ", memfd_create's own open file," : "")
                        + " at offset \(offset)"
                }
                return "fd \(entry.fd): \(what)" + (entry.closeOnExec ? " (close-on-exec)" : "")
            } + seals.map { "seal memory file \($0.file): \(RecreatedMemoryFile.sealNames($0.seals))" }
            + deletedDirectories.map {
                "make \($0.path) (mode 0\(String($0.permissions, radix: 8))), open it, remove it: a deleted directory"
            }
            + (workingDirectory.isEmpty ? [] : ["cwd \(workingDirectory)"]) + ["umask 0\(String(umask, radix: 8))"]
    }

    /// The descriptors of `image`; in a tree, its pipes as `layout` shares them out.
    public init(image: ProcessImage, layout: TreeLayout? = nil, tableOf: Int32? = nil) {
        self.tableOf = tableOf
        let treePipes = layout?.sharedPipes ?? []
        // ld-chpox stands in for what ran the tree's first process only. Another process's
        // pipe on 0-2 that no process of the tree shares had its peer in the tree, gone since
        // (a pipeline's first command that wrote everything and exited): it gets its pipe
        // back with the bytes still queued, its peer closed, as at fd 3 and up.
        let keepsOwnPipes = layout.map { $0.first != image.pid } ?? false
        // A pipe on 0-2 whose read and write ends the process holds both is its own: it made
        // it and moved an end onto 0-2 (a program that captures its own output: pipe, dup2).
        let selfContained = Self.pipesWithBothEnds(image.descriptors)
        let ownPipe = { (fd: Int32, inode: UInt64?) in
            fd > 2 || keepsOwnPipes || treePipes.contains(inode ?? 0) || selfContained.contains(inode ?? 0)
        }
        foreignPipes = layout?.foreignPipes(of: image.pid) ?? []
        exportedPipes = layout?.exportedPipes(of: image.pid) ?? []
        closed = tableOf != nil ? [] : (Int32(0)..<3).filter { fd in !image.descriptors.contains { $0.fd == fd } }
        // A memfd's open file that memfd_create made is no writer of it (one opened again is:
        // exec of the memfd fails while one is open). Which of its read-write descriptors that
        // was cannot be read; the lowest one gets it (the usual case: the others opened later).
        let memoryFiles = image.memoryFiles ?? []
        var created = Set<Int32>()
        for (k, file) in memoryFiles.enumerated() where file.memfdName != nil && file.sameAs == nil {
            let first = image.descriptors.filter {
                $0.kind == .memoryFile && $0.memoryFile == k && $0.duplicateOf == nil && $0.flags & O_ACCMODE == O_RDWR
            }.map(\.fd).min()
            if let first { created.insert(first) }
        }
        entries = image.descriptors.compactMap { descriptor in
            let setup: Setup
            let flags = descriptor.flags & ~(O_CREAT | O_TRUNC | O_EXCL | O_CLOEXEC)
            switch descriptor.kind {
            case .socket: return nil  // every descriptor of a socket, duplicates too: SocketPhase
            case .inetSocket: return nil  // InetSocketPhase
            case .ptyMaster, .ptySlave: return nil  // every descriptor of a pty, duplicates too: PseudoTerminalPhase
            case _ where descriptor.duplicateOf != nil && descriptor.fd > 2:
                setup = .duplicate(of: descriptor.duplicateOf ?? 0)
            case .terminal where descriptor.fd <= 2: setup = .stdio(descriptor.fd)
            case .pipe where !ownPipe(descriptor.fd, descriptor.pipe?.inode):
                setup = .stdio(descriptor.fd)
            case .terminal: setup = .stdio(1)
            case .pipe where descriptor.pipe != nil:
                setup = .pipeEnd(
                    inode: descriptor.pipe?.inode ?? 0, access: descriptor.flags & O_ACCMODE,
                    statusFlags: descriptor.flags & Self.statusFlags,
                    created: descriptor.flags & CHPOX_O_LARGEFILE == 0 && descriptor.pipe?.path == nil)
            case .deletedFile where descriptor.deletedFileOf != nil,
                .sparseDeletedFile where descriptor.deletedFileOf != nil:
                setup = .deletedFileOf(
                    pid: descriptor.deletedFileOf?.pid ?? 0, fd: descriptor.deletedFileOf?.fd ?? 0, flags: flags,
                    offset: descriptor.offset)
            case _
            where descriptor.kind.isDeletedFile && descriptor.deletedFile == nil
                && descriptor.deletedAttributes?.sameFileAs != nil:
                setup = .sameDeletedFile(
                    as: descriptor.deletedAttributes?.sameFileAs ?? 0, flags: flags, offset: descriptor.offset)
            case .pipe: setup = .pipeWithoutPeer(readEnd: descriptor.flags & O_ACCMODE == O_RDONLY)
            case .null: setup = .reopen(path: "/dev/null", flags: flags, offset: nil)
            case .namespace:
                guard let type = ImageCapture.namespaceType(descriptor.target) else { return nil }
                setup = .namespace(type: type, flags: flags)
            case .deletedDirectory:
                guard let k = descriptor.deletedDirectory else { return nil }
                setup = .deletedDirectory(k, flags: flags)
            case .directory: setup = .reopen(path: descriptor.target, flags: flags, offset: nil)
            case .file: setup = .reopen(path: descriptor.target, flags: flags, offset: descriptor.offset)
            case .deletedFile where descriptor.deletedFile != nil,
                .sparseDeletedFile where descriptor.deletedFile != nil:
                setup = .reopenDeleted(file: descriptor.deletedFile ?? 0, flags: flags, offset: descriptor.offset)
            case .deletedFile, .sparseDeletedFile:
                let (contents, size) = Self.dataOfDeletedFile(descriptor)
                setup = .recreate(
                    contents: contents, size: size, flags: flags, offset: descriptor.offset,
                    attributes: descriptor.deletedAttributes)
            case .deletedNode:
                setup = .recreateNode(descriptor.deletedNode, flags: flags, offset: descriptor.offset)
            case .memoryFile:
                guard let file = descriptor.memoryFile else { return nil }
                setup = .memoryFile(
                    file: file, flags: flags, offset: descriptor.offset, created: created.contains(descriptor.fd))
            case .event, .unsupported: return nil  // events: EventDescriptorPhase
            }
            return Entry(fd: descriptor.fd, closeOnExec: descriptor.flags & O_CLOEXEC != 0, setup: setup)
        }
        var pipes: [PipeSetup] = []
        // A pipe on 0-2 is ld-chpox's stdio, but where another process of the tree has an end
        // of it (a shell pipeline): then it is created and its ends shared out.
        for descriptor in image.descriptors {
            guard let pipe = descriptor.pipe, ownPipe(descriptor.fd, pipe.inode),
                !pipes.contains(where: { $0.inode == pipe.inode }), !foreignPipes.contains(pipe.inode)
            else { continue }
            let contents = image.descriptors.lazy.compactMap { $0.pipe?.inode == pipe.inode ? $0.pipe?.contents : nil }
            pipes.append(
                .init(inode: pipe.inode, capacity: pipe.capacity, path: pipe.path, contents: contents.first ?? Data()))
        }
        self.pipes = pipes
        users = Set(image.credentials.user.all)
        groups = Set(image.credentials.group.all + image.credentials.groups)
        anyOwner = image.credentials.user.effective == 0
        workingDirectory = image.workingDirectory
        umask = image.umask
        deletedDirectories = image.deletedDirectories ?? []
        deletedWorkingDirectory = image.deletedWorkingDirectory
        deletedFileCount = image.deletedFiles?.count ?? 0
        memoryFileCount = memoryFiles.count
        seals = memoryFiles.enumerated().compactMap { k, file in
            RecreatedMemoryFile.sealsToAdd(file).map { (k, $0) }
        }
    }

    /// The pipes of which `descriptors` hold a read end and a write end (or a read-write one).
    static func pipesWithBothEnds(_ descriptors: [ProcessImage.Descriptor]) -> Set<UInt64> {
        var readers = Set<UInt64>(), writers = Set<UInt64>()
        for descriptor in descriptors where descriptor.kind == .pipe {
            guard let inode = descriptor.pipe?.inode else { continue }
            let access = descriptor.flags & O_ACCMODE
            if access != O_WRONLY { readers.insert(inode) }
            if access != O_RDONLY { writers.insert(inode) }
        }
        return readers.intersection(writers)
    }

    /// A deleted file's data, its data ranges' bytes one after another, and its size. A
    /// `deletedFile` holds the whole file, holes as zeros (its data ranges are cut out of it);
    /// a `sparseDeletedFile` the data alone, its size recorded (-1 where it is missing: the
    /// restart refuses it).
    static func dataOfDeletedFile(_ descriptor: ProcessImage.Descriptor) -> (contents: Data, size: Int64) {
        let contents = descriptor.contents ?? Data()
        guard descriptor.kind == .deletedFile else { return (contents, descriptor.deletedAttributes?.size ?? -1) }
        guard let ranges = descriptor.deletedAttributes?.dataRanges else { return (contents, Int64(contents.count)) }
        var data = Data()
        for range in ranges where range.count == 2 && 0 <= range[0] && range[0] <= range[1] {
            let end = min(Int(range[1]), contents.count)
            if Int(range[0]) < end {
                data.append(contents[contents.startIndex + Int(range[0])..<contents.startIndex + end])
            }
        }
        return (data, descriptor.deletedAttributes?.size ?? Int64(contents.count))
    }

    /// The status flags F_SETFL sets (O_ASYNC needs an owner too and is left out).
    static let statusFlags = O_APPEND | O_NONBLOCK | CHPOX_O_DIRECT | CHPOX_O_NOATIME

    public func run(in session: RestartSession) throws {
        let calls = session.calls
        guard tableOf == nil else {
            // Its deleted working directory is made again for it alone, held only while it enters it.
            var directories = [Int32](repeating: -1, count: deletedDirectories.count)
            defer { for fd in directories where fd >= 0 { _ = try? calls.result(of: .close, fd) } }
            if let k = deletedWorkingDirectory, deletedDirectories.indices.contains(k) {
                directories[k] = try make(deletedDirectories[k], calls)
            }
            return try setDirectories(session, directories: directories)
        }
        for fd in closed { _ = try calls.result(of: .close, fd) }
        var holders: [UInt64: Int32] = [:]
        var foreign: [UInt64: String] = [:]
        var ends = PipeEnds()
        for pipe in pipes {
            let made = try create(pipe, session)
            holders[pipe.inode] = made.holder
            if let write = made.write {
                ends.unused[pipe.inode] = [O_RDONLY: made.holder, O_WRONLY: write]
                ends.writeEnds.append(write)
            }
        }
        // The deleted files kept for mappings first: a descriptor of the image may take the
        // number one of them is kept at. Then those numbers are closed, but where one is now
        // the image's.
        let reopensDeleted: (Entry) -> Bool = {
            switch $0.setup {
            case .reopenDeleted, .memoryFile: return true
            default: return false
            }
        }
        for (file, seals) in seals {
            let kept = MemoryLayoutPhase.memoryFileCopy(file, deletedFiles: deletedFileCount)
            try calls.call(
                .fcntl, kept, CHPOX_F_ADD_SEALS, seals,
                to: "seal memory file \(file) (\(RecreatedMemoryFile.sealNames(seals)))")
        }
        // Ends of pipes another process made are opened from its descriptor of them.
        for inode in foreignPipes {
            guard let holder = session.tree.pipeHolders[inode] else {
                throw TraceeError.unsupported(pid: calls.pid, reason: "pipe \(inode) was not created")
            }
            holders[inode] = -1
            foreign[inode] = "/proc/\(holder.pid)/fd/\(holder.fd)"
        }
        var directories: [Int32] = []
        for directory in deletedDirectories { directories.append(try make(directory, calls)) }
        ends.directories = directories
        for entry in entries where reopensDeleted(entry) {
            try set(entry, holders: holders, foreign, &ends, session)
        }
        for entry in entries where !reopensDeleted(entry) {
            try set(entry, holders: holders, foreign, &ends, session)
        }
        for write in ends.writeEnds { _ = try calls.result(of: .close, write) }
        let kept =
            RestartSession
            .deletedFileCopies..<(RestartSession.deletedFileCopies
            + Int32(deletedFileCount + memoryFileCount))
        for fd in kept where !entries.contains(where: { $0.fd == fd }) { _ = try calls.result(of: .close, fd) }
        for (inode, holder) in holders where holder >= 0 {
            if exportedPipes.contains(inode) {
                session.tree.pipeHolders[inode] = (session.pid, holder)
            } else {
                _ = try calls.result(of: .close, holder)
            }
        }
        try setDirectories(session, directories: directories)
        for fd in directories { _ = try calls.result(of: .close, fd) }
        for fd in RestartSession.stdioCopies..<(RestartSession.stdioCopies + 3) { _ = try calls.result(of: .close, fd) }
    }

    /// Its working directory (a deleted one from `directories`, made again) and its umask.
    private func setDirectories(_ session: RestartSession, directories: [Int32]) throws {
        let calls = session.calls
        if let k = deletedWorkingDirectory, directories.indices.contains(k) {
            try calls.call(
                .fchdir, directories[k], to: "enter its deleted working directory \(deletedDirectories[k].path)")
        } else if !workingDirectory.isEmpty {
            _ = try calls.withFrame { () throws(TraceeError) in
                try calls.result(of: .chdir, try calls.string(workingDirectory))
            }
        }
        _ = try calls.result(of: .umask, umask)
    }

    /// A pipe's descriptors in the stub are kept above every descriptor of the image while the
    /// image's are set up.
    static let holderBase = RestartSession.stdioCopies + 3

    /// Makes `directory` again under its name (and its parents that are gone), with its mode
    /// and owner, opens it, and removes what it made: the stub holds a deleted directory at its
    /// path, as the process did. Refused when something is at that path now.
    private func make(_ directory: ProcessImage.Descriptor.DeletedDirectory, _ calls: RemoteCalls) throws -> Int32 {
        let what = "make the deleted directory \(directory.path) again"
        let components = directory.path.split(separator: "/").map(String.init)
        guard !components.isEmpty, !components.contains(where: { $0 == "." || $0 == ".." }) else {
            throw TraceeError.unsupported(pid: calls.pid, reason: "\(what): not a path it can make")
        }
        var made: [String] = []
        defer {
            for path in made.reversed() {
                _ = try? calls.withFrame { () throws(TraceeError) in
                    try calls.result(of: .unlinkat, AT_FDCWD, try calls.string(path), AT_REMOVEDIR)
                }
            }
        }
        var path = ""
        for (k, component) in components.enumerated() {
            path += "/" + component
            let result = try calls.withFrame { () throws(TraceeError) in
                try calls.result(of: .mkdirat, AT_FDCWD, try calls.string(path), 0o700)
            }
            if result == 0 {
                made.append(path)
            } else if result == -Int(EEXIST) && k < components.count - 1 {
                continue
            } else if result == -Int(EEXIST) {
                throw TraceeError.unsupported(
                    pid: calls.pid,
                    reason: "\(what): \(path) exists now; a deleted directory is made again under its name "
                        + "(move that away, or restart elsewhere)")
            } else {
                try calls.check(result, "\(what): make \(path)")
            }
        }
        let fd = try calls.withFrame { () throws(TraceeError) in
            let name = try calls.string(directory.path)
            try calls.call(.fchownat, AT_FDCWD, name, directory.owner, directory.group, AT_SYMLINK_NOFOLLOW, to: what)
            try calls.call(.fchmodat, AT_FDCWD, name, directory.permissions, 0, to: what)
            return try calls.call(.openat, AT_FDCWD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0, to: what)
        }
        let kept = Int32(try calls.call(.fcntl, fd, F_DUPFD_CLOEXEC, Self.holderBase, to: what))
        _ = try calls.result(of: .close, fd)
        return kept
    }

    /// The ends pipe2 made of each pipe of the process, until a descriptor that pipe(2) made
    /// (`created`) takes one: by inode, then access mode. The write ends are closed once every
    /// descriptor is set (the read ends are the holders).
    struct PipeEnds {
        var unused: [UInt64: [Int32: Int32]] = [:]
        var writeEnds: [Int32] = []
        /// The deleted directories made again, open (by index), until every descriptor is set.
        var directories: [Int32] = []

        /// The end of `inode` for `access`, once: nil when taken, or not a pipe of pipe2's.
        mutating func take(_ inode: UInt64, _ access: Int32) -> Int32? {
            unused[inode]?.removeValue(forKey: access)
        }
    }

    /// Creates `pipe` in the stub with its capacity and bytes; returns a descriptor of the stub on
    /// it (a read end, or a FIFO open read-write) from which its open files are reopened, and
    /// for a pipe, its write end (kept above the image's descriptors too, until they are set).
    private func create(_ pipe: PipeSetup, _ session: RestartSession) throws -> (holder: Int32, write: Int32?) {
        let calls = session.calls
        let what = "create pipe \(pipe.inode)"
        var write: Int32?
        let opened: Int32
        if let path = pipe.path {
            opened = Int32(
                try session.openRecorded(path, flags: O_RDWR | O_NONBLOCK | O_CLOEXEC, to: "reopen FIFO \(path)"))
        } else {
            let pair = try calls.withFrame { () throws(TraceeError) in
                let ends = try calls.reserve(8)
                try calls.call(.pipe2, ends, O_CLOEXEC, to: what)
                return try calls.words(at: ends, count: 1)[0]
            }
            opened = Int32(truncatingIfNeeded: pair)
            write = Int32(truncatingIfNeeded: pair >> 32)
        }
        let holder = Int32(try calls.call(.fcntl, opened, F_DUPFD_CLOEXEC, Self.holderBase, to: what))
        _ = try calls.result(of: .close, opened)
        var writeHolder: Int32?
        if let write {
            writeHolder = Int32(try calls.call(.fcntl, write, F_DUPFD_CLOEXEC, Self.holderBase, to: what))
            _ = try calls.result(of: .close, write)
        }
        try calls.call(.fcntl, holder, CHPOX_F_SETPIPE_SZ, pipe.capacity, to: "give pipe \(pipe.inode) its capacity")
        do {
            let file = try FileDescriptor.open("/proc/\(calls.pid)/fd/\(holder)", [.writeOnly, .nonBlocking])
            defer { file.close() }
            guard try file.status().isFIFO else { throw Errno(rawValue: ENXIO) }
            let queued = try file.bytesQueued()
            guard queued == 0 else {
                throw TraceeError.unsupported(
                    pid: calls.pid, reason: "\(pipe.path ?? "pipe") holds \(queued) bytes already")
            }
            try [UInt8](pipe.contents).withRawBytes { (raw) throws(Errno) in try file.writeAll(raw) }
        } catch let error as TraceeError {
            throw error
        } catch let error as Errno {
            throw TraceeError.from(error, pid: calls.pid, "fill \(pipe.path ?? "pipe \(pipe.inode)") of")
        }
        return (holder, writeHolder)
    }

    private func set(
        _ entry: Entry, holders: [UInt64: Int32], _ foreign: [UInt64: String], _ ends: inout PipeEnds,
        _ session: RestartSession
    ) throws {
        let calls = session.calls
        let target = entry.fd
        let cloexec = entry.closeOnExec ? O_CLOEXEC : 0
        switch entry.setup {
        case .stdio(let source):
            try calls.call(
                .dup3, RestartSession.stdioCopies + source, target, cloexec, to: "set up descriptor \(target)")
        case .pipeWithoutPeer(let readEnd):
            let pair = try calls.withFrame { () throws(TraceeError) in
                let ends = try calls.reserve(8)
                try calls.call(.pipe2, ends, O_CLOEXEC, to: "create a pipe for descriptor \(target)")
                return try calls.words(at: ends, count: 1)[0]
            }
            // The kernel may hand out `target` itself for either end.
            let read = Int32(truncatingIfNeeded: pair), write = Int32(truncatingIfNeeded: pair >> 32)
            let keep = readEnd ? read : write, other = readEnd ? write : read
            if keep != target {
                try calls.call(.dup3, keep, target, cloexec, to: "set up descriptor \(target)")
                _ = try calls.result(of: .close, keep)
            } else if cloexec == 0 {
                try calls.call(.fcntl, target, F_SETFD, 0, to: "set up descriptor \(target)")
            }
            if other != target { _ = try calls.result(of: .close, other) }
        case .reopen(let path, let flags, let offset):
            try open(path, flags: flags, as: target, cloexec: cloexec, session)
            if let offset { _ = try calls.result(of: .lseek, target, offset, SEEK_SET) }
        case .deletedDirectory(let k, let flags):
            guard ends.directories.indices.contains(k) else {
                throw TraceeError.unsupported(pid: calls.pid, reason: "deleted directory \(k) was not made")
            }
            try open(
                "/proc/self/fd/\(ends.directories[k])", flags: flags, as: target, cloexec: cloexec, recorded: false,
                session)
        case .namespace(let type, let flags):
            // A magic link of procfs, followed on purpose (the path is chpox's, not the image's).
            try open("/proc/self/ns/\(type)", flags: flags, as: target, cloexec: cloexec, recorded: false, session)
        case .recreate(let contents, let size, let flags, let offset, let attributes):
            try recreate(
                contents, size: size, attributes: attributes, flags: flags, as: target, cloexec: cloexec, session)
            _ = try calls.result(of: .lseek, target, offset, SEEK_SET)
        case .recreateNode(let node, let flags, let offset):
            guard let node else {
                throw TraceeError.unsupported(
                    pid: calls.pid, reason: "the image records no deleted node for descriptor \(target)")
            }
            guard anyOwner || (users.contains(node.owner) && groups.contains(node.group)) else {
                throw TraceeError.unsupported(
                    pid: calls.pid,
                    reason:
                        "the deleted \(node.summary) of descriptor \(target) belongs to \(node.owner):\(node.group), "
                        + "not to the image's user")
            }
            let opened = try RecreatedNode.open(node, flags: flags, calls)
            let what = "set up descriptor \(target) as the deleted \(node.summary)"
            if opened != target {
                try calls.call(.dup3, opened, target, cloexec, to: what)
                _ = try calls.result(of: .close, opened)
            } else if cloexec == 0 {
                try calls.call(.fcntl, target, F_SETFD, 0, to: what)
            }
            // An O_PATH descriptor has no offset (lseek fails).
            if flags & CHPOX_O_PATH == 0 { _ = try calls.result(of: .lseek, target, offset, SEEK_SET) }
        case .duplicate(let source):
            try calls.call(
                .dup3, source, target, cloexec, to: "set up descriptor \(target) as a duplicate of \(source)")
        case .pipeEnd(let inode, let access, let statusFlags, let created):
            guard let holder = holders[inode] else {
                throw TraceeError.unsupported(pid: calls.pid, reason: "pipe \(inode)")
            }
            if created, foreign[inode] == nil, let end = ends.take(inode, access) {
                try calls.call(.dup3, end, target, cloexec, to: "set up descriptor \(target) as pipe \(inode)'s end")
            } else if let path = foreign[inode] {
                let what = "open pipe \(inode) of another process as descriptor \(target)"
                let opened = try session.openOfTree(path, flags: access | O_NONBLOCK, to: what)
                if opened != target {
                    try calls.call(.dup3, opened, target, cloexec, to: what)
                    _ = try calls.result(of: .close, opened)
                } else if cloexec == 0 {
                    try calls.call(.fcntl, target, F_SETFD, 0, to: what)
                }
            } else {
                try open(
                    "/proc/self/fd/\(holder)", flags: access | O_NONBLOCK, as: target, cloexec: cloexec,
                    recorded: false, session)
            }
            try calls.call(.fcntl, target, F_SETFL, statusFlags, to: "set the status flags of descriptor \(target)")
        case .sameDeletedFile(let source, let flags, let offset):
            try open("/proc/self/fd/\(source)", flags: flags, as: target, cloexec: cloexec, recorded: false, session)
            _ = try calls.result(of: .lseek, target, offset, SEEK_SET)
        case .deletedFileOf(let pid, let fd, let flags, let offset):
            let what = "open the deleted file of descriptor \(fd) of process \(pid) as descriptor \(target)"
            let opened = try session.openOfTree(
                "/proc/\(try session.tree.current(pid))/fd/\(fd)", flags: flags & ~O_CLOEXEC, to: what)
            if opened != target {
                try calls.call(.dup3, opened, target, cloexec, to: what)
                _ = try calls.result(of: .close, opened)
            } else if cloexec == 0 {
                try calls.call(.fcntl, target, F_SETFD, 0, to: what)
            }
            _ = try calls.result(of: .lseek, target, offset, SEEK_SET)
        case .memoryFile(let file, let flags, let offset, let created):
            let kept = MemoryLayoutPhase.memoryFileCopy(file, deletedFiles: deletedFileCount)
            if created {
                let what = "set up descriptor \(target) as memory file \(file)"
                if kept != target {
                    try calls.call(.dup3, kept, target, cloexec, to: what)
                } else {
                    try calls.call(.fcntl, target, F_SETFD, cloexec != 0 ? FD_CLOEXEC : 0, to: what)
                }
                try calls.call(.fcntl, target, F_SETFL, flags & Self.statusFlags, to: what)
            } else {
                try open("/proc/self/fd/\(kept)", flags: flags, as: target, cloexec: cloexec, recorded: false, session)
            }
            _ = try calls.result(of: .lseek, target, offset, SEEK_SET)
        case .reopenDeleted(let file, let flags, let offset):
            let kept = RestartSession.deletedFileCopies + Int32(file)
            try open("/proc/self/fd/\(kept)", flags: flags, as: target, cloexec: cloexec, recorded: false, session)
            _ = try calls.result(of: .lseek, target, offset, SEEK_SET)
        }
    }

    /// A deleted file's saved contents in a new file that never has a name (O_TMPFILE in /tmp,
    /// created by the stub): nothing at a guessable path is created, followed or truncated.
    /// ld-chpox fills it through /proc/PID/fd/N; the stub then reopens it with the saved flags.
    /// The file gets the recorded permissions, owner (only ids the image itself runs as), holes
    /// and modification time.
    private func recreate(
        _ contents: Data, size: Int64, attributes: ProcessImage.Descriptor.DeletedFile?, flags: Int32,
        as target: Int32, cloexec: Int32, _ session: RestartSession
    ) throws {
        let calls = session.calls
        guard size >= 0, let pieces = RecreatedFile.pieces(attributes?.dataRanges ?? [[0, size]], of: contents) else {
            throw TraceeError.unsupported(
                pid: calls.pid,
                reason: "the image's deleted file of descriptor \(target) records no size, or fewer bytes than its "
                    + "data ranges")
        }
        // A file the program made with O_TMPFILE (zdtm unlink_fstat041) has those bits in its
        // flags, which no reopen gives (O_DIRECTORY among them fails): the new unnamed file is
        // its descriptor itself, made with its access mode.
        let unnamedFile = flags & CHPOX_O_TMPFILE == CHPOX_O_TMPFILE
        let unnamed = try RecreatedFile.empty(
            for: "descriptor \(target)", access: unnamedFile ? flags & O_ACCMODE : O_RDWR, calls)
        // The kernel may hand out `target` itself: then the reopened file replaces it there.
        defer { if unnamed != target { _ = try? calls.result(of: .close, unnamed) } }
        do {
            let file = try FileDescriptor.open("/proc/\(calls.pid)/fd/\(unnamed)", [.writeOnly])
            defer { file.close() }
            for piece in pieces {
                try [UInt8](piece.bytes).withRawBytes { (raw) throws(Errno) in try file.writeAll(raw, at: piece.at) }
            }
            try file.setSize(size)
            if let attributes {
                guard anyOwner || (users.contains(attributes.owner) && groups.contains(attributes.group)) else {
                    throw TraceeError.unsupported(
                        pid: calls.pid,
                        reason:
                            "the deleted file of descriptor \(target) belongs to "
                            + "\(attributes.owner):\(attributes.group), not to the image's user")
                }
                try file.setOwner(user: attributes.owner, group: attributes.group)
                try file.setPermissions(attributes.permissions)  // after the owner: chown clears set-id bits
                if attributes.modified.count == 2 {
                    try file.setModificationTime(
                        timespec(tv_sec: Int(attributes.modified[0]), tv_nsec: Int(attributes.modified[1])))
                }
            }
        } catch let error as TraceeError {
            throw error
        } catch let error as Errno {
            throw TraceeError.from(error, pid: calls.pid, "write the deleted file of descriptor \(target) of")
        }
        guard unnamedFile else {
            try open("/proc/self/fd/\(unnamed)", flags: flags, as: target, cloexec: cloexec, recorded: false, session)
            return
        }
        let what = "set up descriptor \(target) as the file it made with O_TMPFILE"
        if unnamed != target { try calls.call(.dup3, unnamed, target, cloexec, to: what) }
        if cloexec == 0 { try calls.call(.fcntl, target, F_SETFD, 0, to: what) }
        try calls.call(.fcntl, target, F_SETFL, flags & Self.statusFlags, to: what)
    }

    /// Opens `path` with `flags` at descriptor `target`; a `recorded` path (a file or directory
    /// of the image) is never followed through a symlink in its last component, and is opened
    /// with root's access only where `RestartSession.openRecorded` allows it.
    private func open(
        _ path: String, flags: Int32, as target: Int32, cloexec: Int32, recorded: Bool = true,
        _ session: RestartSession
    ) throws {
        let calls = session.calls
        let what = "reopen \(path) as descriptor \(target)"
        let opened =
            recorded
            ? try session.openRecorded(path, flags: flags | cloexec, to: what)
            : try calls.withFrame { () throws(TraceeError) in
                try calls.call(.openat, AT_FDCWD, try calls.string(path), flags | cloexec, 0, to: what)
            }
        if opened != target {
            try calls.call(.dup3, opened, target, cloexec, to: "set up descriptor \(target)")
            _ = try calls.result(of: .close, opened)
        }
    }
}
