import Syscall
import Tracee

/// Guard pages (madvise MADV_GUARD_INSTALL): page table entries that fault on any access, kept
/// by the kernel without a page behind them. Recorded as runs; a restart installs them again
/// (MemoryLayoutPhase).
enum GuardRegionCapture {
    /// The guard pages of `pid`'s ordinary mappings as [start, end) runs, clipped to each
    /// mapping, found by one PAGEMAP_SCAN (PAGE_IS_GUARD) over the whole address space, during
    /// the stop. A kernel without that category has no guard pages to find (MADV_GUARD_INSTALL
    /// came with 6.13, the category with 6.15): its scan is refused and none are reported.
    static func runs(_ pid: Int32, regions: [MemoryRegion]) -> [[UInt64]] {
        let ordinary = regions.filter { !$0.isSpecial }
        guard let low = ordinary.map(\.start).min(), let high = ordinary.map(\.end).max(),
            let pagemap = try? Pagemap(pid: pid),
            let runs = try? pagemap.scan(start: low, end: high, required: .guardRegion, returned: .guardRegion),
            !runs.isEmpty
        else { return [] }
        return ordinary.flatMap { region in
            runs.filter { $0.start < region.end && $0.end > region.start }.map {
                [max($0.start, region.start), min($0.end, region.end)]
            }
        }
    }
}
