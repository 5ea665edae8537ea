import Syscall
import Tracee

/// userfaultfd write-protect in async mode. A userfaultfd is created inside the process by an
/// injected system call, taken over with pidfd_getfd and closed in the process, so its
/// descriptor table is as before and the tracking lives exactly as long as this tracker holds
/// the descriptor (it survives ptrace detach between checkpoints; when the tracker exits, the
/// kernel unregisters every range). Writes mark pages written without any fault reaching us;
/// PAGEMAP_SCAN with PM_SCAN_WP_MATCHING reports them and write-protects them again in one step.
public final class UffdTracker: DirtyTracker {
    public let kind = TrackerKind.uffdWP
    public let pid: Int32
    private var uffd: Userfaultfd?
    private var history = TrackingHistory()
    /// Ranges registered with the userfaultfd.
    private var registered = AddressRuns()

    /// Features required: async write-protect (6.7) and protection of unpopulated pages (6.4).
    static let features: Userfaultfd.Features = [.writeProtectAsync, .writeProtectUnpopulated]

    /// Creates the userfaultfd inside process `pid` (not frozen by the caller): the
    /// `chpox-inject` helper does the injection in a process and session of its own, so
    /// that this process can be killed at any instant without harming the target.
    public init(pid: Int32) throws(TraceeError) {
        self.pid = pid
        guard try Pagemap(pid: pid).hasScan() else {
            throw .unsupported(pid: pid, reason: "uffd-wp needs PAGEMAP_SCAN (Linux 6.7+)")
        }
        let uffd = try Self.takeUserfaultfd(from: pid)
        do { try uffd.enable(Self.features) } catch {
            uffd.close()
            throw .unsupported(
                pid: pid, reason: "uffd-wp: this kernel refuses UFFD_FEATURE_WP_ASYNC (\(error); Linux 6.7+ has it)")
        }
        self.uffd = uffd
    }

    /// Has chpox-inject create a userfaultfd in `pid`, takes it with pidfd_getfd, then lets
    /// the helper close the target's copy.
    static func takeUserfaultfd(from pid: Int32) throws(TraceeError) -> Userfaultfd {
        let injector = try Injector(["userfaultfd", "\(pid)"], pid: pid)
        defer { injector.finish() }
        let answer = (injector.readLine() ?? "").trimmingWhitespace()
        guard answer.hasPrefix("fd "), let remote = Int32(answer.dropFirst(3)) else {
            let why = answer.hasPrefix("error ") ? String(answer.dropFirst(6)) : "the injector ended early"
            throw .unsupported(pid: pid, reason: "creating a userfaultfd in it failed: \(why)")
        }
        let local: Result<FileDescriptor, Errno>
        do {
            let process = try ProcessDescriptor.open(pid)
            defer { process.close() }
            local = .success(try process.copyDescriptor(remote))
        } catch {
            local = .failure(error)
        }
        // The helper closes its copy either way.
        injector.send("taken")
        switch local {
        case .success(let fd): return Userfaultfd(descriptor: fd)
        case .failure(let error): throw .system(error, pid: pid, operation: "take the userfaultfd (pidfd_getfd) of")
        }
    }

    deinit { stop() }

    public func stop() {
        guard let uffd else { return }
        for run in registered.runs {
            try? uffd.unregister(start: run.start, length: run.end - run.start)
        }
        uffd.close()
        self.uffd = nil
        registered = AddressRuns()
    }

