#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall
import Tracee

/// The image's address space in the stub: a trampoline page (`syscall; int3`) and scratch pages
/// where neither has anything, every later call made from there; the stub's stdio kept aside,
/// all its own memory unmapped; the kernel's pages (vDSO, vvar) moved where the image had them,
/// or the image's vDSO made a proxy for them (`VDSOProxy`); then every mapping the image stores
/// or shares with a file, empty (`PageFillPhase` fills it).
public struct MemoryLayoutPhase: RestartPhase {
    /// One mapping to create.
    public struct MappingSetup: Sendable, Equatable, CustomStringConvertible {
        public enum Source: Sendable, Equatable {
            case anonymous
            /// Opened by path inside the stub (read-write only for a shared writable mapping).
            case file(path: String, writable: Bool, offset: UInt64)
            /// The deleted file the image saved (`deletedFiles` index), recreated.
            case deletedFile(Int, path: String, offset: UInt64)
            /// Shared memory another process of the tree mapped first: its mapping's object
            /// (/proc/PID/map_files), at `offset` in it.
            case sharedWith(pid: Int32, start: UInt64, end: UInt64, offset: UInt64)
            /// The image's memory file (`memoryFiles` index) made again, at `offset` in it; a
            /// shared mapping that could never be written (no VmFlag `mw`) is mapped from a
            /// read-only descriptor of it, as it was (a write seal forbids anything else).
            case memoryFile(Int, path: String, offset: UInt64, readOnly: Bool)
        }
        public var start: UInt64
        public var size: Int
        /// PROT_* bits.
        public var protection: Int32
        /// MAP_* bits (MAP_FIXED always; MAP_ANONYMOUS is added for anonymous ones).
        public var flags: Int32
        public var source: Source
        /// madvise(2) advice given once it is mapped, with the VmFlag each restores.
        public var advice: [Advice] = []

        public struct Advice: Sendable, Equatable {
            public var flag: String
            public var advice: Int32
        }

        public init(start: UInt64, size: Int, protection: Int32, flags: Int32, source: Source) {
            self.start = start
            self.size = size
            self.protection = protection
            self.flags = flags
            self.source = source
        }

        var adviceNote: String { advice.isEmpty ? "" : ", madvise " + advice.map(\.flag).joined(separator: " ") }

        public var description: String {
            let at = "0x\(String(start, radix: 16)) +\(size)"
            switch source {
            case .anonymous: return "map \(at) anonymous" + (flags & MAP_SHARED != 0 ? " shared" : "") + adviceNote
            case .file(let path, let writable, let offset):
                return "map \(at) \(path) at \(offset)" + (writable ? " read-write" : "") + adviceNote
            case .deletedFile(let file, let path, let offset):
                return "map \(at) deleted file \(file) (\(path)) recreated, at \(offset)" + adviceNote
            case .sharedWith(let pid, let start, _, let offset):
                return "map \(at) shared with process \(pid)'s 0x\(String(start, radix: 16)), at \(offset)" + adviceNote
            case .memoryFile(let file, let path, let offset, let readOnly):
                return "map \(at) memory file \(file) (\(path))"
                    + (flags & MAP_SHARED != 0 ? " shared" : "") + (readOnly ? " read-only" : "") + ", at \(offset)"
                    + adviceNote
            }
        }
    }

