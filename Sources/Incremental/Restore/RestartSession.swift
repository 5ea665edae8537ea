#if canImport(Glibc)
import Glibc
#endif
import Store
import Syscall
import Tracee

/// The live side of a restart: the stub being rebuilt (frozen), the system calls run in it,
/// and what one phase leaves for a later one.
public final class RestartSession {
    public let image: ProcessImage
    public let store: Store
    public let map: PageMap
    public let generation: UInt64
    public let process: FrozenProcess
    /// What the processes of one restart share: their new pids, the pipes one made for others.
    public let tree: RestartTree
    /// System calls inside the stub. Until the memory layout phase has mapped the trampoline
    /// they run at the stub's vDSO with no scratch memory; then at the trampoline with its
    /// scratch pages.
    public internal(set) var calls: RemoteCalls
    /// The trampoline and scratch mapping (`MemoryLayoutPhase`), unmapped last (`RegistersPhase`).
    var trampoline: (address: UInt64, size: Int)?
    /// Each saved thread id and the thread that is it now (the main thread is the stub's pid;
    /// `ThreadPhase` adds the others as it creates them, with new ids where the saved are taken).
    public internal(set) var threadIDs: [Int32: Int32] = [:]

    /// Each thread as (its tid in the image, its tid now), the main thread (`main` in the
    /// image) first, then the others by their tid in the image.
    func threadsBySavedID(main: Int32) -> [(saved: Int32, current: Int32)] {
        [(main, pid)] + threadIDs.filter { $0.key != main }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }
    /// What the restart changed outside the process (files cut back), for the user.
    public internal(set) var notices: [String] = []
    /// Pages written by the page fill.
    public internal(set) var pagesWritten = 0
    /// Of those, the pages put in by UFFDIO_COPY (`PageCopier`) rather than written over a
    /// zeroed page.
    public internal(set) var pagesCopied = 0
    /// The process whose stub forked this one once its memory was rebuilt (nil for the first):
    /// this one starts with that memory, runs its first calls at that one's trampoline, and
    /// keeps what it shared copy-on-write (`MemoryLayoutPhase`).
    public let forkedFrom: RestartSession?
    /// Forked sharing its parent's descriptor table (CLONE_FILES).
    public let sharesDescriptorTable: Bool
    /// Pages it keeps as its parent's, shared copy-on-write (`MemoryLayoutPhase`): the page
    /// fill leaves them.
    var inheritedPages: Set<UInt64> = []
    /// Where the running kernel's vDSO is when the image's is a proxy for it
    /// (`VDSOProxy.Plan.proxied`): what AT_SYSINFO_EHDR says (`MemoryDescriptorPhase`).
    var runningVDSO: UInt64?

    public var pid: Int32 { process.pid }
    /// Its pid in its own PID namespace (what its system calls name it by): the saved one in a
    /// new namespace, else `pid`.
    public var innerPid: Int32 { tree.namespace ? image.pid : pid }
    /// Each saved thread id and the thread that is it now, as the process itself knows it
    /// (`threadIDs` holds them as ld-chpox sees them).
    public internal(set) var innerThreadIDs: [Int32: Int32] = [:]

    /// Where the stub's own stdin, stdout and stderr are kept while its descriptors are rebuilt
    /// (terminals and pipes of the image become these).
    static let stdioCopies: Int32 = 1000
    /// Where the deleted files the image's mappings share are kept, the first at this number,
    /// from the memory layout until the descriptors are rebuilt (descriptors of the same file
    /// reopen them).
    static let deletedFileCopies: Int32 = 1003

    /// Freezes the stub `pid` once it has reached its pause.
    convenience init(
        stub pid: Int32, image: ProcessImage, store: Store, map: PageMap, generation: UInt64, tree: RestartTree
    ) throws {
        // At most a second. (A `for ... where` here once read /proc/<pid>/stat 10,000 times
        // whatever the state: 66 ms of every restart, a second in a debug build.)
        for _ in 0..<10000 {
            if (try? ProcFS.state(pid)) == "S" { break }
            CurrentProcess.sleep(microseconds: 100)
        }
        try self.init(
            process: try FrozenProcess(pid: pid), image: image, store: store, map: map, generation: generation,
            tree: tree)
    }

    /// Rebuilds `image` in `process`, a frozen stub, or a process `parent`'s stub forked
    /// (`fork`), sharing its descriptor table where `sharesDescriptorTable`.
    init(
        process: FrozenProcess, image: ProcessImage, store: Store, map: PageMap, generation: UInt64, tree: RestartTree,
        forkedFrom parent: RestartSession? = nil, sharesDescriptorTable: Bool = false
    ) throws {
        self.image = image
        self.store = store
        self.map = map
        self.generation = generation
        self.process = process
        self.tree = tree
        forkedFrom = parent
        self.sharesDescriptorTable = sharesDescriptorTable
        calls = RemoteCalls(process, purpose: "restart")
        if let trampoline = parent?.trampoline {
            // Its stack is its parent's stub's, unmapped there: its calls run at the trampoline it has too.
            useTrampoline(at: trampoline.address, size: trampoline.size, scratch: Self.scratch(of: trampoline.address))
        }
        tree.pids[image.pid] = process.pid
    }