    public func collect(_ process: FrozenProcess) throws(TraceeError) -> DirtyReport {
        guard let uffd else { throw .unsupported(pid: pid, reason: "uffd-wp tracking was stopped") }
        let regions = try TrackingHistory.regions(of: pid)
        let layout = history.layout(regions)
        let pagemap = try Pagemap(frozen: process)
        var dirty: [PageRun] = []
        var wholesale = layout.new.runs
        var fresh: [MemoryRegion] = []
        for region in regions {
            // Shared mappings change through other processes and write(2): never vouched for.
            if region.shared {
                wholesale.append(PageRun(start: region.start, end: region.end))
                continue
            }
            // Written pages of registered mappings, write-protected again in the same walk.
            // Unregistered mappings are skipped by the kernel without a page-table walk.
            dirty += try pagemap.scan(
                start: region.start, end: region.end, flags: .writeProtectMatching,
                required: [.written, .wpAllowed], returned: .written)
            // Ranges the userfaultfd does not cover (new, or dropped by mremap): only those
            // mappings are walked.
            let unprotected = try pagemap.scan(
                start: region.start, end: region.end, required: .wpAllowed,
                inverted: .wpAllowed, returned: .wpAllowed)
            if !unprotected.isEmpty {
                wholesale += unprotected.map { PageRun(start: $0.start, end: $0.end) }
                fresh.append(region)
            }
        }
        // Newly seen ranges: registered and protected now, so the next collect can vouch for them.
        var added: [PageRun] = []
        defer { if !added.isEmpty { registered = registered.union(AddressRuns(added)) } }
        for region in fresh { try protect(region, uffd, registering: &added) }
        // Zapping an anonymous page drops its uffd-wp state with it, so the page reads as
        // written (mm/memory.c: "Zap on anonymous always means dropping everything"); a file
        // page keeps a marker and may read back other contents unreported. Only private file
        // mappings need the "held data, now zero" rule.
        let fileBacked = regions.filter { !$0.isAnonymous && !$0.shared }
        let resident = try Residency(pagemap: pagemap).resident(fileBacked)
        let vanished = history.vanished(resident: resident, continuing: layout.continuing)
        history.record(regions: regions, resident: resident)
        let wholesaleRuns = AddressRuns(wholesale)
        // A written page of a private mapping is present or swapped, and anonymous (a write
        // to a private file page copies it), unless the layout makes it suspect.
        let written = AddressRuns(dirty).subtracting(wholesaleRuns).subtracting(vanished)
        return DirtyReport(
            regions: regions, dirty: AddressRuns(dirty).union(wholesaleRuns).union(vanished),
            unmapped: layout.unmapped, wholesale: wholesaleRuns, written: written)
    }

    public func pendingPages(upTo limit: UInt64) throws(TraceeError) -> UInt64? {
        guard uffd != nil else { return nil }
        guard !history.isFirst else { return limit }
        let pagemap = try Pagemap(pid: pid)
        var pages: UInt64 = 0
        for region in try TrackingHistory.regions(of: pid) where !region.shared && pages < limit {
            // Written pages of the registered ranges (the kernel skips the others without a walk),
            // and the resident pages of ranges not registered yet.
            for run in try pagemap.scan(
                start: region.start, end: region.end, required: [.written, .wpAllowed], returned: .written,
                maxPages: limit - pages)
            {
                pages += run.pageCount
            }
            for range in AddressRuns([PageRun(start: region.start, end: region.end)]).subtracting(registered).runs
            where pages < limit {
                for run in try pagemap.scan(
                    start: range.start, end: range.end, anyOf: [.present, .swapped], returned: .present,
                    maxPages: limit - pages)
                {
                    pages += run.pageCount
                }
            }
        }
        return min(pages, limit)
    }

    /// Registers and write-protects `region`, adding it to `added` once registered (the caller
    /// adds them to `registered` at once: one union per region was quadratic in the mappings).
    private func protect(
        _ region: MemoryRegion, _ uffd: Userfaultfd, registering added: inout [PageRun]
    ) throws(TraceeError) {
        do { try uffd.registerForWriteProtect(start: region.start, length: region.size) } catch {
            // A mapping the kernel will not track (e.g. VM_PFNMAP): it stays wholly dirty.
            return
        }
        added.append(PageRun(start: region.start, end: region.end))
        do { try uffd.writeProtect(start: region.start, length: region.size) } catch {
            throw .system(error, pid: pid, operation: "write-protect \(region) of")
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
