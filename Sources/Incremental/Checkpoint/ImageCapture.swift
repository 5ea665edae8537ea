#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Syscall
import Tracee

/// Reads a frozen process's image: registers, /proc, descriptors. Pages are not read here
/// (see `PageSelection`); what must be asked inside the process comes in `injected`.
enum ImageCapture {
    /// Deleted files holding more data than this are not copied into the image (and the
    /// process is refused unless --skip-unsupported): the data of a file a descriptor holds
    /// (its holes not counted), the size of one a private mapping holds.
    static let deletedFileLimit: Int64 = 64 << 20

    /// The mapping details (smaps' VmFlags and Rss) read before the stop, with the mappings
    /// they were read for: smaps costs tens of milliseconds on a large process (it walks the
    /// page tables for its counters), so the stop reads it again only if the mappings changed
    /// meanwhile. Resident counts are therefore those of just before the final stop.
    struct EarlySmaps {
        var regions: [MemoryRegion]
        var details: [UInt64: ProcFS.MappingDetails]

        init(pid: Int32) throws(TraceeError) {
            details = try ProcFS.mappingDetails(pid)
            regions = try MemoryRegion.of(pid)
        }

        func current(_ regions: [MemoryRegion], pid: Int32) throws(TraceeError) -> [UInt64: ProcFS.MappingDetails] {
            regions == self.regions ? details : try ProcFS.mappingDetails(pid)
        }
    }

