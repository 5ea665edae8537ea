#if canImport(Glibc)
import Glibc
#endif
import Store
import Syscall
import Tracee

/// Every page the generation's page map holds, written into the mappings. A zero page is
/// written only where a file's bytes would otherwise show; anonymous memory is zero already.
/// Pages of MAP_DROPPABLE mappings are left out, and pages a process keeps shared
/// copy-on-write with its parent (`RestartSession.inheritedPages`) hold the same bytes already
/// and are left, so that they stay shared.
///
/// The pages come a window at a time from the store (`ChunkReader.readPageWindows`, which
/// decodes the next window while this one is written). Pages of writable mappings are written
/// in batches with process_vm_writev, straight from the decoded frames (one copy, up to 1024
/// runs of pages a call, where one `pwrite` a page cost a system call, a page allocated for
/// the copy and a second copy each). process_vm_writev keeps to the protections: pages of
/// mappings that are not writable, and a batch it could not write whole, are written one by
/// one through /proc/<pid>/mem, which writes read-only pages too (FOLL_FORCE) and names the
/// page that fails. Pages are not faulted in ahead: the kernel faults each in as it is
/// written, which costs no more than faulting a range in first (MADV_POPULATE_WRITE), and
/// a page that is not written stays absent, as it was.
///
/// In a lazy restart (`ld-chpox --lazy`) only the pages of mappings a userfaultfd cannot serve
/// are written here (private file mappings, shared memory, unreadable mappings, wipe-on-fork
/// memory, and what the kernel writes where a fault cannot wait: stacks, TLS blocks);
/// the anonymous private mappings are registered with a userfaultfd of the process and their
/// stored pages handed to the restart's page server (`LazyPageServer`), which fills them on
/// first touch and streams the rest in once the process runs.
public struct PageFillPhase: RestartPhase {
    /// Page ranges (page numbers, end exclusive) of private file mappings (and memory files').
    public var fileBackedPages: [Range<UInt64>]
    /// Page ranges of MAP_DROPPABLE mappings (VmFlags `dp`): left empty, as the kernel may
    /// leave them at any moment (and CRIU does).
    public var droppablePages: [Range<UInt64>] = []
    /// Every mapping's pages and how they are filled, ascending.
    var regions: [Region]

    /// A mapping's pages, as the fill treats them.
    struct Region: Equatable {
        var pages: Range<UInt64>
        /// Zero pages are written (file or memory file pages would show otherwise).
        var fileBacked: Bool
        /// Nothing is written (MAP_DROPPABLE).
        var droppable: Bool
        /// process_vm_writev may write it (its protection has PROT_WRITE).
        var writable: Bool
        /// Filled lazily, by the page server (`lazy`).
        var lazy = false
        /// Anonymous private memory a userfaultfd may fill (`PageCopier`): not shared, locked
        /// (populated at its mmap) or droppable.
        var copyFillable = false
    }

    /// Anonymous private mappings are filled by the page server, not here.
    public private(set) var lazy = false

    public var name: String { "page fill" }
    public var steps: [String] {
        let lazyCount = regions.filter(\.lazy).count
        return [
            (lazy
                ? "write the stored pages of the mappings a userfaultfd cannot serve"
                : "write the stored pages")
                + ", with process_vm_writev where writable, else through /proc/PID/mem"
                + " (zero pages only over \(fileBackedPages.count) file mappings)"
        ]
            + (lazy
                ? [
                    "register \(lazyCount) anonymous private mappings with a userfaultfd of the process: their "
                        + "stored pages are filled on first touch and streamed in once it runs (--lazy)"
                ] : [])
            + (droppablePages.isEmpty ? [] : ["leave \(droppablePages.count) droppable mappings empty"])
    }

