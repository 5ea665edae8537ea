#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Store
import Syscall
import Tracee

/// Restarts a process from a generation, without a kernel module (DESIGN.md, "Restart"):
/// a stub process is stopped with ptrace and, by system calls run inside it from a trampoline
/// page, loses everything of its own and gets the saved process's mappings, contents,
/// descriptors, signal actions, mm fields, and last its registers. Nothing runs from the
/// trampoline after it is unmapped: the last call unmaps it, and the registers are set before
/// the process runs again.
public final class Restorer {
    public struct Options: Sendable {
        /// Fail rather than take a new pid when the saved one is taken.
        public var requireSamePid = false
        public init() {}
    }

    /// What a restart did.
    public struct Outcome: Sendable {
        public var pid: Int32
        public var originalPid: Int32
        public var mappings: Int
        public var pagesWritten: Int
        public var child: ChildProcess
        /// What the restart changed outside the process (files cut back).
        public var notices: [String] = []
    }

    public let image: ProcessImage
    public let map: PageMap
    public let store: Store
    public let generation: UInt64

    public init(image: ProcessImage, map: PageMap, store: Store, generation: UInt64) {
        self.image = image
        self.map = map
        self.store = store
        self.generation = generation
    }

    /// Generation `generation` of chain `chain` (default: its newest), rebuilt and ready to
    /// restart or inspect.
    public static func load(_ store: Store, chain name: String, generation: UInt64?) throws -> Restorer {
        let (entry, manifest, map) = try store.rebuild(chain: name, generation: generation)
        let target = entry.generation
        guard !manifest.metadata.isEmpty else {
            throw CheckpointError.badImage(generation: target, reason: "it holds pages but no process image (written by something other than cpx)")
        }
        let image = try ProcessImage(decoding: manifest.metadata, generation: target)
        return Restorer(image: image, map: map, store: store, generation: target)
    }

    /// The stub: $CHPOX_RESTORE_STUB, else chpox-restore-stub beside the running executable.
    static func stubPath() -> String { Injector.helperPath("chpox-restore-stub", override: "CHPOX_RESTORE_STUB") }

    /// Checks what can be checked before anything starts: the files mapped still there and
    /// large enough, the kernel's vDSO the same size.
    public func check() throws(CheckpointError) {
        func refuse(_ reason: String) -> CheckpointError { .cannotRestart(generation: generation, reason: reason) }
        for mapping in image.mappings where mapping.backing == .privateFile || mapping.backing == .sharedFile {
            guard !mapping.path.hasSuffix(" (deleted)") else { continue }
            var status = stat()
            guard stat(mapping.path, &status) == 0 else {
                throw refuse("\(mapping.path), mapped at 0x\(String(mapping.start, radix: 16)), no longer exists; put it back to restart")
            }
            let needed = Int64(mapping.offset)
            guard Int64(status.st_size) > needed || mapping.offset == 0 else {
                throw refuse("\(mapping.path) is \(status.st_size) bytes now, shorter than its mapping at offset \(mapping.offset) needs")
            }
        }
        for descriptor in image.descriptors where descriptor.kind == .file {
            guard let size = descriptor.size else { continue }
            var status = stat()
            guard stat(descriptor.target, &status) == 0 else {
                throw refuse("\(descriptor.target), open as descriptor \(descriptor.fd), no longer exists; put it back to restart")
            }
            guard Int64(status.st_size) >= size else {
                throw refuse("\(descriptor.target) is \(status.st_size) bytes, shorter than the \(size) it had at this generation: "
                             + "what the process wrote is gone (restored from a later generation's run?); restore the file or restart an earlier generation")
            }
        }
        // A user restarts only their own images; root restores the image's own ids, never more.
        let me = getuid()
        if me != 0, let owner = image.credentials.uid.first(where: { $0 != me }) {
            throw refuse("it ran as uid \(owner); only root or that user can restart it")
        }
        let here = (try? MemoryRegion.of(getpid())) ?? []
        for name in ["[vdso]", "[vvar]", "[vvar_vclock]"] {
            let saved = image.mappings.filter { $0.path == name }.map { $0.end - $0.start }
            let current = here.filter { $0.path == name }.map(\.size)
            guard saved == current else {
                throw refuse("its \(name) is \(saved) bytes and this kernel's \(current): restart it on the kernel that checkpointed it")
            }
        }
    }

