import SoftDirty
import Tracee

/// What to do with each page a tracker reported, mapping by mapping: copy its bytes into the
/// store, record it as zero, or drop it from the page map so it comes from its backing again.
/// Clean pages of file mappings are never copied: the image names the file.
struct PageSelection {
    /// Pages whose bytes are stored: anonymous and shared-anonymous memory holding data, and
    /// the copy-on-written pages of private file mappings.
    var copy = AddressRuns()
    /// Pages of anonymous memory that hold nothing now (never touched, or dropped).
    var zero = AddressRuns()
    /// Pages whose bytes come from their file (clean private file pages, shared file mappings).
    var revert = AddressRuns()

    init(candidates: AddressRuns, regions: [MemoryRegion], pagemap: Pagemap) throws(TraceeError) {
        let useScan = pagemap.hasScan()
        var copy: [PageRun] = [], zero: [PageRun] = [], revert: [PageRun] = []
        for region in regions {
            let wanted = candidates.intersection(AddressRuns([PageRun(start: region.start, end: region.end)]))
            guard !wanted.isEmpty else { continue }
            let backing = ImageCapture.backing(of: region)
            if backing == .sharedFile {
                revert += wanted.runs
                continue
            }
            // A private mapping of a file that is gone keeps every page: nothing else has them.
            let fileBacked = backing == .privateFile && !region.path.hasSuffix(" (deleted)")
            for run in wanted.runs {
                let (anonymous, file) = try Self.resident(run, pagemap: pagemap, useScan: useScan)
                copy += anonymous.runs
                if fileBacked {
                    revert += AddressRuns([run]).subtracting(anonymous).runs
                } else {
                    copy += file.runs
                    zero += AddressRuns([run]).subtracting(anonymous).subtracting(file).runs
                }
            }
        }
        self.copy = AddressRuns(copy)
        self.zero = AddressRuns(zero)
        self.revert = AddressRuns(revert)
    }

    /// Pages of `run` holding data (present or swapped, not the shared zero page), split into
    /// anonymous pages and file (or shmem) pages.
    static func resident(_ run: PageRun, pagemap: Pagemap, useScan: Bool) throws(TraceeError) -> (anonymous: AddressRuns, file: AddressRuns) {
        var anonymous: [PageRun] = [], file: [PageRun] = []
        if useScan {
            for found in try pagemap.scan(start: run.start, end: run.end, anyOf: [.present, .swapped],
                                          returned: [.present, .swapped, .pfnZero, .file]) where !found.categories.contains(.pfnZero) {
                if found.categories.contains(.file) { file.append(found) } else { anonymous.append(found) }
            }
        } else {
            try Residency.forEachEntry(pagemap, run) { address, entry in
                guard Residency.holdsData(entry) else { return }
                let page = PageRun(start: address, end: address + 4096)
                if entry & PagemapBit.fileOrShared != 0 { file.append(page) } else { anonymous.append(page) }
            }
        }
        return (AddressRuns(anonymous), AddressRuns(file))
    }
}