    /// `lazy`: leave the anonymous private mappings to the page server.
    public init(image: ProcessImage, lazy: Bool) {
        self.init(image: image)
        guard lazy else { return }
        self.lazy = true
        // Memory the kernel itself writes in a context where a fault cannot wait for the page
        // server: a signal frame (the kernel cannot wait with a signal pending: the frame is
        // lost and the thread killed with SIGSEGV), rseq's cpu id on the way back to user
        // mode, the tid cleared and the robust list walked as a thread exits. Every mapping
        // holding a thread's stack pointer, its sigaltstack, rseq area, clear-tid word or robust
        // list head is filled whole now (thread stacks and the TLS blocks: small).
        var kernelWritten: [UInt64] = []
        for thread in image.threads {
            kernelWritten.append(thread.registers.rsp)
            if let stack = thread.signalStack, stack.flags & 2 == 0, stack.size > 0 {  // not SS_DISABLE
                kernelWritten += [stack.address, stack.address + stack.size - 1]
            }
            if let rseq = thread.rseq { kernelWritten.append(rseq.address) }
            if let clear = thread.clearAddress, clear != 0 { kernelWritten.append(clear) }
            if let head = thread.robustList?.first, head != 0 { kernelWritten.append(head) }
        }
        let kernelMappings = Set(
            image.mappings.filter { mapping in kernelWritten.contains { $0 >= mapping.start && $0 < mapping.end } }
                .map { Page.number(of: $0.start) })
        let lazyStarts = Set(
            image.mappings.filter { mapping in
                (mapping.backing == .anonymous || mapping.backing == .heap)
                    && mapping.protection.contains(.read) && !mapping.protection.contains(.shared)
                    // MADV_WIPEONFORK: a child's copy must start empty, and a fork would hand the
                    // server a copy of it to fill.
                    && !mapping.flags.contains("dp") && !mapping.flags.contains("wf")
            }.map { Page.number(of: $0.start) }
        ).subtracting(kernelMappings)
        for k in regions.indices where lazyStarts.contains(regions[k].pages.lowerBound) { regions[k].lazy = true }
    }

    public init(image: ProcessImage) {
        fileBackedPages = image.mappings.filter { $0.backing == .privateFile || $0.backing == .memoryFile }.map {
            Page.numbers(from: $0.start, to: $0.end)
        }
        droppablePages = image.mappings.filter { $0.flags.contains("dp") }.map {
            Page.numbers(from: $0.start, to: $0.end)
        }
        regions = image.mappings.sorted { $0.start < $1.start }.map {
            Region(
                pages: Page.numbers(from: $0.start, to: $0.end),
                fileBacked: $0.backing == .privateFile || $0.backing == .memoryFile,
                droppable: $0.flags.contains("dp"), writable: $0.protection.contains(.write),
                copyFillable: ($0.backing == .anonymous || $0.backing == .heap || $0.backing == .stack)
                    && !$0.protection.contains(.shared) && !$0.flags.contains("lo") && !$0.flags.contains("dp"))
        }
    }

    /// Whether a zero page at `page` must be written (it would show a file's bytes otherwise).
    public func writesZeroPage(at page: UInt64) -> Bool {
        var cursor = RegionCursor(regions)
        return cursor.region(of: page)?.fileBacked ?? false
    }