    /// The scratch pages after the trampoline at `address` (`MemoryLayoutPhase`).
    static func scratch(of trampoline: UInt64) -> ScratchArena {
        ScratchArena(
            base: trampoline + UInt64(MemoryLayoutPhase.trampolineSize), size: MemoryLayoutPhase.scratchSize)
    }

    /// Runs `body` with calls that have scratch memory: at the trampoline once there is one,
    /// else on the stub's own stack (`size` bytes below its red zone).
    func withScratch<T>(size: Int, _ body: (RemoteCalls) throws(TraceeError) -> T) throws(TraceeError) -> T {
        if trampoline != nil {
            let calls = self.calls
            return try calls.withFrame { () throws(TraceeError) in try body(calls) }
        }
        return try RemoteCalls.onStack(of: process, size: size, purpose: "restart", body)
    }

    /// Runs later calls at the trampoline, with the scratch pages after it.
    func useTrampoline(at address: UInt64, size: Int, scratch: ScratchArena) {
        trampoline = (address, size)
        process.useSyscallInstruction(at: address)
        calls = RemoteCalls(process, scratch: scratch, purpose: "restart")
    }
}

extension RemoteCalls {
    /// Opens, inside the stub, a path the image recorded as a regular file or directory (as
    /// /proc resolved it: no symlink in it then), never following a symlink in its last
    /// component: one there now was put there after the checkpoint.
    func openRecorded(_ path: String, flags: Int32, to what: String) throws(TraceeError) -> Int {
        let fd = try openRecordedResult(path, flags: flags, to: what)
        try check(fd, what)
        return fd
    }

    /// `openRecorded`'s open, its result as the kernel answered (a negated errno on failure);
    /// a symlink in the last component is refused. The path is opened O_PATH|O_NOFOLLOW, then
    /// that file opened again through /proc/self/fd with the recorded flags: O_NOFOLLOW stays
    /// in a file's status flags (F_GETFL, fdinfo), so it is set only where the program had it.
    /// Opening a symlink itself that way answers ELOOP, as O_NOFOLLOW does.
    func openRecordedResult(_ path: String, flags: Int32, to what: String) throws(TraceeError) -> Int {
        try withFrame { () throws(TraceeError) -> Int in
            var fd: Int
            if flags & O_NOFOLLOW == 0 {
                let located = try result(
                    of: .openat, AT_FDCWD, try string(path),
                    FileDescriptor.OpenOptions.pathOnly.rawValue | O_NOFOLLOW | O_CLOEXEC, 0)
                guard located >= 0 else { return located }
                fd = try result(of: .openat, AT_FDCWD, try string("/proc/self/fd/\(located)"), flags, 0)
                _ = try result(of: .close, located)
            } else {
                fd = -Int(ENOENT)  // a /proc link answers ELOOP to O_NOFOLLOW: opened directly
            }
            // A process that sees no /proc (chrooted) opens the path with O_NOFOLLOW directly.
            if fd == -Int(ENOENT) {
                fd = try result(of: .openat, AT_FDCWD, try string(path), flags | O_NOFOLLOW, 0)
            }
            if fd == -Int(ELOOP) {
                throw TraceeError.unsupported(
                    pid: pid,
                    reason: "cannot \(what): \(path) is a symbolic link now, where this generation had a file; "
                        + "a restart does not follow it (put the file back, or remove the link)")
            }
            return fd
        }
    }
}