    /// What becomes of the kernel's pages (`VDSOProxy`), or why the image cannot restart here
    /// (`Preflight` says it first).
    public var vdso: Result<VDSOProxy.Plan, VDSOProxy.Refusal>
    public var mappings: [MappingSetup]
    /// Deleted files private mappings hold, recreated first (and kept for `DescriptorPhase`).
    public var deletedFiles: [ProcessImage.DeletedFile]
    /// Guard pages installed again once every mapping is made.
    public var guardPages: [Range<UInt64>]
    /// Memfds and shared memory descriptors name, made again after the deleted files (and kept
    /// for `DescriptorPhase`, which seals them).
    public var memoryFiles: [ProcessImage.MemoryFile]
    /// Who a memory file may belong to.
    let owners: RecreatedMemoryFile.Owners
    /// The image's pid (memory files other processes take from this one are named by it).
    let pid: Int32
    /// Ranges the image occupies (the trampoline goes elsewhere).
    let occupied: [ClosedRange<UInt64>]
    /// Mappings kept as the fork from its parent left them (`TreeLayout.inheritedMappings`),
    /// with the pages it shared copy-on-write with the parent (`ProcessImage.copyOnWrite`).
    public var inherited: [Range<UInt64>]
    /// Those pages, as page-number ranges.
    let copyOnWrite: [Range<UInt64>]

    /// The trampoline page, then the scratch pages remote calls put their arguments in.
    static let trampolineSize = Page.size
    static let scratchSize = Page.bytes(4)

    public var name: String { "memory layout" }
    public var steps: [String] {
        [
            "map a trampoline and \(Self.scratchSize) bytes of scratch "
                + "where neither the stub nor the image has anything",
            "keep the stub's stdin, stdout, stderr as "
                + "\(RestartSession.stdioCopies)-\(RestartSession.stdioCopies + 2); unmap all its memory",
        ]
            + vdsoSteps
            + deletedFiles.enumerated().map { "recreate deleted file \($0) (\($1.path), \($1.contents.count) bytes)" }
            + memoryFiles.enumerated().map { k, file in
                if let held = file.sameAs {
                    return "memory file \(k): process \(held.pid)'s memory file \(held.index) (\(file.what))"
                }
                return "make memory file \(k): \(file.what) of \(file.size) bytes, \(file.contents.count) of data, "
                    + "mode 0\(String(file.permissions, radix: 8))"
            }
            + mappings.map { mapping in
                guard inherited.contains(mapping.start..<(mapping.start + UInt64(mapping.size))) else {
                    return mapping.description
                }
                return "keep 0x\(String(mapping.start, radix: 16)) +\(mapping.size) as forked from its parent, "
                    + "with the pages it shared copy-on-write (the others emptied)"
            }
            + guardPages.map {
                "guard pages 0x\(String($0.lowerBound, radix: 16))-0x\(String($0.upperBound, radix: 16)) "
                    + "(MADV_GUARD_INSTALL)"
            }
    }

    var vdsoSteps: [String] {
        switch vdso {
        case .failure(let refusal): return ["refused: \(refusal)"]
        case .success(.unmapped): return ["unmap the vDSO and vvar (it had unmapped them)"]
        case .success(.moved(let start)):
            return ["move the vDSO to 0x\(String(start, radix: 16)), its vvar pages beside it as this kernel has them"]
        case .success(.proxied(let proxy)):
            return [
                proxy.summary,
                "put its vDSO back at 0x\(String(proxy.start, radix: 16)) (\(proxy.bytes.count) bytes) as memory, "
                    + "this kernel's vDSO and vvar left where the stub has them (or moved where the image has nothing), "
                    + "AT_SYSINFO_EHDR pointing there",
            ] + proxy.redirects.map { "  \($0)" }
        }
    }

    /// The layout of `image`; in a tree, its shared memory as `layout` shares it out. `running`:
    /// the kernel's pages here (ld-chpox's own, which every process on this kernel has).
    public init(image: ProcessImage, layout: TreeLayout? = nil, running: KernelPagesLayout? = VDSOProxy.running) {
        occupied = image.mappings.map { $0.start...($0.end - 1) }
        vdso = Result { () throws(VDSOProxy.Refusal) in try VDSOProxy.plan(image, running: running) }
        let shared = layout?.sharedMemory[image.pid] ?? [:]
        mappings = image.mappings.filter { $0.storesContents || $0.isFileBacked }.map { mapping in
            var setup = Self.setup(mapping)
            if let other = shared[mapping.start] {
                setup.source = .sharedWith(pid: other.creator, start: other.start, end: other.end, offset: other.offset)
            }
            return setup
        }
        deletedFiles = image.deletedFiles ?? []
        guardPages = (image.guardPages ?? []).filter { $0.count == 2 && $0[0] < $0[1] }.map { $0[0]..<$0[1] }
        memoryFiles = image.memoryFiles ?? []
        owners = RecreatedMemoryFile.Owners(image)
        pid = image.pid
        inherited = layout?.inheritedMappings[image.pid] ?? []
        copyOnWrite = (image.copyOnWrite ?? []).filter { $0.count == 2 && $0[0] < $0[1] }.map {
            Page.numbers(from: $0[0], to: $0[1])
        }
    }