    public func run(in session: RestartSession) throws {
        let pid = session.pid
        let memory: FileDescriptor
        do { memory = try FileDescriptor.open("/proc/\(pid)/mem", [.readWrite, .closeOnExec]) } catch {
            throw TraceeError.from(error, pid: pid, "open the memory of")
        }
        defer { memory.close() }
        var writer = PageWriter(pid: pid, memory: memory)
        var cursor = RegionCursor(regions)
        let inherited = session.inheritedPages
        // Lazily: the pages the page server fills are set aside without being read.
        var lazyEntries: [PageEntry] = []
        var eager = session.map
        // A process forked within the restart holds its parent's pages where its own are to be
        // written: filled whole (RestartPlan decides so too; this is the phase's own guard).
        let lazy = self.lazy && session.forkedFrom == nil
        if lazy {
            var sorter = RegionCursor(regions)
            var kept: [PageEntry] = []
            for entry in session.map.pages {
                if sorter.region(of: entry.page)?.lazy == true {
                    if entry.chunk != .zeroPage && !inherited.contains(entry.page) { lazyEntries.append(entry) }
                } else {
                    kept.append(entry)
                }
            }
            eager = PageMap(pages: kept)
        }
        // Eagerly, anonymous private memory is copied in through a userfaultfd where the kernel
        // gives one (a process forked within the restart holds its parent's pages there: written).
        var copier =
            lazy || session.forkedFrom != nil
            ? nil : PageCopier.open(session, ranges: regions.filter(\.copyFillable).map(\.pages))
        defer { copier?.close() }
        var leftover: [(page: UInt64, bytes: [UInt8])] = []
        try session.store.reader().readPageWindows(eager) { window in
            for k in 0..<window.count {
                let (entry, bytes) = window[k]
                let region = cursor.region(of: entry.page)
                if entry.chunk == .zeroPage && region?.fileBacked != true { continue }
                if region?.droppable == true { continue }
                if !inherited.isEmpty && inherited.contains(entry.page) { continue }  // its parent's, shared
                if region?.copyFillable == true && copier != nil {
                    copier!.add(entry.page, bytes)
                } else if region?.writable == true {
                    try writer.add(entry.page, bytes)
                } else {
                    try writer.writeThroughMemory(entry.page, bytes)
                }
            }
            // The window's bytes are gone once it returns: the pages the copier could not take
            // are kept, to be written once it is closed (while a mapping is registered, a write
            // that must fault a page in fails: EIO).
            for (page, bytes) in copier?.flush() ?? [] { leftover.append((page, Array(bytes))) }
            try writer.flush()
        }
        let copied = copier?.copied ?? 0
        copier?.close()
        copier = nil
        var leftoverCursor = RegionCursor(regions)
        for (page, bytes) in leftover {
            let writable = leftoverCursor.region(of: page)?.writable == true
            try bytes.withUnsafeBytes { raw in
                if writable {
                    try writer.add(page, raw)
                    try writer.flush()
                } else {
                    try writer.writeThroughMemory(page, raw)
                }
            }
        }
        session.pagesWritten = writer.written + copied
        session.pagesCopied = copied
        if lazy { try session.serveLazily(regions.filter(\.lazy).map(\.pages), lazyEntries) }
    }
}

/// The mapping of each page, pages asked for in ascending order (as a page map holds them):
/// one step forward a page at most, instead of a search through every mapping.
struct RegionCursor {
    let regions: [PageFillPhase.Region]
    private var index = 0
    private var last: UInt64 = 0

    init(_ regions: [PageFillPhase.Region]) { self.regions = regions }

    /// The region holding `page`, or nil where no mapping holds it.
    mutating func region(of page: UInt64) -> PageFillPhase.Region? {
        if page < last { index = 0 }  // out of order: from the start again
        last = page
        while index < regions.count && regions[index].pages.upperBound <= page { index += 1 }
        guard index < regions.count, regions[index].pages.contains(page) else { return nil }
        return regions[index]
    }
}

/// Writes pages into a process: batches for process_vm_writev (runs of consecutive pages on
/// either side merged into one iovec, at most `maxVectors` each side a call), and single
/// pages through /proc/<pid>/mem.
///
/// A large batch is written in parts at once, one process_vm_writev per part on every core:
/// most of a write's time is the target's page faults (about 2 us a page here: allocating and
/// zeroing the page), taken in the writer's thread, and faults on different pages of one
/// process run side by side (per-VMA locks). A 1 GiB restart's fill: 365 ms on one thread.
struct PageWriter {
    let pid: Int32
    let memory: FileDescriptor
    let process: ProcessMemory
    /// Pages written so far.
    private(set) var written = 0
    private var batch: [(page: UInt64, bytes: UnsafeRawBufferPointer)] = []

    /// IOV_MAX: the most iovecs process_vm_writev takes on each side.
    static let maxVectors = 1024
    /// Pages gathered before a flush writes them (the caller flushes sooner, at each window's end).
    static let maxBatch = 16384
    /// Below this many pages a part is not worth a thread of its own.
    static let pagesPerPart = 512

    init(pid: Int32, memory: FileDescriptor) {
        self.pid = pid
        self.memory = memory
        process = ProcessMemory(pid: pid)
        batch.reserveCapacity(Self.maxBatch)
    }

    /// Adds `bytes` (one page, valid until `flush`) for page `page` to the batch.
    mutating func add(_ page: UInt64, _ bytes: UnsafeRawBufferPointer) throws(TraceeError) {
        if batch.count == Self.maxBatch { try flush() }
        batch.append((page, bytes))
    }

