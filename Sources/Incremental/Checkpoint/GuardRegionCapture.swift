import Syscall
import Tracee

/// Guard pages (madvise MADV_GUARD_INSTALL): not restored yet, so a process that has them is
/// refused; after a restart those pages would be ordinary memory that reads and writes.
enum GuardRegionCapture {
    /// A line for each mapping with guard pages, found by one PAGEMAP_SCAN (PAGE_IS_GUARD) over
    /// the whole address space, during the stop. A kernel without that category has no guard
    /// pages to find (MADV_GUARD_INSTALL came with 6.13, the category with 6.15): its scan is
    /// refused and nothing is reported.
    static func unsupported(_ pid: Int32, regions: [MemoryRegion]) -> [String] {
        let ordinary = regions.filter { !$0.isSpecial }
        guard let low = ordinary.map(\.start).min(), let high = ordinary.map(\.end).max(),
            let pagemap = try? Pagemap(pid: pid),
            let runs = try? pagemap.scan(start: low, end: high, required: .guardRegion, returned: .guardRegion),
            !runs.isEmpty
        else { return [] }
        return ordinary.compactMap { region in
            let inside = runs.filter { $0.start < region.end && $0.end > region.start }
            guard let first = inside.first else { return nil }
            let pages = inside.reduce(UInt64(0)) {
                $0 + (min($1.end, region.end) - max($1.start, region.start)) / UInt64(Page.size)
            }
            return "\(pages) guard page\(pages == 1 ? "" : "s") (MADV_GUARD_INSTALL) from "
                + "0x\(String(max(first.start, region.start), radix: 16)) in the mapping at "
                + "0x\(String(region.start, radix: 16)): guard pages are not restored"
        }
    }
}