    /// Where memory file `file` is kept in the stub from this phase until `DescriptorPhase`:
    /// after the deleted files.
    static func memoryFileCopy(_ file: Int, deletedFiles: Int) -> Int32 {
        RestartSession.deletedFileCopies + Int32(deletedFiles + file)
    }

    static func setup(_ mapping: ProcessImage.Mapping) -> MappingSetup {
        var setup = layout(mapping)
        setup.flags |= MappingAdvice.mapFlags(mapping.flags)
        if mapping.flags.contains("dp") { setup.flags = setup.flags & ~MAP_PRIVATE | MappingAdvice.mapDroppable }
        setup.advice = MappingAdvice.advice(mapping.flags).map { .init(flag: $0.flag, advice: $0.advice) }
        return setup
    }

    static func layout(_ mapping: ProcessImage.Mapping) -> MappingSetup {
        var prot: Int32 = 0
        if mapping.protection.contains(.read) { prot |= PROT_READ }
        if mapping.protection.contains(.write) { prot |= PROT_WRITE }
        if mapping.protection.contains(.execute) { prot |= PROT_EXEC }
        var flags =
            MAP_FIXED
            | (mapping.backing == .sharedFile || mapping.backing == .sharedAnonymous ? MAP_SHARED : MAP_PRIVATE)
        if mapping.growsDown { flags |= MAP_GROWSDOWN }
        let size = Int(mapping.end - mapping.start)
        if mapping.backing == .memoryFile, let file = mapping.memoryFile {
            let shared = mapping.protection.contains(.shared)
            return MappingSetup(
                start: mapping.start, size: size, protection: prot,
                flags: MAP_FIXED | (shared ? MAP_SHARED : MAP_PRIVATE),
                source: .memoryFile(
                    file, path: mapping.path, offset: mapping.offset,
                    readOnly: shared && !mapping.protection.contains(.write) && !mapping.flags.contains("mw")))
        }
        if mapping.backing == .privateFile, let file = mapping.deletedFile {
            return MappingSetup(
                start: mapping.start, size: size, protection: prot, flags: flags,
                source: .deletedFile(file, path: mapping.path, offset: mapping.offset))
        }
        if mapping.backing == .privateFile || mapping.backing == .sharedFile, !mapping.path.hasSuffix(" (deleted)") {
            // A shared mapping of a file opened for writing may be made writable later (VmFlags
            // `mw`, VM_MAYWRITE): it is opened for writing even while it is read-only now.
            let writable =
                mapping.backing == .sharedFile && (mapping.protection.contains(.write) || mapping.flags.contains("mw"))
            return MappingSetup(
                start: mapping.start, size: size, protection: prot, flags: flags,
                source: .file(path: mapping.path, writable: writable, offset: mapping.offset))
        }
        return MappingSetup(start: mapping.start, size: size, protection: prot, flags: flags, source: .anonymous)
    }