    /// Files the process was writing that grew since this generation: cut back to their size
    /// then, so that the process goes on writing where it was (returns what was cut).
    func rollBackWrittenFiles() throws(CheckpointError) -> [String] {
        var notices: [String] = []
        for descriptor in image.descriptors where descriptor.kind == .file {
            guard let size = descriptor.size else { continue }
            var status = stat()
            guard stat(descriptor.target, &status) == 0, Int64(status.st_size) > size else { continue }
            guard truncate(descriptor.target, off_t(size)) == 0 else {
                throw .cannotRestart(generation: generation, reason: "\(descriptor.target) grew since (\(status.st_size) bytes, was \(size)) and cannot be cut back: \(Errno.current)")
            }
            notices.append("\(descriptor.target): cut back from \(status.st_size) to \(size) bytes, its size at generation \(generation)")
        }
        return notices
    }

    /// Starts the stub, rebuilds the process in it and lets it run.
    public func restart(options: Options = Options()) throws(CheckpointError) -> Outcome {
        try check()
        let notices = try rollBackWrittenFiles()
        let child: ChildProcess
        let environment = ["GLIBC_TUNABLES=glibc.pthread.rseq=0"]
        do {
            // Its own pid where that is free (clone3 with set_tid; root), else a new one.
            do {
                child = try ChildProcess.spawn(Self.stubPath(), [], pid: image.pid, environment: environment)
            } catch where !options.requireSamePid {
                child = try ChildProcess.spawn(Self.stubPath(), [], environment: environment)
            }
        } catch {
            if options.requireSamePid {
                throw .cannotRestart(generation: generation, reason: "pid \(image.pid) cannot be had (\(error): in use, or ld-chpox is not root); "
                                + "run without --require-same-pid to take a new one")
            }
            throw .output(path: Self.stubPath(), reason: "cannot start the restore stub: \(error) (install chpox-restore-stub beside ld-chpox)")
        }
        do {
            let pages = try build(in: child.pid)
            return Outcome(pid: child.pid, originalPid: image.pid, mappings: image.mappings.count, pagesWritten: pages, child: child,
                           notices: notices)
        } catch {
            try? child.send(SIGKILL)
            _ = try? child.wait()
            throw Checkpointer.classify(error, pid: child.pid)
        }
    }

    // MARK: Building the process inside the stub

