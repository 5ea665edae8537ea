#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Tracee

/// Which pages of a process hold data: present or swapped, and not the shared zero page.
/// PAGEMAP_SCAN answers for a whole range at once where the kernel has it (6.7+); elsewhere
/// pagemap is read, 8 bytes a page, in large batches.
public struct Residency {
    let pagemap: Pagemap
    let useScan: Bool

    init(pagemap: Pagemap) {
        self.pagemap = pagemap
        useScan = pagemap.hasScan()
    }

    func resident(_ regions: [MemoryRegion]) throws(TraceeError) -> AddressRuns {
        var runs: [PageRun] = []
        for region in regions {
            if useScan {
                for run in try pagemap.scan(start: region.start, end: region.end, anyOf: [.present, .swapped],
                                            returned: [.present, .swapped, .pfnZero]) where !run.categories.contains(.pfnZero) {
                    runs.append(run)
                }
            } else {
                try Self.forEachEntry(pagemap, PageRun(start: region.start, end: region.end)) { address, entry in
                    if Self.holdsData(entry) { runs.append(PageRun(start: address, end: address + 4096)) }
                }
            }
        }
        return AddressRuns(runs)
    }

    /// Whether a pagemap entry is a page that holds data: present or swapped, not the shared zero page.
    public static func holdsData(_ entry: UInt64) -> Bool {
        if entry & PagemapBit.swapped != 0 { return true }
        guard entry & PagemapBit.present != 0 else { return false }
        let frame = entry & PagemapBit.frameMask
        return frame == 0 || frame != ZeroPage.frame
    }

    /// Visits the pagemap entry of every page of `run`, 64 Ki pages per read.
    public static func forEachEntry(_ pagemap: Pagemap, _ run: PageRun, _ visit: (UInt64, UInt64) -> Void) throws(TraceeError) {
        var address = run.start
        while address < run.end {
            let count = Int(min((run.end - address) / 4096, 65536))
            let entries = try pagemap.entries(from: address, count: count)
            for (k, entry) in entries.enumerated() { visit(address + UInt64(k) * 4096, entry) }
            if entries.count < count { break }
            address += UInt64(count) * 4096
        }
    }
}

/// The page frame of the kernel's shared zero page, as pagemap shows it to root (0 when the
/// frame numbers are hidden): a page mapped to it reads as zero and holds no data.
enum ZeroPage {
    static let frame: UInt64 = {
        let page = mmap(nil, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let page, page != MAP_FAILED else { return 0 }
        defer { munmap(page, 4096) }
        _ = chpox_touch_read(page)  // a read fault maps the zero page
        guard let pagemap = try? Pagemap(pid: getpid()),
              let entry = try? pagemap.entries(from: UInt64(UInt(bitPattern: page)), count: 1).first,
              entry & PagemapBit.present != 0
        else { return 0 }
        return entry & PagemapBit.frameMask
    }()
}