    public func run(in session: RestartSession) throws {
        let calls = session.calls
        let stub = try MemoryRegion.of(session.pid)
        let total = UInt64(Self.trampolineSize + Self.scratchSize)
        let taken = stub.map { $0.start...($0.end - 1) } + occupied
        var base: UInt64 = 0x1000_0000
        while taken.contains(where: { $0.overlaps(base...(base + total - 1)) }) { base += 0x10_0000 }
        try calls.call(
            .mmap, base, total, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
            -1, 0,
            to: "map the trampoline")
        try calls.write([0x0f, 0x05, 0xcc], at: base)  // syscall; int3
        session.useTrampoline(at: base, size: Int(total), scratch: RestartSession.scratch(of: base))
        // Forked from its parent once the parent's memory was made: what it keeps of it.
        let kept =
            session.forkedFrom == nil
            ? []
            : inherited.filter { range in
                stub.contains { !$0.isSpecial && $0.start <= range.lowerBound && range.upperBound <= $0.end }
            }
        try dropStub(stub, keeping: base..<(base + total), kept: kept, session.calls)
        if session.forkedFrom != nil && !session.sharesDescriptorTable {
            // The copies its parent keeps of files for its own mappings are not its own.
            try session.calls.call(
                .closeRange, RestartSession.deletedFileCopies, UInt32.max, 0,
                to: "close the copies of files its parent keeps (descriptors \(RestartSession.deletedFileCopies) on)")
        }
        try placeKernelPages(session, keeping: [base..<(base + total)] + kept)
        for (k, file) in deletedFiles.enumerated() {
            let fd = try RecreatedFile.create(file.contents, for: "the mappings of \(file.path)", session.calls)
            let kept = RestartSession.deletedFileCopies + Int32(k)
            try calls.call(.dup3, fd, kept, O_CLOEXEC, to: "keep the recreated \(file.path) as descriptor \(kept)")
            _ = try calls.result(of: .close, fd)
        }
        // `calls` ran at the stub's vDSO: from here on, at the trampoline with its scratch.
        let trampolineCalls = session.calls
        for (k, file) in memoryFiles.enumerated() {
            let calls = trampolineCalls
            let kept = Self.memoryFileCopy(k, deletedFiles: deletedFiles.count)
            let fd: Int32
            if let held = file.sameAs {
                guard let holder = session.tree.memoryFileHolders["\(held.pid):\(held.index)"] else {
                    throw TraceeError.unsupported(
                        pid: calls.pid, reason: "process \(held.pid)'s memory file \(held.index) was not made")
                }
                fd = try session.openOfTree(
                    "/proc/\(holder.pid)/fd/\(holder.fd)", flags: O_RDWR,
                    to: "open \(file.what) of process \(held.pid)")
            } else {
                fd = try RecreatedMemoryFile.create(file, owners: owners, calls)
            }
            if fd != kept {
                try calls.call(.dup3, fd, kept, O_CLOEXEC, to: "keep \(file.what) as descriptor \(kept)")
                _ = try calls.result(of: .close, fd)
            }
            session.tree.memoryFileHolders["\(pid):\(k)"] = (session.pid, kept)
        }
        // Each file opened once for all its mappings (a library has four or five): every remote
        // call is a round trip through ptrace, and opening a recorded path takes three.
        var opened = OpenedFiles()
        defer { opened.close(trampolineCalls) }
        for mapping in mappings {
            let range = mapping.start..<(mapping.start + UInt64(mapping.size))
            if kept.contains(range) {
                try keep(mapping, session)
            } else {
                try map(mapping, session, &opened)
            }
        }
        for run in guardPages {
            try trampolineCalls.call(
                .madvise, run.lowerBound, run.upperBound - run.lowerBound, MappingAdvice.guardInstall,
                to: "install guard pages at 0x\(String(run.lowerBound, radix: 16))")
        }
    }

