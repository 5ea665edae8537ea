#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// The kernel's soft-dirty bits: `4` written to /proc/<pid>/clear_refs clears them, a write
/// sets the page's bit again, and pagemap bit 55 (or PAGEMAP_SCAN's PAGE_IS_SOFT_DIRTY) reads
/// it. Kernel state: tracking needs no descriptor and survives the tracker exiting.
/// Only trust it after `TrackerProbe` proved it: a kernel without CONFIG_MEM_SOFT_DIRTY accepts
/// clear_refs 4 and never sets the bit.
public final class SoftDirtyTracker: DirtyTracker {
    public let kind = TrackerKind.softDirty
    public let pid: Int32
    /// Read the bits with PAGEMAP_SCAN rather than pagemap entries.
    public let usesScan: Bool
    private var history = TrackingHistory()

    public init(pid: Int32, preferScan: Bool = true) throws(TraceeError) {
        self.pid = pid
        let scan = try Pagemap(pid: pid).hasScan()
        usesScan = preferScan && scan
    }

    public func stop() {}

    public func collect(_ process: FrozenProcess) throws(TraceeError) -> DirtyReport {
        let regions = try TrackingHistory.regions(of: pid)
        let layout = history.layout(regions)
        let pagemap = try Pagemap(frozen: process)
        var dirty: [PageRun] = []
        for region in regions {
            if usesScan {
                dirty += try pagemap.scan(
                    start: region.start, end: region.end, required: .softDirty, returned: .softDirty)
            } else {
                try Residency.forEachEntry(pagemap, PageRun(start: region.start, end: region.end)) { address, entry in
                    if entry & PagemapBit.softDirty != 0 { dirty.append(PageRun(pageAt: address)) }
                }
            }
        }
        let resident = try Residency(pagemap: pagemap).resident(regions)
        let vanished = history.vanished(resident: resident, continuing: layout.continuing)
        try Self.clear(pid)
        history.record(regions: regions, resident: resident)
        return DirtyReport(
            regions: regions, dirty: AddressRuns(dirty).union(layout.new).union(vanished),
            unmapped: layout.unmapped, wholesale: layout.new)
    }

    /// Pages whose soft-dirty bit is set (those of new mappings too: a page faulted in is
    /// soft-dirty), by PAGEMAP_SCAN; nil without it (a pagemap read of every page costs about
    /// what the collect would).
    public func pendingPages(upTo limit: UInt64) throws(TraceeError) -> UInt64? {
        guard usesScan else { return nil }
        guard !history.isFirst else { return limit }
        let pagemap = try Pagemap(pid: pid)
        var pages: UInt64 = 0
        for region in try TrackingHistory.regions(of: pid) where !region.shared && pages < limit {
            for run in try pagemap.scan(
                start: region.start, end: region.end, required: .softDirty, returned: .softDirty,
                maxPages: limit - pages)
            {
                pages += run.pageCount
            }
        }
        return min(pages, limit)
    }

    /// Clears the soft-dirty bits of every page of `pid`.
    static func clear(_ pid: Int32) throws(TraceeError) {
        do {
            let fd = try FileDescriptor.open("/proc/\(pid)/clear_refs", [.writeOnly])
            defer { fd.close() }
            try [UInt8(ascii: "4")].withRawBytes { (raw) throws(Errno) in try fd.writeAll(raw) }
        } catch {
            throw .from(error, pid: pid, "clear soft-dirty bits (/proc/\(pid)/clear_refs) of")
        }
    }
}