    static func capture(
        _ process: FrozenProcess, regions: [MemoryRegion], injected: InjectedState, smaps earlier: EarlySmaps,
        skipUnsupported: Bool, tree: [Int32] = [], externalUnix: [ExternalUnix] = []
    ) throws(CheckpointError) -> ProcessImage {
        let pid = process.pid
        do {
            let status = try ProcFS.status(pid)
            let stat = try ProcFS.stat(pid)
            let details = try earlier.current(regions, pid: pid)
            let capabilities = try ProcessControlsCapture.capabilities(pid, threads: process.threads)
            let threadCredentials = capabilities.threads
            let seccomp = try SeccompCapture.capture(process)
            let cgroups = try ControlGroupCapture.lines(pid)
            var threads: [ProcessImage.ThreadImage] = []
            for tid in process.threads {
                let injectedThread = injected.threads.first { $0.tid == tid }
                let stack = injectedThread?.alternateStack.map {
                    ProcessImage.SignalStack(address: $0[0], flags: $0[1], size: $0[2])
                }
                var thread = ProcessImage.ThreadImage(
                    try ThreadState(tid: tid, of: process), name: try ProcFS.threadName(pid, thread: tid),
                    clearAddress: injectedThread?.clearAddress, signalStack: stack)
                do {
                    let robust = try RobustList.of(thread: tid)
                    thread.robustList = [robust.head, robust.length]
                } catch {
                    throw TraceeError.from(error, pid: pid, "read the robust futex list of thread \(tid) of")
                }
                thread.scheduling = try scheduling(pid, thread: tid)
                thread.credentials = threadCredentials[tid]
                thread.securebits = injectedThread?.securebits
                thread.seccomp = seccomp.threads[tid]
                if try ProcFS.status(pid, thread: tid)["NoNewPrivs"] == "1" { thread.noNewPrivileges = true }
                thread.cgroups = try ControlGroupCapture.threadLines(pid, thread: tid, process: cgroups)
                threads.append(thread)
            }
            var (descriptors, unsupported) = try captureDescriptors(pid, tree: tree, externalUnix: externalUnix)
            let memory = MemoryFileCapture.capture(pid, &descriptors, regions: regions)
            unsupported += memory.unsupported
            let mapped = MappedFileCapture.capture(pid, regions: regions.filter { !memory.maps($0) })
            unsupported += mapped.unsupported
            let aio = try AioContextCapture.capture(pid, regions: regions)
            unsupported += aio.unsupported
            let guardPages = GuardRegionCapture.runs(pid, regions: regions)
            for k in descriptors.indices where descriptors[k].kind.isDeletedFile {
                guard let status = openFileStatus(pid, descriptors[k].fd),
                    let file = mapped.identities.firstIndex(of: .init(device: status.device, inode: status.inode))
                else { continue }
                descriptors[k].deletedFile = file
                descriptors[k].contents = nil
            }
            unsupported += try ProcessControlsCapture.unsupported(pid, injected: injected.controls)
            let posixTimers = try PosixTimerCapture.capture(
                pid, settings: injected.posixTimers, threads: process.threads)
            unsupported += posixTimers.unsupported
            unsupported += capabilities.unsupported
            // Of the secure bits a restart sets only SECBIT_KEEP_CAPS (`CredentialsPhase`).
            unsupported += threads.compactMap { thread in
                guard let bits = thread.securebits, bits & ~CredentialsPhase.keepCapsBit != 0 else { return nil }
                return "thread \(thread.tid): secure bits 0x\(String(bits, radix: 16)) (PR_SET_SECUREBITS): a restart "
                    + "sets SECBIT_KEEP_CAPS alone"
            }
            unsupported += seccomp.unsupported
            // SysV shared memory (shmat): a restart would map plain shared memory with its bytes,
            // which shmdt, shmctl and every other process attaching the segment by key tell apart.
            unsupported += regions.filter { $0.shared && $0.path.hasPrefix("/SYSV") }.map { region in
                "mapping 0x\(String(region.start, radix: 16))-0x\(String(region.end, radix: 16)): a SysV shared memory "
                    + "segment (\(region.path), attached with shmat): a restart cannot attach it again (SysV IPC "
                    + "objects are not checkpointed); detach it (shmdt) before checkpointing"
            }
            if let cwd = ProcFS.link(pid, "cwd"), cwd.hasSuffix(" (deleted)"),
                let reason = DeletedDirectories.refusal(cwd)
            {
                unsupported.append("cwd \(cwd): \(reason)")
            }
            if !unsupported.isEmpty && !skipUnsupported { throw UnsupportedDescriptors(list: unsupported) }
            guard let user = ProcessImage.Credentials.IDs(status.userIDs),
                let group = ProcessImage.Credentials.IDs(status.groupIDs)
            else {
                throw TraceeError.malformed(file: "/proc/\(pid)/status", reason: "Uid: or Gid: does not list four ids")
            }
            let controls = try ProcessControlsCapture.controls(pid, injected: injected.controls)
            let auxvBytes = try ProcFS.bytes(pid, "auxv")
            let auxv = auxvBytes.withUnsafeBytes { raw in
                (0..<(raw.count / 8)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
            }
            var image = ProcessImage(
                pid: pid,
                command: try ProcFS.bytes(pid, "cmdline").split(separator: 0, omittingEmptySubsequences: false)
                    .dropLast()
                    .map { String(decoding: $0, as: UTF8.self) },
                executable: ProcFS.link(pid, "exe") ?? "",
                workingDirectory: ProcFS.link(pid, "cwd") ?? "",
                umask: status.umask ?? 0o022,
                credentials: .init(
                    user: user, group: group, groups: status.groups, capabilities: capabilities.capabilities),
                limits: try limits(pid),
                addressSpace: .init(
                    startCode: stat.startCode, endCode: stat.endCode, startData: stat.startData, endData: stat.endData,
                    startBrk: stat.startBrk, brk: injected.programBreak, startStack: stat.startStack,
                    argStart: stat.argStart, argEnd: stat.argEnd, envStart: stat.envStart, envEnd: stat.envEnd,
                    auxv: auxv),
                mappings: regions.map {
                    var mapping = mapping($0, details: details[$0.start] ?? .init())
                    mapping.deletedFile = mapped.fileOfMapping[$0.start]
                    if let file = memory.fileOfMapping[$0.start] {
                        mapping.backing = .memoryFile
                        mapping.memoryFile = file
                    }
                    return mapping
                },
                threads: threads,
                signalActions: injected.signalActions.map {
                    .init(signal: $0.signal, handler: $0.handler, flags: $0.flags, restorer: $0.restorer, mask: $0.mask)
                },
                intervalTimers: injected.intervalTimers.map {
                    .init(
                        which: $0.which, intervalMicroseconds: $0.intervalMicroseconds,
                        valueMicroseconds: $0.valueMicroseconds)
                },
                sharedPendingSignals: try process.sharedPendingSignals().map(ProcessImage.SignalInfo.init),
                descriptors: descriptors,
                unsupported: unsupported,
                capture: .init(
                    tracker: "", pauseNanoseconds: 0, totalPauseNanoseconds: 0, preCopyRounds: 0,
                    pagesCopiedWhileRunning: 0, pagesCopiedFrozen: 0, kernel: Kernel.release),
                controls: controls)
            if !mapped.files.isEmpty { image.deletedFiles = mapped.files }
            if !memory.files.isEmpty { image.memoryFiles = memory.files }
            if !posixTimers.timers.isEmpty { image.posixTimers = posixTimers.timers }
            if !aio.contexts.isEmpty { image.aioContexts = aio.contexts }
            image.rootDirectory = ProcessControlsCapture.rootDirectory(pid)
            image.vdso = try vdsoBytes(pid, regions: regions)
            image.guardPages = guardPages.isEmpty ? nil : guardPages
            DeletedDirectories.collect(pid, into: &image)
            image.cgroups = cgroups
            let below = ControlGroupCapture.below(cgroups)
            image.cgroupsBelow = below.isEmpty ? nil : below
            return image
        } catch let error as UnsupportedDescriptors {
            throw .unsupportedDescriptors(pid: pid, error.list)
        } catch let error as TraceeError {
            throw .process(error)
        } catch {
            throw .process(.unsupported(pid: pid, reason: "\(error)"))
        }
    }

    struct UnsupportedDescriptors: Error { var list: [String] }

    /// How the kernel schedules thread `tid` (read from outside: any thread's may be read).
    static func scheduling(_ pid: Int32, thread tid: Int32) throws(TraceeError) -> ProcessImage.Scheduling {
        do throws(Errno) {
            return ProcessImage.Scheduling(try ThreadScheduling.of(thread: tid))
        } catch {
            throw TraceeError.from(error, pid: pid, "read the scheduling policy of thread \(tid) of")
        }
    }

    /// The bytes of the process's vDSO, which a restart under another kernel puts back
    /// (`ProcessImage.vdso`); nil when it has none.
    static func vdsoBytes(_ pid: Int32, regions: [MemoryRegion]) throws(TraceeError) -> Data? {
        guard let region = regions.first(where: { $0.path == "[vdso]" }) else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(region.size))
        let memory = ProcessMemory(pid: pid)
        var read = 0
        try bytes.withMutableRawBytes { (raw) throws(TraceeError) in
            read = try memory.read(from: region.start, into: raw)
        }
        guard read == bytes.count else {
            throw .unsupported(pid: pid, reason: "its vDSO at 0x\(String(region.start, radix: 16)) could not be read")
        }
        return Data(bytes)
    }

