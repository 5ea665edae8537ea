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

    /// `written`: pages among the candidates known to hold anonymous data (the tracker's word).
    init(
        pid: Int32, candidates: AddressRuns, written: AddressRuns = AddressRuns(), regions: [MemoryRegion],
        pagemap: Pagemap
    ) throws(TraceeError) {
        let residency = Residency(pagemap: pagemap)
        var copy: [PageRun] = [], zero: [PageRun] = [], revert: [PageRun] = []
        for region in regions {
            let inRegion = AddressRuns([PageRun(start: region.start, end: region.end)])
            let wanted = candidates.intersection(inRegion)
            guard !wanted.isEmpty else { continue }
            let backing = ImageCapture.backing(of: region)
            if backing == .sharedFile {
                revert += wanted.runs
                continue
            }
            // A private mapping of a file that is gone keeps every page unless the image saves
            // the file (`MappedFileCapture`): nothing else has them.
            let fileBacked =
                backing == .privateFile
                && (!MappedFileCapture.isDeletedPrivateFile(region)
                    || MappedFileCapture.recreatableStatus(pid, region) != nil)
            // What the kernel reported written holds anonymous data: no lookup. The rest (new
            // or suspect mappings, vanished pages) is looked up in one walk over its span.
            let known = written.intersection(wanted)
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
                zero += wanted.subtracting(anonymous).subtracting(file).runs
            }
        }
        self.copy = AddressRuns(copy)
        self.zero = AddressRuns(zero)
        self.revert = AddressRuns(revert)
    }
}