    /// Writes the batch, in parts at once where it is large; in each part the pages it could
    /// not write (from the first it stopped at) go through /proc/<pid>/mem.
    mutating func flush() throws(TraceeError) {
        guard !batch.isEmpty else { return }
        let parts = Self.parts(of: batch.count)
        // Pages each part wrote from its start, or the error that stopped it.
        var outcomes = [Result<Int, TraceeError>](repeating: .success(0), count: parts.count)
        batch.withUnsafeBufferPointer { batch in
            outcomes.withUnsafeMutableBufferPointer { outcomes in
                Parallel.forEach(parts.count) { k in
                    let part = UnsafeBufferPointer(rebasing: batch[parts[k]])
                    outcomes[k] = Result { () throws(TraceeError) in try Self.write(part, process) }
                }
            }
        }
        for (part, outcome) in zip(parts, outcomes) {
            let done = try outcome.get()
            written += done
            for (page, bytes) in batch[part].dropFirst(done) { try writeThroughMemory(page, bytes) }
        }
        batch.removeAll(keepingCapacity: true)
    }

    /// A batch of `count` pages cut into parts of about equal size, one a core, none under
    /// `pagesPerPart` (one part below that): how `flush` and `PageCopier` spread their work.
    static func parts(of count: Int) -> [Range<Int>] {
        let parts = max(1, min(Kernel.onlineProcessors, count / pagesPerPart))
        let size = (count + parts - 1) / parts
        return stride(from: 0, to: count, by: max(size, 1)).map { $0..<min($0 + size, count) }
    }

    /// Writes `pages` with as few process_vm_writev calls as their runs allow; returns how many
    /// were written from the first on, stopping at the first call that fell short.
    static func write(
        _ pages: UnsafeBufferPointer<(page: UInt64, bytes: UnsafeRawBufferPointer)>, _ process: ProcessMemory
    ) throws(TraceeError) -> Int {
        var local: [iovec] = []
        var remote: [iovec] = []
        local.reserveCapacity(maxVectors)
        remote.reserveCapacity(maxVectors)
        var done = 0
        var first = 0
        while first < pages.count {
            local.removeAll(keepingCapacity: true)
            remote.removeAll(keepingCapacity: true)
            var end = first
            while end < pages.count {
                let (page, bytes) = pages[end]
                let address = Page.address(of: page)
                let base = UnsafeMutableRawPointer(mutating: bytes.baseAddress)
                let joinsRemote =
                    remote.last.map { UInt64(UInt(bitPattern: $0.iov_base)) + UInt64($0.iov_len) == address } ?? false
                let joinsLocal =
                    local.last.map { last in base != nil && last.iov_base.map { $0 + last.iov_len } == base }
                    ?? false
                if (!joinsRemote && remote.count == maxVectors) || (!joinsLocal && local.count == maxVectors) { break }
                if joinsRemote {
                    remote[remote.count - 1].iov_len += bytes.count
                } else {
                    remote.append(
                        iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address)), iov_len: bytes.count))
                }
                if joinsLocal {
                    local[local.count - 1].iov_len += bytes.count
                } else {
                    local.append(iovec(iov_base: base, iov_len: bytes.count))
                }
                end += 1
            }
            let wanted = (end - first) * Page.size
            let wrote = try local.withUnsafeBufferPointer { (local) throws(TraceeError) in
                try remote.withUnsafeBufferPointer { (remote) throws(TraceeError) in
                    try process.write(local, over: remote)
                }
            }
            done += wrote / Page.size
            if wrote < wanted { return done }
            first = end
        }
        return done
    }

    /// Writes one page through /proc/<pid>/mem at once.
    mutating func writeThroughMemory(_ page: UInt64, _ bytes: UnsafeRawBufferPointer) throws(TraceeError) {
        do throws(Errno) { try memory.writeAll(bytes, at: Int64(Page.address(of: page))) } catch {
            throw TraceeError.from(error, pid: pid, "write page 0x\(String(Page.address(of: page), radix: 16)) of")
        }
        written += 1
    }
}
