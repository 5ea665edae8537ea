import SoftDirty
import Syscall
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

    /// `written`: pages among the candidates known to hold anonymous data (the tracker's word).
    /// `zeros` false leaves `zero` empty, for a base's first round, where an absent anonymous
    /// page is zero already: its runs were as many as the copied ones (a million and more for a
    /// large process whose resident pages alternate with untouched ones), held for nothing.
    init(
        pid: Int32, candidates: AddressRuns, written: AddressRuns = AddressRuns(), regions: [MemoryRegion],
        pagemap: Pagemap, zeros: Bool = true
    ) throws(TraceeError) {
        let residency = Residency(pagemap: pagemap)
        var copy: [PageRun] = [], zero: [PageRun] = [], revert: [PageRun] = []
        var described: Set<MemoryFileCapture.Identity>?
        for region in regions {
            let wanted = candidates.clipped(to: PageRun(start: region.start, end: region.end))
            guard !wanted.isEmpty else { continue }
            let backing = ImageCapture.backing(of: region)
            // A memfd, or shared memory a descriptor names, is saved whole (`MemoryFileCapture`):
            // its mappings are like a file's.
            let memoryFile =
                (backing == .sharedAnonymous || backing == .privateFile)
                && MemoryFileCapture.mapsMemoryFile(pid, region) {
                    if let described { return described }
                    described = MemoryFileCapture.described(pid)
                    return described ?? []
                }
            // An AIO ring is the image's `aioContexts`, read whole at each checkpoint.
            if backing == .sharedFile || backing == .aioRing || (backing == .sharedAnonymous && memoryFile) {
                revert += wanted.runs
                continue
            }
            // Shared memory's pages may hold data that this process's page tables do not map
            // (written by another process, or by write(2) before it was mapped): its object says
            // which pages hold data (SEEK_DATA), not the pagemap.
            if backing == .sharedAnonymous, let data = Self.sharedMemoryData(pid, region) {
                copy += wanted.intersection(data).runs
                if zeros { zero += wanted.subtracting(data).runs }
                continue
            }
            // A private mapping of a file that is gone keeps every page unless the image saves
            // the file (`MappedFileCapture`): nothing else has them.
            let fileBacked =
                backing == .privateFile
                && (memoryFile || !MappedFileCapture.isDeletedPrivateFile(region)
                    || MappedFileCapture.recreatableStatus(pid, region) != nil)
            // What the kernel reported written holds anonymous data: no lookup. The rest (new
            // or suspect mappings, vanished pages) is looked up in one walk over its span.
            let known = written.clipped(to: PageRun(start: region.start, end: region.end)).intersection(wanted)
            let unknown = wanted.subtracting(known)
            var anonymous = known, file = AddressRuns()
            if let first = unknown.runs.first, let last = unknown.runs.last {
                let found = try residency.holdingData(PageRun(start: first.start, end: last.end))
                anonymous = anonymous.union(found.anonymous.intersection(unknown))
                file = found.file.intersection(unknown)
            }
            copy += anonymous.runs
            if fileBacked {
                revert += wanted.subtracting(anonymous).runs
            } else {
                copy += file.runs
                if zeros { zero += wanted.subtracting(anonymous).subtracting(file).runs }
            }
        }
        self.copy = AddressRuns(copy)
        self.zero = AddressRuns(zero)
        self.revert = AddressRuns(revert)
    }

    /// The pages of a shared memory mapping whose object holds data (resident or swapped; the
    /// rest are holes, zero), by SEEK_DATA on the object itself (/proc/PID/map_files); nil when
    /// it cannot be opened.
    static func sharedMemoryData(_ pid: Int32, _ region: MemoryRegion) -> AddressRuns? {
        guard let object = try? FileDescriptor.open(MappedFileCapture.mappedFile(pid, region), [.readOnly]) else {
            return nil
        }
        defer { object.close() }
        let start = Int64(region.offset), end = Int64(region.offset) + Int64(region.size)
        guard let ranges = try? object.dataRanges(size: end) else { return nil }
        var runs: [PageRun] = []
        for range in ranges {
            let from = max(range.lowerBound, start), to = min(range.upperBound, end)
            guard from < to else { continue }
            let first = Int64(Page.address(of: Page.number(of: UInt64(from))))
            let last = (to + Int64(Page.size) - 1) / Int64(Page.size) * Int64(Page.size)
            runs.append(
                PageRun(start: region.start + UInt64(first - start), end: region.start + UInt64(min(last, end) - start))
            )
        }
        return AddressRuns(runs)
    }
}
