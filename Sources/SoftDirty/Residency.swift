#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall
import Tracee

/// Which pages of a process hold data: present or swapped, and not the shared zero page nor a
/// uffd-wp marker (an unpopulated page write-protected by a userfaultfd, which pagemap shows as
/// swapped). PAGEMAP_SCAN answers for a whole range at once where the kernel has it (6.7+);
/// elsewhere pagemap is read, 8 bytes a page, in large batches.
public struct Residency {
    let pagemap: Pagemap
    let useScan: Bool

    public init(pagemap: Pagemap) {
        self.pagemap = pagemap
        useScan = pagemap.hasScan()
    }

    func resident(_ regions: [MemoryRegion]) throws(TraceeError) -> AddressRuns {
        var runs: [PageRun] = []
        for region in regions {
            let found = try holdingData(PageRun(start: region.start, end: region.end))
            runs += found.anonymous.runs + found.file.runs
        }
        return AddressRuns(runs)
    }

    /// The pages of `run` that hold data, split into anonymous pages and file (or shmem) pages.
    public func holdingData(_ run: PageRun) throws(TraceeError) -> (anonymous: AddressRuns, file: AddressRuns) {
        var anonymous: [PageRun] = [], file: [PageRun] = [], swapped: [PageRun] = []
        func add(_ page: PageRun, isFile: Bool) { if isFile { file.append(page) } else { anonymous.append(page) } }
        if useScan {
            for found in try pagemap.scan(
                start: run.start, end: run.end, anyOf: [.present, .swapped],
                returned: [.present, .swapped, .pfnZero, .file]) where !found.categories.contains(.pfnZero)
            {
                if found.categories.contains(.present) {
                    add(found, isFile: found.categories.contains(.file))
                } else {
                    swapped.append(found)
                }
            }
            // Swapped: a real swap or migration entry, or a uffd-wp marker (no data); pagemap
            // tells them apart, read in large batches over the span of all of them.
            if let first = swapped.first, let last = swapped.last {
                let file = AddressRuns(swapped.filter { $0.categories.contains(.file) })
                let candidates = AddressRuns(swapped)
                try Self.forEachEntry(pagemap, PageRun(start: first.start, end: last.end)) { address, entry in
                    if Self.holdsData(entry) && candidates.contains(page: address) {
                        add(PageRun(pageAt: address), isFile: file.contains(page: address))
                    }
                }
            }
        } else {
            try Self.forEachEntry(pagemap, run) { address, entry in
                if Self.holdsData(entry) { add(PageRun(pageAt: address), isFile: entry & PagemapBit.fileOrShared != 0) }
            }
        }
        return (AddressRuns(anonymous), AddressRuns(file))
    }

    /// Whether a pagemap entry is a page that holds data: present or swapped, not the shared zero page.
    public static func holdsData(_ entry: UInt64) -> Bool {
        if entry & PagemapBit.swapped != 0 { return !isMarker(entry) }
        guard entry & PagemapBit.present != 0 else { return false }
        let frame = entry & PagemapBit.frameMask
        return frame == 0 || frame != ZeroPage.frame
    }

    /// A uffd-wp pte marker: swap type 31 (SWP_PTE_MARKER, the last of the 32 swap types
    /// whatever the configuration) with the PTE_MARKER_UFFD_WP bit as its offset. Where
    /// pagemap hides the frame field (not root), the type reads 0 and the page counts as
    /// data: copied, never lost.
    static func isMarker(_ entry: UInt64) -> Bool {
        entry & PagemapBit.swapped != 0 && entry & PagemapBit.frameMask == (1 << 5) | 31
    }

    /// Visits the pagemap entry of every page of `run`, 64 Ki pages per read.
    public static func forEachEntry(
        _ pagemap: Pagemap, _ run: PageRun, _ visit: (UInt64, UInt64) -> Void
    ) throws(TraceeError) {
        var address = run.start
        while address < run.end {
            let count = Int(min(Page.count(of: run.end - address), 65536))
            let entries = try pagemap.entries(from: address, count: count)
            for (k, entry) in entries.enumerated() { visit(address + Page.address(of: UInt64(k)), entry) }
            if entries.count < count { break }
            address += Page.address(of: UInt64(count))
        }
    }
}

/// The page frame of the kernel's shared zero page, as pagemap shows it to root (0 when the
/// frame numbers are hidden): a page mapped to it reads as zero and holds no data.
enum ZeroPage {
    static let frame: UInt64 = {
        guard let page = try? AnonymousMapping(size: Page.size, .read) else { return 0 }
        return withExtendedLifetime(page) {
            _ = chpox_touch_read(page.bytes.baseAddress)  // a read fault maps the zero page
            guard let pagemap = try? Pagemap(pid: CurrentProcess.id),
                let entry = try? pagemap.entries(from: page.address, count: 1).first,
                entry & PagemapBit.present != 0
            else { return 0 }
            return entry & PagemapBit.frameMask
        }
    }()
}