    /// Keeps the stub's stdio as sources for terminals and pipes, then unmaps everything of the
    /// stub's but the trampoline, the kernel's pages and the `kept` ranges: one munmap for each
    /// stretch between those (a stretch's holes are unmapped already), not one a mapping (a
    /// dynamically linked stub has about 45, each a ptrace round trip of about 0.1 ms).
    private func dropStub(
        _ stub: [MemoryRegion], keeping trampoline: Range<UInt64>, kept: [Range<UInt64>], _ calls: RemoteCalls
    ) throws {
        for fd in Int32(0)..<3 { _ = try calls.result(of: .dup3, fd, RestartSession.stdioCopies + fd, O_CLOEXEC) }
        for stretch in Self.stretchesToUnmap(stub, keeping: [trampoline] + kept) {
            try calls.call(
                .munmap, stretch.lowerBound, stretch.upperBound - stretch.lowerBound,
                to: "unmap the stub's memory at 0x\(String(stretch.lowerBound, radix: 16))-"
                    + "0x\(String(stretch.upperBound, radix: 16))")
        }
    }

    /// Address ranges covering every mapping of `stub` but the kernel's pages and the ranges to
    /// `keep` (the trampoline, mapped after `stub` was read, perhaps in a hole between its
    /// mappings; what a forked process keeps), touching none of those: each mapping's parts
    /// outside them, joined across the holes between where nothing to keep lies.
    static func stretchesToUnmap(_ stub: [MemoryRegion], keeping: [Range<UInt64>]) -> [Range<UInt64>] {
        let keep = (stub.filter(\.isSpecial).map { $0.start..<$0.end } + keeping).sorted {
            $0.lowerBound < $1.lowerBound
        }
        var parts: [Range<UInt64>] = []
        for region in stub where !region.isSpecial {
            var from = region.start
            for range in keep where range.lowerBound < region.end && region.start < range.upperBound {
                if from < range.lowerBound { parts.append(from..<range.lowerBound) }
                from = max(from, range.upperBound)
            }
            if from < region.end { parts.append(from..<region.end) }
        }
        var stretches: [Range<UInt64>] = []
        for part in parts.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = stretches.last,
                !keep.contains(where: { $0.lowerBound < part.lowerBound && last.upperBound < $0.upperBound })
            {
                stretches[stretches.count - 1] = last.lowerBound..<max(last.upperBound, part.upperBound)
            } else {
                stretches.append(part)
            }
        }
        return stretches
    }

    /// A mapping the process keeps as its fork from its parent left it: given its protection
    /// and advice; every page but those it shared copy-on-write with the parent (whose page
    /// maps hold the same chunk there) emptied (MADV_DONTNEED: zero, or the file's), for the
    /// page fill to write its own. Those pages are the parent's still, shared: the page fill
    /// leaves them (`RestartSession.inheritedPages`).
    private func keep(_ mapping: MappingSetup, _ session: RestartSession) throws {
        let calls = session.calls
        let at = "0x\(String(mapping.start, radix: 16))"
        try calls.call(.mprotect, mapping.start, mapping.size, mapping.protection, to: "protect the inherited \(at)")
        let pages = Page.numbers(from: mapping.start, to: mapping.start + UInt64(mapping.size))
        var shared: [UInt64] = []
        if let parent = session.forkedFrom {
            for run in copyOnWrite where run.lowerBound < pages.upperBound && pages.lowerBound < run.upperBound {
                for page in max(run.lowerBound, pages.lowerBound)..<min(run.upperBound, pages.upperBound) {
                    if let chunk = session.map.chunk(of: page), chunk == parent.map.chunk(of: page) {
                        shared.append(page)
                    }
                }
            }
        }
        var from = pages.lowerBound
        for page in shared + [pages.upperBound] {
            if from < page {
                try calls.call(
                    .madvise, Page.address(of: from), Int(page - from) * Page.size, MappingAdvice.dontNeed,
                    to: "empty the pages of \(at) it did not share with its parent")
            }
            from = page + 1
        }
        session.inheritedPages.formUnion(shared)
        for advice in mapping.advice {
            try calls.call(
                .madvise, mapping.start, mapping.size, advice.advice,
                to: "advise \(at) as it was (VmFlags \(advice.flag))")
        }
    }

    /// Places the kernel's pages as `vdso` says: unmapped, moved where the image had its vDSO,
    /// or left where they are (moved where the image has nothing, if they are in its way) with
    /// the image's vDSO put back as a proxy for them. `keeping`: what else the stub keeps now.
    private func placeKernelPages(_ session: RestartSession, keeping: [Range<UInt64>]) throws {
        let calls = session.calls
        let current = try MemoryRegion.of(calls.pid).filter { KernelPagesLayout.names.contains($0.path) }
        let plan: VDSOProxy.Plan
        switch vdso {
        case .success(let decided): plan = decided
        case .failure(let refusal): throw TraceeError.unsupported(pid: calls.pid, reason: "\(refusal)")
        }
        guard case .unmapped = plan else {
            guard let running = current.first(where: { $0.path == "[vdso]" }) else {
                throw TraceeError.unsupported(pid: calls.pid, reason: "the stub has no vDSO to move")
            }
            let avoid = occupied.map { $0.lowerBound..<($0.upperBound + 1) } + keeping
            switch plan {
            case .moved(let start):
                try moveKernelPages(current, vdsoTo: start, avoiding: avoid, calls)
            case .proxied(let proxy):
                let low = current.map(\.start).min() ?? running.start
                let high = current.map(\.end).max() ?? running.end
                var at = running.start
                if avoid.contains(where: { $0.overlaps(low..<high) }) {
                    let free = Self.freeRange(size: high - low, avoiding: avoid + [low..<high])
                    at = free + (running.start - low)
                    try moveKernelPages(current, vdsoTo: at, avoiding: avoid, calls)
                }
                let size = proxy.bytes.count
                let where_ = "the vDSO it had at 0x\(String(proxy.start, radix: 16))"
                try calls.call(
                    .mmap, proxy.start, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0,
                    to: "map \(where_)")
                try calls.write(proxy.patched(runningAt: at), at: proxy.start)
                try calls.call(.mprotect, proxy.start, size, PROT_READ | PROT_EXEC, to: "protect \(where_)")
                session.runningVDSO = at
                session.notices.append(proxy.summary)
            case .unmapped: break
            }
            return
        }
        for region in current {
            try calls.call(.munmap, region.start, region.size, to: "unmap \(region.path), which it had unmapped")
        }
    }

    /// Moves the kernel's pages `current` so that the vDSO starts at `start` and the vvar pages
    /// keep their offsets from it (its code has them built in); through a free range first where
    /// the two places overlap (a move onto the pages still to move would unmap them).
    private func moveKernelPages(
        _ current: [MemoryRegion], vdsoTo start: UInt64, avoiding: [Range<UInt64>], _ calls: RemoteCalls
    ) throws {
        guard let vdso = current.first(where: { $0.path == "[vdso]" }), vdso.start != start else { return }
        let low = current.map(\.start).min() ?? vdso.start
        let high = current.map(\.end).max() ?? vdso.end
        let target = (start - (vdso.start - low))..<(start + (high - vdso.start))
        var parts = current
        if target.overlaps(low..<high) {
            let free = Self.freeRange(size: high - low, avoiding: avoiding + [low..<high, target])
            parts = try move(parts, by: Int64(bitPattern: free &- low), calls)
        }
        let from = parts.first { $0.path == "[vdso]" }?.start ?? vdso.start
        _ = try move(parts, by: Int64(bitPattern: start &- from), calls)
    }

    private func move(_ parts: [MemoryRegion], by delta: Int64, _ calls: RemoteCalls) throws -> [MemoryRegion] {
        try parts.map { part in
            let to = UInt64(bitPattern: Int64(bitPattern: part.start) &+ delta)
            try calls.call(
                .mremap, part.start, part.size, part.size, CHPOX_MREMAP_MAYMOVE | CHPOX_MREMAP_FIXED, to,
                to: "move \(part.path) to 0x\(String(to, radix: 16))")
            var moved = part
            (moved.start, moved.end) = (to, to + part.size)
            return moved
        }
    }

    /// The lowest range of `size` bytes from 256 MiB up, at a 1 MiB step, that overlaps none of
    /// `avoiding`.
    static func freeRange(size: UInt64, avoiding: [Range<UInt64>]) -> UInt64 {
        var base: UInt64 = 0x1000_0000
        while avoiding.contains(where: { $0.overlaps(base..<(base + size)) }) { base += 0x10_0000 }
        return base
    }

    /// The files opened in the stub for mappings, by path and access, closed at the phase's end.
    struct OpenedFiles {
        private var descriptors: [String: Int] = [:]

        mutating func descriptor(
            _ path: String, writable: Bool, _ session: RestartSession
        ) throws -> Int {
            let key = "\(writable ? "w" : "r") \(path)"
            if let fd = descriptors[key] { return fd }
            let fd = try session.openRecorded(path, flags: writable ? O_RDWR : O_RDONLY, to: "open \(path)")
            descriptors[key] = fd
            return fd
        }

        func close(_ calls: RemoteCalls) {
            for fd in descriptors.values { _ = try? calls.result(of: .close, fd) }
        }
    }

    private func map(_ mapping: MappingSetup, _ session: RestartSession, _ opened: inout OpenedFiles) throws {
        let calls = session.calls
        try create(mapping, session, &opened)
        for advice in mapping.advice {
            try calls.call(
                .madvise, mapping.start, mapping.size, advice.advice,
                to: "advise 0x\(String(mapping.start, radix: 16)) as it was (VmFlags \(advice.flag))")
        }
    }

    private func create(_ mapping: MappingSetup, _ session: RestartSession, _ opened: inout OpenedFiles) throws {
        let calls = session.calls
        switch mapping.source {
        case .anonymous:
            try calls.call(
                .mmap, mapping.start, mapping.size, mapping.protection, mapping.flags | MAP_ANONYMOUS, -1, 0,
                to: "map anonymous memory at 0x\(String(mapping.start, radix: 16))")
        case .file(let path, let writable, let offset):
            let fd = try opened.descriptor(path, writable: writable, session)
            try calls.call(
                .mmap, mapping.start, mapping.size, mapping.protection, mapping.flags, fd, offset, to: "map \(path)")
        case .deletedFile(let file, let path, let offset):
            try calls.call(
                .mmap, mapping.start, mapping.size, mapping.protection, mapping.flags,
                RestartSession.deletedFileCopies + Int32(file), offset, to: "map the recreated \(path)")
        case .sharedWith(let pid, let start, let end, let offset):
            let what = "map process \(pid)'s shared memory at 0x\(String(mapping.start, radix: 16))"
            let object =
                "/proc/\(try session.tree.current(pid))/map_files/\(String(start, radix: 16))-\(String(end, radix: 16))"
            // Read-write whatever its protection now: an mprotect may make it writable later.
            let fd = try session.openOfTree(object, flags: O_RDWR, to: what)
            defer { _ = try? calls.result(of: .close, fd) }
            try calls.call(.mmap, mapping.start, mapping.size, mapping.protection, mapping.flags, fd, offset, to: what)
        case .memoryFile(let file, let path, let offset, let readOnly):
            let what = "map memory file \(file) (\(path)) at 0x\(String(mapping.start, radix: 16))"
            var fd = Self.memoryFileCopy(file, deletedFiles: deletedFiles.count)
            if readOnly {
                fd = Int32(
                    try calls.withFrame { () throws(TraceeError) in
                        try calls.call(
                            .openat, AT_FDCWD, try calls.string("/proc/self/fd/\(fd)"), O_RDONLY | O_CLOEXEC, 0,
                            to: what)
                    })
            }
            defer { if readOnly { _ = try? calls.result(of: .close, fd) } }
            try calls.call(.mmap, mapping.start, mapping.size, mapping.protection, mapping.flags, fd, offset, to: what)
        }
    }
}
