#if canImport(Glibc)
import Glibc
#endif
import CLinux
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
    private var uffd: FileDescriptor?
    private var history = TrackingHistory()
    /// Ranges registered with the userfaultfd.
    private var registered = AddressRuns()

    /// Features required: async write-protect (6.7) and protection of unpopulated pages (6.4).
    static let features = UInt64(UFFD_FEATURE_WP_ASYNC) | UInt64(UFFD_FEATURE_WP_UNPOPULATED)

    /// Creates the userfaultfd inside process `pid` (not frozen by the caller): the
    /// `chpox-inject` helper does the injection in a process and session of its own, so
    /// that this process can be killed at any instant without harming the target.
    public init(pid: Int32) throws(TraceeError) {
        self.pid = pid
        guard try Pagemap(pid: pid).hasScan() else { throw .unsupported(pid: pid, reason: "uffd-wp needs PAGEMAP_SCAN (Linux 6.7+)") }
        let local = try Self.takeUserfaultfd(from: pid)
        let fd = FileDescriptor(rawValue: local)
        var api = uffdio_api(api: UInt64(UFFD_API), features: Self.features, ioctls: 0)
        guard chpox_ioctl(local, chpox_UFFDIO_API, &api) == 0 else {
            let error = Errno.current
            fd.close()
            throw .unsupported(pid: pid, reason: "uffd-wp: this kernel refuses UFFD_FEATURE_WP_ASYNC (\(error); Linux 6.7+ has it)")
        }
        uffd = fd
    }

    /// Has chpox-inject create a userfaultfd in `pid`, takes it with pidfd_getfd, then lets
    /// the helper close the target's copy.
    static func takeUserfaultfd(from pid: Int32) throws(TraceeError) -> Int32 {
        let injector = try Injector(["userfaultfd", "\(pid)"], pid: pid)
        defer { injector.finish() }
        let answer = (injector.readLine() ?? "").trimmingWhitespace()
        guard answer.hasPrefix("fd "), let remote = Int32(answer.dropFirst(3)) else {
            throw .unsupported(pid: pid, reason: "creating a userfaultfd in it failed: \(answer.hasPrefix("error ") ? String(answer.dropFirst(6)) : "the injector ended early")")
        }
        let pidfd = chpox_pidfd_open(pid)
        var local: Int32 = -1
        if pidfd >= 0 {
            local = chpox_pidfd_getfd(pidfd, remote)
            Glibc.close(pidfd)
        }
        let error = Errno.current
        injector.send("taken")
        guard local >= 0 else { throw .system(error, pid: pid, operation: "take the userfaultfd (pidfd_getfd) of") }
        _ = chpox_fcntl_int(local, F_SETFD, FD_CLOEXEC)
        return local
    }

    deinit { stop() }

    public func stop() {
        guard let uffd else { return }
        for run in registered.runs {
            var range = uffdio_range(start: run.start, len: run.end - run.start)
            _ = chpox_ioctl(uffd.rawValue, chpox_UFFDIO_UNREGISTER, &range)
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
            dirty += try pagemap.scan(start: region.start, end: region.end, flags: .writeProtectMatching,
                                      required: [.written, .wpAllowed], returned: .written)
            // Ranges the userfaultfd does not cover (new, or dropped by mremap): only those
            // mappings are walked.
            let unprotected = try pagemap.scan(start: region.start, end: region.end, required: .wpAllowed,
                                               inverted: .wpAllowed, returned: .wpAllowed)
            if !unprotected.isEmpty {
                wholesale += unprotected.map { PageRun(start: $0.start, end: $0.end) }
                fresh.append(region)
            }
        }
        // Newly seen ranges: registered and protected now, so the next collect can vouch for them.
        for region in fresh { try protect(region, uffd) }
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
        return DirtyReport(regions: regions, dirty: AddressRuns(dirty).union(wholesaleRuns).union(vanished),
                           unmapped: layout.unmapped, wholesale: wholesaleRuns, written: written)
    }

    private func protect(_ region: MemoryRegion, _ uffd: FileDescriptor) throws(TraceeError) {
        var register = uffdio_register(range: uffdio_range(start: region.start, len: region.size), mode: UInt64(UFFDIO_REGISTER_MODE_WP), ioctls: 0)
        guard chpox_ioctl(uffd.rawValue, chpox_UFFDIO_REGISTER, &register) == 0 else {
            // A mapping the kernel will not track (e.g. VM_PFNMAP): it stays wholly dirty.
            return
        }
        registered = registered.union(AddressRuns([PageRun(start: region.start, end: region.end)]))
        var protect = uffdio_writeprotect(range: uffdio_range(start: region.start, len: region.size), mode: UInt64(UFFDIO_WRITEPROTECT_MODE_WP))
        if chpox_ioctl(uffd.rawValue, chpox_UFFDIO_WRITEPROTECT, &protect) != 0 {
            throw .system(Errno.current, pid: pid, operation: "write-protect \(region) of")
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