    private func build(in pid: Int32) throws -> Int {
        // The stub must have reached pause(): wait until it sleeps.
        for _ in 0..<2000 where (try? ProcFS.state(pid)) != "S" { usleep(500) }
        let process = try FrozenProcess(pid: pid)
        defer { process.thaw() }
        let remote = Remote(process)

        // 1. A trampoline (syscall; int3) and a scratch page, where neither the stub nor the
        //    image has anything.
        let taken = try MemoryRegion.of(pid).map { ($0.start, $0.end) } + image.mappings.map { ($0.start, $0.end) }
        var base: UInt64 = 0x1000_0000
        while taken.contains(where: { $0.0 < base + 0x2000 && base < $0.1 }) { base += 0x10_0000 }
        try remote.check(remote.call(CHPOX_SYS_mmap, base, 0x2000, Int(PROT_READ | PROT_WRITE | PROT_EXEC),
                                     Int(MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE), -1, 0), "map the trampoline")
        try remote.write([0x0f, 0x05, 0xcc], at: base)
        process.useSyscallInstruction(at: base)
        remote.scratch = base + 0x1000

        // 2. Keep the stub's stdio as sources for terminals and pipes, then drop all of it but
        //    the trampoline and the kernel's pages.
        for fd in 0..<3 { _ = try remote.call(CHPOX_SYS_dup3, fd, 1000 + fd, Int(O_CLOEXEC)) }
        for region in try MemoryRegion.of(pid) where !region.isSpecial && region.start != base {
            try remote.check(remote.call(CHPOX_SYS_munmap, region.start, region.size), "unmap \(region)")
        }

        // 3. The kernel's pages where they were (same kernel: same sizes, checked).
        let current = try MemoryRegion.of(pid)
        for name in ["[vvar]", "[vvar_vclock]", "[vdso]"] {
            guard let from = current.first(where: { $0.path == name }), let to = image.mappings.first(where: { $0.path == name }),
                  from.start != to.start else { continue }
            try remote.check(remote.call(CHPOX_SYS_mremap, from.start, from.size, from.size, Int(CHPOX_MREMAP_MAYMOVE | CHPOX_MREMAP_FIXED), to.start),
                             "move \(name) to 0x\(String(to.start, radix: 16))")
        }

        // 4. Every mapping, then its contents.
        for mapping in image.mappings where mapping.storesContents || mapping.backing == .sharedFile {
            try map(mapping, remote)
        }
        let pages = try fill(pid)

        // 5. Descriptors, cwd, umask.
        try descriptors(remote)
        if !image.workingDirectory.isEmpty { _ = try remote.call(CHPOX_SYS_chdir, Int(try remote.string(image.workingDirectory))) }
        _ = try remote.call(CHPOX_SYS_umask, Int(image.umask))

        // 6. mm fields (brk, stack, arguments, environment, auxv, executable).
        try memoryDescriptor(remote)

        // 7. Signals, rseq, tid address, resource limits.
        for action in image.signalActions {
            let at = try remote.words([action.handler, action.flags, action.restorer, action.mask])
            try remote.check(remote.call(CHPOX_SYS_rt_sigaction, Int(action.signal), Int(at), 0, 8), "set the action of signal \(action.signal)")
        }
        let thread = image.threads[0]
        if let clear = thread.clearAddress {
            _ = try remote.call(CHPOX_SYS_set_tid_address, Int(clear))
            // glibc keeps the thread's id where the kernel clears it (pthread->tid).
            if pid != thread.state.tid { try remote.write(Self.tidBytes(pid), at: clear) }
        }
        if let rseq = thread.state.rseq {
            try remote.check(remote.call(CHPOX_SYS_rseq, Int(rseq.address), Int(rseq.size), 0, Int(rseq.signature)), "register rseq")
        }
        try alternateStack(thread, on: pid, process, remote)
        try threads(process, remote)
        for limit in image.limits {
            var values: [UInt64] = [limit.soft, limit.hard]
            _ = values.withUnsafeMutableBufferPointer { buffer in
                buffer.withMemoryRebound(to: CUnsignedLongLong.self) { chpox_prlimit_set(pid, limit.resource, $0.baseAddress) }
            }
        }
        for timer in image.intervalTimers ?? [] {
            // A periodic timer whose signal is pending reads 0 left (it re-arms when the signal
            // is taken): it restarts with a full interval, and the pending signal is queued below.
            let value = timer.valueMicroseconds == 0 ? timer.intervalMicroseconds : timer.valueMicroseconds
            let at = try remote.words([timer.intervalMicroseconds / 1_000_000, timer.intervalMicroseconds % 1_000_000,
                                       value / 1_000_000, value % 1_000_000])
            try remote.check(remote.call(CHPOX_SYS_setitimer, Int(timer.which), Int(at), 0), "arm interval timer \(timer.which)")
        }
        // Queued signals, with their siginfo (sent by the process to itself, so the kernel
        // takes every si_code).
        for info in image.sharedPendingSignals {
            let signal = info.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
            let at = try remote.bytes(info, offset: 1024)
            try remote.check(remote.call(CHPOX_SYS_rt_sigqueueinfo, Int(pid), Int(signal), Int(at)), "queue signal \(signal)")
        }
        for info in thread.state.pendingSignals {
            let signal = info.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
            let at = try remote.bytes(info, offset: 1024)
            try remote.check(remote.call(CHPOX_SYS_rt_tgsigqueueinfo, Int(pid), Int(pid), Int(signal), Int(at)), "queue signal \(signal)")
        }
        for fd in 1000..<1003 { _ = try remote.call(CHPOX_SYS_close, fd) }

        // 8. Its credentials (when run by root for another user's image), then last the
        //    trampoline unmaps itself; the registers are set before anything runs.
        try credentials(remote)
        _ = try remote.call(CHPOX_SYS_munmap, Int(base), 0x2000)
        try process.restore(thread.state, into: pid)
        return pages
    }