    static func mapping(_ region: MemoryRegion, details: ProcFS.MappingDetails) -> ProcessImage.Mapping {
        .init(
            start: region.start, end: region.end, protection: ProcessImage.Protection(maps: region.protection) ?? [],
            backing: backing(of: region), offset: region.offset,
            device: region.device, inode: region.inode, path: region.path, flags: details.flags,
            residentPages: details.residentPages)
    }

    static func backing(of region: MemoryRegion) -> ProcessImage.Mapping.Backing {
        switch region.path {
        case "[vdso]": return .vdso
        case "[vvar]", "[vvar_vclock]": return .vvar
        case "[vsyscall]": return .vsyscall
        case "[heap]": return .heap
        case "[stack]": return .stack
        default: break
        }
        if AioContextCapture.isRing(region) { return .aioRing }
        if region.shared {
            let path = region.path
            let shmem =
                region.isAnonymous || path.hasPrefix("/dev/zero") || path.hasPrefix("/SYSV")
                || path.hasPrefix("/memfd:")
                || path.hasSuffix(" (deleted)")
            return shmem ? .sharedAnonymous : .sharedFile
        }
        return region.isAnonymous ? .anonymous : .privateFile
    }

    static let resourceNames = [
        "cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock", "as", "locks",
        "sigpending", "msgqueue", "nice", "rtprio", "rttime",
    ]

