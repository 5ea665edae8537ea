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
    private let pagemap: Pagemap
    private var history = TrackingHistory()
    /// Ranges registered with the userfaultfd.
    private var registered = AddressRuns()

    /// Features required: async write-protect (6.7) and protection of unpopulated pages (6.4).
    static let features = UInt64(UFFD_FEATURE_WP_ASYNC) | UInt64(UFFD_FEATURE_WP_UNPOPULATED)

    /// Creates the userfaultfd inside `process` (which must be frozen).
    public init(_ process: FrozenProcess) throws(TraceeError) {
        pid = process.pid
        pagemap = try Pagemap(pid: pid)
        guard pagemap.hasScan() else { throw .unsupported(pid: pid, reason: "uffd-wp needs PAGEMAP_SCAN (Linux 6.7+)") }
        let flags = Int(O_CLOEXEC | O_NONBLOCK | Int32(UFFD_USER_MODE_ONLY))
        let remote = try process.syscall(Int(chpox_syscall_number_userfaultfd()), flags)
        guard remote >= 0 else {
            throw .system(Errno(rawValue: Int32(-remote)), pid: pid, operation: "create a userfaultfd in")
        }
        // From here on, the process's descriptor table has one entry too many until the
        // injected close below: take it over first, then close it there.
        let pidfd = chpox_pidfd_open(pid)
        var local: Int32 = -1
        if pidfd >= 0 {
            local = chpox_pidfd_getfd(pidfd, Int32(remote))
            Glibc.close(pidfd)
        }
        let getError = Errno.current
        _ = try process.syscall(Int(SYS_close), remote)
        guard local >= 0 else { throw .system(getError, pid: pid, operation: "take the userfaultfd (pidfd_getfd) of") }
        let fd = FileDescriptor(rawValue: local)
        _ = chpox_fcntl_int(local, F_SETFD, FD_CLOEXEC)
        var api = uffdio_api(api: UInt64(UFFD_API), features: Self.features, ioctls: 0)
        guard chpox_ioctl(local, chpox_UFFDIO_API, &api) == 0 else {
            let error = Errno.current
            fd.close()
            throw .unsupported(pid: pid, reason: "uffd-wp: this kernel refuses UFFD_FEATURE_WP_ASYNC (\(error); Linux 6.7+ has it)")
        }
        uffd = fd
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
        var dirty: [PageRun] = []
        var wholesale = layout.new.runs
        var fresh: [MemoryRegion] = []
        for region in regions {
            // Shared mappings change through other processes and write(2): never vouched for.
            if region.shared {
                wholesale.append(PageRun(start: region.start, end: region.end))
                continue
            }
            let runs = try pagemap.scan(start: region.start, end: region.end, returned: [.wpAllowed])
            let allowed = AddressRuns(runs.filter { $0.categories.contains(.wpAllowed) })
            let whole = AddressRuns([PageRun(start: region.start, end: region.end)])
            let unprotected = whole.subtracting(allowed)
            if !unprotected.isEmpty {
                wholesale += unprotected.runs
                fresh.append(region)
            }
            for run in allowed.runs {
                dirty += try pagemap.scan(start: run.start, end: run.end, flags: [.writeProtectMatching, .checkWPAsync],
                                          required: .written, returned: .written)
            }
        }
        // Newly seen ranges: registered and protected now, so the next collect can vouch for them.
        for region in fresh { try protect(region, uffd) }
        let resident = try Residency(pagemap: pagemap).resident(regions)
        let vanished = history.vanished(resident: resident, continuing: layout.continuing)
        history.record(regions: regions, resident: resident)
        let wholesaleRuns = AddressRuns(wholesale)
        return DirtyReport(regions: regions, dirty: AddressRuns(dirty).union(wholesaleRuns).union(vanished),
                           unmapped: layout.unmapped, wholesale: wholesaleRuns)
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