    /// The other threads: cloned from the main one (with their saved ids where free), caught
    /// before their first instruction, given their saved state and rseq registration.
    private func threads(_ process: FrozenProcess, _ remote: Remote) throws {
        guard image.threads.count > 1 else { return }
        try process.traceClones()
        for thread in image.threads.dropFirst() {
            let arguments = remote.scratch + 3584, wanted = remote.scratch + 3712
            try remote.write(Self.tidBytes(thread.state.tid), at: wanted)
            var clone = chpox_clone_args()
            clone.flags = chpox_clone_thread_flags()
            clone.child_tid = thread.clearAddress ?? 0
            clone.tls = thread.state.fsBase
            clone.set_tid = wanted
            clone.set_tid_size = 1
            try withUnsafeBytes(of: &clone) { raw in try remote.write(Array(raw), at: arguments) }
            var result = try remote.call(CHPOX_SYS_clone3, Int(arguments), MemoryLayout<chpox_clone_args>.size)
            if result < 0 {
                // That id is taken (or set_tid is refused): any id will do.
                clone.set_tid = 0
                clone.set_tid_size = 0
                try withUnsafeBytes(of: &clone) { raw in try remote.write(Array(raw), at: arguments) }
                result = try remote.call(CHPOX_SYS_clone3, Int(arguments), MemoryLayout<chpox_clone_args>.size)
            }
            try remote.check(result, "create thread \(thread.state.tid)")
            let tid = try process.adoptClonedThread()
            if tid != thread.state.tid, let clear = thread.clearAddress { try remote.write(Self.tidBytes(tid), at: clear) }
            if let rseq = thread.state.rseq {
                try remote.check(process.syscall(on: tid, Int(CHPOX_SYS_rseq.rawValue), Int(rseq.address), Int(rseq.size), 0, Int(rseq.signature)),
                                 "register rseq of thread \(tid)")
            }
            try alternateStack(thread, on: tid, process, remote)
            try process.restore(thread.state, into: tid)
        }
    }

    /// The thread's alternate signal stack as it was, or none: a stub's own (glibc may set
    /// one) would point into memory that is gone, and an SA_ONSTACK handler would crash.
    private func alternateStack(_ thread: ProcessImage.ThreadImage, on tid: Int32, _ process: FrozenProcess, _ remote: Remote) throws {
        let words = thread.alternateStack ?? [0, 2, 0]  // SS_DISABLE
        let at = try remote.words(words, offset: 3904)
        try remote.check(process.syscall(on: tid, Int(CHPOX_SYS_sigaltstack.rawValue), Int(at), 0), "set the alternate signal stack of thread \(tid)")
    }

    private func credentials(_ remote: Remote) throws {
        let ids = image.credentials
        guard getuid() == 0, ids.uid.count >= 3, ids.gid.count >= 3, ids.uid.contains(where: { $0 != 0 }) || ids.gid.contains(where: { $0 != 0 }) else { return }
        var groups: [UInt8] = []
        for group in ids.groups { withUnsafeBytes(of: group.littleEndian) { groups += $0 } }
        let at = try remote.bytes(groups.isEmpty ? [0, 0, 0, 0] : groups, offset: 1024)
        try remote.check(remote.call(CHPOX_SYS_setgroups, ids.groups.count, Int(at)), "set the supplementary groups")
        try remote.check(remote.call(CHPOX_SYS_setresgid, Int(ids.gid[0]), Int(ids.gid[1]), Int(ids.gid[2])), "set the group ids")
        try remote.check(remote.call(CHPOX_SYS_setresuid, Int(ids.uid[0]), Int(ids.uid[1]), Int(ids.uid[2])), "set the user ids")
    }

    static func tidBytes(_ tid: Int32) -> [UInt8] { withUnsafeBytes(of: tid.littleEndian) { Array($0) } }

    private func map(_ mapping: ProcessImage.Mapping, _ remote: Remote) throws {
        let protection = Array(mapping.protection)
        var prot: Int32 = 0
        if protection[0] == "r" { prot |= PROT_READ }
        if protection[1] == "w" { prot |= PROT_WRITE }
        if protection[2] == "x" { prot |= PROT_EXEC }
        var flags = MAP_FIXED | (mapping.backing == .sharedFile || mapping.backing == .sharedAnonymous ? MAP_SHARED : MAP_PRIVATE)
        if mapping.flags.contains("gd") { flags |= MAP_GROWSDOWN }
        let size = Int(mapping.end - mapping.start)
        if mapping.backing == .privateFile || mapping.backing == .sharedFile, !mapping.path.hasSuffix(" (deleted)") {
            let writable = mapping.backing == .sharedFile && protection[1] == "w"
            let fd = try remote.call(CHPOX_SYS_openat, Int(AT_FDCWD), Int(try remote.string(mapping.path)), Int(writable ? O_RDWR : O_RDONLY), 0)
            try remote.check(fd, "open \(mapping.path)")
            defer { _ = try? remote.call(CHPOX_SYS_close, fd) }
            try remote.check(remote.call(CHPOX_SYS_mmap, Int(mapping.start), size, Int(prot), Int(flags), fd, Int(mapping.offset)), "map \(mapping.path)")
        } else {
            try remote.check(remote.call(CHPOX_SYS_mmap, Int(mapping.start), size, Int(prot), Int(flags | MAP_ANONYMOUS), -1, 0),
                             "map \(mapping.backing.rawValue) memory at 0x\(String(mapping.start, radix: 16))")
        }
    }