    static func limits(_ pid: Int32) throws(TraceeError) -> [ProcessImage.ResourceLimit] {
        let limits = try ProcFS.limits(pid)
        guard limits.count >= resourceNames.count else {
            throw .malformed(file: "/proc/\(pid)/limits", reason: "\(limits.count) limits, not \(resourceNames.count)")
        }
        return resourceNames.enumerated().map { resource, name in
            .init(resource: Int32(resource), name: name, soft: limits[resource].soft, hard: limits[resource].hard)
        }
    }

    /// The descriptor table, and a line for each descriptor a restart cannot recreate; `tree`
    /// lists the other processes checkpointed with it (their sockets may be its sockets' peers).
    static func captureDescriptors(
        _ pid: Int32, tree: [Int32] = [], externalUnix: [ExternalUnix] = []
    ) throws(TraceeError) -> ([ProcessImage.Descriptor], [String]) {
        var descriptors: [ProcessImage.Descriptor] = []
        var unsupported: [String] = []
        let sockets = SocketCapture(pid, tree: tree, externalUnix: externalUnix)
        for fd in try ProcFS.descriptors(pid) {
            guard let target = ProcFS.descriptorTarget(pid, fd), let info = try? ProcFS.descriptorInfo(pid, fd) else {
                continue
            }  // closed meanwhile
            let flags = info["flags"].flatMap { Int32($0, radix: 8) } ?? 0
            let offset = info["pos"].flatMap { Int64($0) } ?? 0
            var descriptor = ProcessImage.Descriptor(
                fd: fd, kind: .unsupported, target: target, flags: flags, offset: offset, contents: nil)
            if target == "/dev/null" {
                descriptor.kind = .null
            } else if let terminal = PseudoTerminalCapture.capture(pid, fd, target: target, processes: [pid] + tree) {
                switch terminal {
                case .master(let pty):
                    descriptor.kind = .ptyMaster
                    descriptor.pty = pty
                case .slave(let pty):
                    descriptor.kind = .ptySlave
                    descriptor.pty = pty
                case .refused(let reason): unsupported.append("fd \(fd): \(target): \(reason)")
                }
            } else if target.hasPrefix("/dev/pts/") || target.hasPrefix("/dev/tty") || target == "/dev/console" {
                descriptor.kind = .terminal
            } else if target.hasPrefix("pipe:") || isFIFO(pid, fd) {
                descriptor.kind = .pipe  // a named pipe too: reopening one would block
            } else if MemoryFileCapture.isMemfd(target) || MemoryFileCapture.isSharedAnonymous(target) {
                descriptor.kind = .memoryFile  // read with the mappings of it (`MemoryFileCapture`)
            } else if target.hasPrefix("/SYSV") {
                unsupported.append("fd \(fd): a SysV shared memory segment (\(target)): not restored as a descriptor")
            } else if target.hasPrefix("/") && target.hasSuffix(" (deleted)"),
                openFileStatus(pid, fd)?.isDirectory == true
            {
                if let reason = DeletedDirectories.refusal(target) {
                    unsupported.append("fd \(fd): \(target): \(reason)")
                } else {
                    descriptor.kind = .deletedDirectory  // indexed by `DeletedDirectories.collect`
                }
            } else if target.hasPrefix("/") && target.hasSuffix(" (deleted)"),
                let links = openFileStatus(pid, fd)?.links, links > 0
            {
                // Unlinked under this name, still linked under another (zdtm unlink_fstat03): a
                // copy made at restart would not be that file.
                unsupported.append(
                    "fd \(fd): \(target): a file deleted under this name but still linked under \(links) other "
                        + "name\(links == 1 ? "" : "s"): a restart would give it a copy, not that file")
            } else if target.hasPrefix("/") && target.hasSuffix(" (deleted)"), let lease = leaseHeld(pid, fd) {
                unsupported.append(
                    "fd \(fd): \(target): a deleted file under a \(lease): reading it to save it would break that")
            } else if target.hasPrefix("/") && target.hasSuffix(" (deleted)") {
                switch DeletedFileCapture.find(pid, fd, target: target, flags: flags) {
                case .regularFile: descriptor.kind = .deletedFile  // read by `captureDeletedFile`
                case .node(let node):
                    descriptor.kind = .deletedNode
                    descriptor.deletedNode = node
                case .refused(let reason): unsupported.append("fd \(fd): \(target): \(reason)")
                }
            } else if target.hasPrefix("/") {
                descriptor.kind = (flags & O_DIRECTORY) != 0 ? .directory : .file
                if flags & O_ACCMODE != O_RDONLY, let status = openFileStatus(pid, fd), status.isRegularFile {
                    descriptor.size = status.size
                }
            } else if let type = namespaceType(target) {
                // Its own namespace, which a restart opens as its own again; another is refused.
                if ProcFS.link(pid, "ns/\(type)") == target {
                    descriptor.kind = .namespace
                } else {
                    unsupported.append("fd \(fd): \(target): a \(type) namespace other than the process's own")
                }
            } else if let socket = sockets.capture(fd, target: target) {
                switch socket {
                case .socket(let socket):
                    descriptor.kind = .socket
                    descriptor.socket = socket
                case .inet(let socket):
                    descriptor.kind = .inetSocket
                    descriptor.inet = socket
                case .refused(let reason): unsupported.append("fd \(fd): \(target): \(reason)")
                }
            } else if let event = EventDescriptorCapture.capture(pid, fd, target: target) {
                switch event {
                case .object(let object):
                    descriptor.kind = .event
                    descriptor.event = object
                case .refused(let reason): unsupported.append("fd \(fd): \(target): \(reason)")
                }
            } else {
                unsupported.append("fd \(fd): \(target): \(unrestorable(target))")
            }
            descriptors.append(descriptor)
        }
        unsupported += captureOpenFiles(pid, &descriptors)
        return (descriptors, unsupported)
    }