extension RestartSession {
    /// Opens a path the image recorded (a file it held open or mapped, its executable) as
    /// `RemoteCalls.openRecorded` does, with the image owner's access (`FileAccessPhase`).
    /// Where that access is refused, the process had opened the file under other credentials
    /// (before it changed its ids, or by exec of a file it may not read). Only a restart the
    /// image is trusted for (`RestartTree.trustedAsRoot`: root, from a store only root can
    /// write) opens it again with the stub's own (root's) access, for that one call; and only
    /// when the file opened is the one at the recorded path itself, no symlink followed on the
    /// way (its path as /proc resolves it is the recorded one). Otherwise the restart is
    /// refused, saying which uid could not open which path and why (docs/threat-model.md).
    func openRecorded(_ path: String, flags: Int32, to what: String) throws -> Int {
        let fd = try calls.openRecordedResult(path, flags: flags, to: what)
        guard fd == -Int(EACCES) || fd == -Int(EPERM) else {
            try calls.check(fd, what)
            return fd
        }
        let uid = (try? ProcFS.status(pid).userIDs.last).map { "uid \($0)" } ?? "the image's user"
        let denied = "cannot \(what): \(uid) may not open \(path) (\(Errno(rawValue: Int32(-fd))))"
        let why =
            "the process opened it under other credentials (before it changed its user or group ids, or by exec "
            + "of a file it may not read)"
        guard tree.trustedAsRoot else {
            let trust =
                CurrentProcess.userID != 0
                ? "only root, restarting it from a store only root can write, opens it again with root's access"
                : "its store is uid \(store.owner)'s, who could have written any path into the image: a restart "
                    + "from a store others can write opens files only with the image owner's access, never root's"
            throw TraceeError.unsupported(pid: pid, reason: "\(denied); \(why), and \(trust)")
        }
        let previous = try calls.result(of: .setfsuid, 0)
        let opened: Int
        do {
            defer { _ = try? calls.result(of: .setfsuid, previous) }
            opened = try calls.openRecordedResult(path, flags: flags, to: what)
        }
        try calls.check(opened, what)
        let reached = ProcFS.descriptorTarget(pid, Int32(opened))
        guard reached == path else {
            _ = try? calls.result(of: .close, opened)
            throw TraceeError.unsupported(
                pid: pid,
                reason: "\(denied); \(why), and opened with root's access it leads to \(reached ?? "?"), not to "
                    + "\(path) itself: a symbolic link on its path was put there after the checkpoint; a restart "
                    + "does not follow one with root's access")
        }
        let notice =
            "opened \(path) with root's access for process \(image.pid): \(uid) may not open it, and the process "
            + "had opened it under other credentials (a store only root can write is trusted as root's own)"
        if !notices.contains(notice) { notices.append(notice) }
        return opened
    }
}

/// What the processes of one restart share while they are rebuilt.
public final class RestartTree {
    /// Each saved pid and the process that is it now.
    public internal(set) var pids: [Int32: Int32] = [:]
    /// Pipes one process created for others too: the inode, and the process and descriptor
    /// holding it until every process has opened its ends (`DescriptorPhase`).
    var pipeHolders: [UInt64: (pid: Int32, fd: Int32)] = [:]
    /// Sockets one process made for another (`SocketPhase`): the inode, and the process and
    /// descriptor holding it until the other has taken it.
    var socketHolders: [UInt64: (pid: Int32, fd: Int32)] = [:]
    /// Pseudo-terminal pairs one process made (`PseudoTerminalPhase`): the pty number, and the
    /// process and its descriptors of the master and of a slave, kept until every process has
    /// taken its own.
    var ptyHolders: [Int32: (pid: Int32, master: Int32, slave: Int32)] = [:]
    /// Memory files made for the image's process ("pid:index", its pid in the image) and the
    /// process and descriptor keeping each one until its `DescriptorPhase`: a later process's
    /// memory file of the same object opens it from there (`MemoryLayoutPhase`).
    var memoryFileHolders: [String: (pid: Int32, fd: Int32)] = [:]
    /// The root process's session: what it forks, its children are not (`forkDeadProcess`).
    weak var root: RestartSession?
    /// For each dead process the image's pidfds referred to (by its pidfs inode then), a
    /// process forked to stand for it while every process opens its pidfds of it
    /// (`EventDescriptorPhase`); ended and reaped once they all have (`SharedDescriptorPhase`).
    var deadProcesses: [UInt64: (process: FrozenProcess, inner: Int32)] = [:]

    public init() {}

    /// The tree runs in a new PID namespace (its pids were taken here): inside it every process
    /// has its saved pid, and `pids` holds what they are outside it.
    public internal(set) var namespace = false

    /// The image is trusted as root's own: root restarts it from a store only root can write
    /// (`ImageAuthority.trustedAsRoot`). Then a file the process held that its owner's access
    /// cannot open again is opened with root's (`RestartSession.openRecorded`).
    public internal(set) var trustedAsRoot = false

    /// The page server of a lazy restart (`Restorer.Options.lazy`): it fills the memory of the
    /// processes whose page fill registered them with it.
    public internal(set) var pageServer: LazyPageServer?

    /// The process that is saved pid `pid` now, as ld-chpox sees it (and /proc, the host's).
    func current(_ pid: Int32) throws(TraceeError) -> Int32 {
        guard let now = pids[pid] else {
            throw .unsupported(pid: pid, reason: "process \(pid) of the image has not been created")
        }
        return now
    }

    /// The pid by which the restarted processes know saved pid `pid` (their system calls
    /// among themselves: setpgid, pidfd_open): the saved one in a new namespace, else `current`.
    func inner(_ pid: Int32) throws(TraceeError) -> Int32 {
        let now = try current(pid)
        return namespace ? pid : now
    }

    /// The pid by which the restarted processes know the process that is `outer` here.
    func inner(outer: Int32) -> Int32 {
        guard namespace else { return outer }
        return pids.first { $0.value == outer }?.key ?? outer
    }
}
