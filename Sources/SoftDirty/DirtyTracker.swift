import Tracee

/// What a tracker says about a frozen process.
public struct DirtyReport: Sendable {
    /// The regions tracked now: every mapping but the kernel's own ([vdso], [vvar], ...).
    public var regions: [MemoryRegion]
    /// Pages that may differ from the previous collect (all of them on the first collect).
    /// Never misses a page: what a tracker cannot vouch for is reported here whole.
    public var dirty: AddressRuns
    /// Ranges mapped at the previous collect and not now.
    public var unmapped: AddressRuns
    /// Of `dirty`, pages reported because they are new or the tracker could not vouch for
    /// them (new or changed mappings, unregistered ranges, shared mappings).
    public var wholesale: AddressRuns
    /// Of `dirty`, pages the kernel itself reported written since the previous collect and
    /// that hold data now (present or swapped, anonymous): a checkpointer need not look them
    /// up again. Empty where the tracker cannot say (hash, soft-dirty).
    public var written = AddressRuns()

    public init(
        regions: [MemoryRegion], dirty: AddressRuns, unmapped: AddressRuns, wholesale: AddressRuns,
        written: AddressRuns = AddressRuns()
    ) {
        self.regions = regions
        self.dirty = dirty
        self.unmapped = unmapped
        self.wholesale = wholesale
        self.written = written
    }
}

/// One protocol, three implementations (soft-dirty, uffd-wp, hash), chosen by `TrackerSelection`.
public protocol DirtyTracker: AnyObject {
    var kind: TrackerKind { get }
    /// Reports the pages written since the previous collect and resets tracking, atomically:
    /// call it with every thread of the process stopped.
    func collect(_ process: FrozenProcess) throws(TraceeError) -> DirtyReport
    /// About how many pages the next collect would report, counted up to `limit` (at most
    /// `limit` is returned), read while the process runs: nothing is reset, nothing stopped.
    /// An estimate, for deciding whether a generation is worth copying while the process runs:
    /// pages written since the previous collect and those of mappings new since (a first
    /// collect reports everything: `limit`), not those of shared mappings, which the collect
    /// reports whole and which hold others' pages. Nil where only a collect can tell (hash).
    func pendingPages(upTo limit: UInt64) throws(TraceeError) -> UInt64?
    /// Ends tracking; the process keeps no trace of it. Also done on deinit.
    func stop()
}

extension DirtyTracker {
    public func pendingPages(upTo limit: UInt64) throws(TraceeError) -> UInt64? { nil }
}

/// The bookkeeping every tracker shares: which mappings continue from the previous collect
/// (same backing and protection, at the same addresses) and which pages held data then.
struct TrackingHistory {
    private var previousRegions: [MemoryRegion] = []
    private var previousResident = AddressRuns()
    private(set) var isFirst = true

    /// The current regions worth tracking.
    static func regions(of pid: Int32) throws(TraceeError) -> [MemoryRegion] {
        try MemoryRegion.of(pid).filter { !$0.isSpecial }
    }

    /// Splits the current regions into what continues (same identity, overlapping addresses)
    /// and what is new; also returns what was unmapped.
    func layout(_ regions: [MemoryRegion]) -> (continuing: AddressRuns, new: AddressRuns, unmapped: AddressRuns) {
        let current = AddressRuns(regions.map { PageRun(start: $0.start, end: $0.end) })
        guard !isFirst else { return (AddressRuns(), current, AddressRuns()) }
        var continuing: [PageRun] = []
        var i = 0
        let previous = previousRegions
        for region in regions {
            while i < previous.count && previous[i].end <= region.start { i += 1 }
            var k = i
            while k < previous.count && previous[k].start < region.end {
                let old = previous[k]
                if Self.sameBacking(old, region) {
                    let start = max(old.start, region.start), end = min(old.end, region.end)
                    if start < end { continuing.append(PageRun(start: start, end: end)) }
                }
                k += 1
            }
        }
        let continuingRuns = AddressRuns(continuing)
        let before = AddressRuns(previous.map { PageRun(start: $0.start, end: $0.end) })
        return (continuingRuns, current.subtracting(continuingRuns), before.subtracting(current))
    }

    /// The same mapping: protection, sharing and backing, with file offsets that line up.
    static func sameBacking(_ a: MemoryRegion, _ b: MemoryRegion) -> Bool {
        a.readable == b.readable && a.writable == b.writable && a.executable == b.executable && a.shared == b.shared
            && a.inode == b.inode && a.device == b.device && a.path == b.path
            && (a.isAnonymous || Int64(bitPattern: a.offset &- a.start) == Int64(bitPattern: b.offset &- b.start))
    }

    /// Pages that held data (present or swapped, not the shared zero page) at the previous
    /// collect and hold none now read as zero: changed, whatever the kernel's dirty bits say
    /// (MADV_DONTNEED drops a page with its soft-dirty and uffd-wp state).
    func vanished(resident: AddressRuns, continuing: AddressRuns) -> AddressRuns {
        previousResident.intersection(continuing).subtracting(resident)
    }

    mutating func record(regions: [MemoryRegion], resident: AddressRuns) {
        previousRegions = regions
        previousResident = resident
        isFirst = false
    }
}