    /// Writes every stored page through /proc/<pid>/mem, which writes read-only pages too.
    private func fill(_ pid: Int32) throws -> Int {
        let memory: FileDescriptor
        do { memory = try FileDescriptor.open("/proc/\(pid)/mem", [.readWrite, .closeOnExec]) } catch {
            throw TraceeError.from(error, pid: pid, "open the memory of")
        }
        defer { memory.close() }
        let fileMapped = image.mappings.filter { $0.backing == .privateFile }.map { ($0.start / 4096, $0.end / 4096) }
        var written = 0
        try store.reader().readPages(map) { entry, bytes in
            // Zero pages need writing only over a file's bytes.
            if entry.chunk == .zeroPage && !fileMapped.contains(where: { $0.0 <= entry.page && entry.page < $0.1 }) { return }
            do throws(Errno) { try memory.writeAll(bytes, at: Int64(entry.page * 4096)) } catch {
                throw TraceeError.from(error, pid: pid, "write page 0x\(String(entry.page * 4096, radix: 16)) of")
            }
            written += 1
        }
        return written
    }

    /// The saved descriptor table, at the same numbers. Terminals and pipes on 0-2 become
    /// ld-chpox's own stdio at the same number; other terminals its stdout; other pipes a pipe
    /// whose other end is closed.
    private func descriptors(_ remote: Remote) throws {
        for fd in 0..<3 where !image.descriptors.contains(where: { $0.fd == fd }) { _ = try remote.call(CHPOX_SYS_close, fd) }
        for descriptor in image.descriptors {
            let target = Int(descriptor.fd)
            let cloexec = Int(descriptor.flags & O_CLOEXEC)
            switch descriptor.kind {
            case .terminal where descriptor.fd <= 2, .pipe where descriptor.fd <= 2:
                let source = 1000 + Int(descriptor.fd)
                try remote.check(remote.call(CHPOX_SYS_dup3, source, target, cloexec), "set up descriptor \(target)")
            case .terminal:
                try remote.check(remote.call(CHPOX_SYS_dup3, 1001, target, cloexec), "set up descriptor \(target)")
            case .pipe:
                // The other end is gone with the original process's peers: a pipe whose other
                // end is closed (reads see end of file, writes EPIPE), as if the peer had exited.
                let ends = remote.scratch + 3800
                try remote.check(remote.call(CHPOX_SYS_pipe2, Int(ends), Int(O_CLOEXEC)), "create a pipe for descriptor \(target)")
                let pair = try ProcessMemory(pid: remote.process.pid).words(at: ends, count: 1)[0]
                let read = Int(Int32(truncatingIfNeeded: pair)), write = Int(Int32(truncatingIfNeeded: pair >> 32))
                let keep = descriptor.flags & O_ACCMODE == O_RDONLY ? read : write
                try remote.check(remote.call(CHPOX_SYS_dup3, keep, target, cloexec), "set up descriptor \(target)")
                _ = try remote.call(CHPOX_SYS_close, read)
                _ = try remote.call(CHPOX_SYS_close, write)
            case .file, .directory, .null, .deletedFile:
                var path = descriptor.kind == .null ? "/dev/null" : descriptor.target
                if descriptor.kind == .deletedFile {
                    path = try recreate(descriptor)
                }
                let flags = Int(descriptor.flags & ~(O_CREAT | O_TRUNC | O_EXCL | O_CLOEXEC))
                let opened = try remote.call(CHPOX_SYS_openat, Int(AT_FDCWD), Int(try remote.string(path)), flags, 0)
                try remote.check(opened, "reopen \(path) as descriptor \(target)")
                if opened != target {
                    try remote.check(remote.call(CHPOX_SYS_dup3, opened, target, cloexec), "set up descriptor \(target)")
                    _ = try remote.call(CHPOX_SYS_close, opened)
                } else if cloexec != 0 {
                    _ = try remote.call(CHPOX_SYS_dup3, opened, target, cloexec)
                }
                if descriptor.kind == .deletedFile { unlink(path) }
                if descriptor.kind == .file || descriptor.kind == .deletedFile {
                    _ = try remote.call(CHPOX_SYS_lseek, target, Int(descriptor.offset), Int(SEEK_SET))
                }
            case .unsupported:
                continue
            }
        }
    }