    /// Why a descriptor of a kind no capture takes cannot be restored, in words.
    static func unrestorable(_ target: String) -> String {
        let kinds: [(prefix: String, what: String)] = [
            (
                "anon_inode:[io_uring]",
                "an io_uring instance: its rings and the requests in flight cannot be made again"
            ),
            ("anon_inode:[userfaultfd]", "a userfaultfd: the ranges it watches and the faults waiting on it"),
            ("anon_inode:bpf", "a BPF map, program or link"),
            ("anon_inode:[perf_event]", "a perf event"),
            ("anon_inode:[pidfd]", "a pidfd"),
            ("anon_inode:kvm", "a KVM object"),
            ("anon_inode:[dmabuf]", "a DMA buffer"),
        ]
        let what = kinds.first { target.hasPrefix($0.prefix) }?.what ?? "a kind of descriptor chpox does not restore"
        return what + " (not restored)"
    }

    /// The namespaces /proc/PID/ns names.
    static let namespaceTypes = [
        "cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts",
    ]

    /// "net" for a namespace descriptor's target "net:[4026531833]"; nil for anything else.
    static func namespaceType(_ target: String) -> String? {
        guard let colon = target.firstIndex(of: ":"), target.hasSuffix("]"),
            target[target.index(after: colon)...].hasPrefix("["),
            target[target.index(colon, offsetBy: 2)..<target.index(before: target.endIndex)].allSatisfy(\.isNumber)
        else { return nil }
        let type = String(target[..<colon])
        return namespaceTypes.contains(type) ? type : nil
    }

    static func isFIFO(_ pid: Int32, _ fd: Int32) -> Bool {
        openFileStatus(pid, fd)?.isFIFO ?? false
    }

    /// The status of what descriptor `fd` of the process has open, nil if it was closed meanwhile.
    static func openFileStatus(_ pid: Int32, _ fd: Int32) -> FileDescriptor.Status? {
        try? FileDescriptor.currentDirectory.status(of: "/proc/\(pid)/fd/\(fd)", followingSymlinks: true)
    }

    /// The lease or delegation descriptor `fd`'s open file holds ("lease (READ)"), from its fdinfo;
    /// nil when none. cpx never opens such a file: an open may break a lease (only stat it).
    static func leaseHeld(_ pid: Int32, _ fd: Int32) -> String? {
        guard let info = try? ProcFS.bytes(pid, "fdinfo/\(fd)") else { return nil }
        for line in String(decoding: info, as: UTF8.self).split(separator: "\n") where line.hasPrefix("lock:") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count > 4, fields[2] == "LEASE" || fields[2] == "DELEG" else { continue }
            return "\(fields[2] == "LEASE" ? "lease" : "delegation") (\(fields[4]))"
        }
        return nil
    }
}