    /// A deleted file's saved contents in a new file (unlinked again once opened).
    private func recreate(_ descriptor: ProcessImage.Descriptor) throws -> String {
        let path = "/tmp/chpox-restored-\(getpid())-\(descriptor.fd)"
        let file = try FileDescriptor.open(path, [.writeOnly, .create, .truncate, .closeOnExec])
        defer { file.close() }
        let bytes = descriptor.contents.map { [UInt8]($0) } ?? []
        try bytes.withRawBytes { (raw) throws(Errno) in try file.writeAll(raw) }
        return path
    }

    private func memoryDescriptor(_ remote: Remote) throws {
        let space = image.addressSpace
        let auxv = try remote.words(space.auxv, offset: 512)
        let exe = try remote.call(CHPOX_SYS_openat, Int(AT_FDCWD), Int(try remote.string(image.executable)), Int(O_RDONLY), 0)
        try remote.check(exe, "open the executable \(image.executable)")
        defer { _ = try? remote.call(CHPOX_SYS_close, exe) }
        var layout = chpox_prctl_mm_map(start_code: space.startCode, end_code: space.endCode, start_data: space.startData,
                                        end_data: space.endData, start_brk: space.startBrk, brk: space.brk, start_stack: space.startStack,
                                        arg_start: space.argStart, arg_end: space.argEnd, env_start: space.envStart, env_end: space.envEnd,
                                        auxv: auxv, auxv_size: UInt32(space.auxv.count * 8), exe_fd: UInt32(exe))
        let at = remote.scratch + 3072
        try withUnsafeBytes(of: &layout) { raw in try remote.write(Array(raw), at: at) }
        try remote.check(remote.call(CHPOX_SYS_prctl, Int(CHPOX_PR_SET_MM), Int(CHPOX_PR_SET_MM_MAP), Int(at),
                                     MemoryLayout<chpox_prctl_mm_map>.size, 0), "set the memory descriptor (PR_SET_MM_MAP)")
    }
}

/// System calls inside the stub, with a scratch page for their arguments.
final class Remote {
    let process: FrozenProcess
    var scratch: UInt64 = 0
    private var cursor = 0

    init(_ process: FrozenProcess) { self.process = process }

    func call(_ number: chpox_system_call, _ arguments: any BinaryInteger...) throws -> Int {
        var slots = arguments.map { Int(truncatingIfNeeded: $0) }
        slots += [Int](repeating: 0, count: max(0, 6 - slots.count))
        return try process.syscall(Int(number.rawValue), slots[0], slots[1], slots[2], slots[3], slots[4], slots[5])
    }

    func check(_ result: Int, _ what: String) throws {
        guard result < 0, result > -4096 else { return }
        throw TraceeError.system(Errno(rawValue: Int32(-result)), pid: process.pid, operation: "restart: \(what) in")
    }

    func write(_ bytes: [UInt8], at address: UInt64) throws {
        try bytes.withRawBytes { (raw) throws(TraceeError) in try ProcessMemory(pid: process.pid).write(to: address, from: raw) }
    }

    /// A NUL-terminated string in the first half of the scratch page; returns its address.
    func string(_ text: String) throws -> UInt64 {
        let bytes = Array(text.utf8) + [0]
        guard bytes.count <= 2048 else { throw TraceeError.unsupported(pid: process.pid, reason: "path too long: \(text)") }
        try write(bytes, at: scratch)
        return scratch
    }

    /// Bytes at `offset` into the scratch page; returns their address.
    func bytes(_ values: [UInt8], offset: Int) throws -> UInt64 {
        try write(values, at: scratch + UInt64(offset))
        return scratch + UInt64(offset)
    }

    /// Words at `offset` into the scratch page (default: past the strings); returns their address.
    func words(_ values: [UInt64], offset: Int = 2048) throws -> UInt64 {
        var bytes: [UInt8] = []
        for value in values { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        try write(bytes, at: scratch + UInt64(offset))
        return scratch + UInt64(offset)
    }
}
