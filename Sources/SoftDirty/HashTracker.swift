import CXXHash
import Syscall
import Tracee

/// Needs nothing from the kernel: hashes (XXH3-128) every page that holds data and compares
/// with the hashes of the previous collect. Pages that hold no data hash as zero pages.
/// The fallback when no kernel tracker is available, and what tests hold the others against.
public final class HashTracker: DirtyTracker {
    public let kind = TrackerKind.hash
    public let pid: Int32
    private var history = TrackingHistory()
    /// Page address -> hash of its contents at the previous collect (absent: a zero page).
    private var hashes: [UInt64: PageHash] = [:]

    struct PageHash: Hashable {
        var high: UInt64
        var low: UInt64
    }

    static let zeroHash: PageHash = {
        let zeros = [UInt8](repeating: 0, count: Page.size)
        return zeros.withUnsafeBytes { raw in
            let hash = XXH3_128bits(raw.baseAddress, raw.count)
            return PageHash(high: hash.high64, low: hash.low64)
        }
    }()

    public init(pid: Int32) throws(TraceeError) {
        self.pid = pid
    }

    public func stop() { hashes = [:] }

    public func collect(_ process: FrozenProcess) throws(TraceeError) -> DirtyReport {
        let regions = try TrackingHistory.regions(of: pid)
        let layout = history.layout(regions)
        let resident = try Residency(pagemap: try Pagemap(frozen: process)).resident(regions)
        var current: [UInt64: PageHash] = [:]
        current.reserveCapacity(Int(resident.pageCount))
        var dirty: [PageRun] = []
        let memory = ProcessMemory(pid: pid)
        let batch = UnsafeMutableRawBufferPointer.allocate(pages: Page.count(of: 4 << 20))
        defer { batch.deallocate() }
        for run in resident.runs {
            var address = run.start
            while address < run.end {
                let length = Int(min(run.end - address, UInt64(batch.count)))
                let chunk = UnsafeMutableRawBufferPointer(rebasing: batch[0..<length])
                let got = try memory.read(from: address, into: chunk)
                for offset in stride(from: 0, to: length, by: Page.size) {
                    let page = address + UInt64(offset)
                    let hash: PageHash
                    if offset + Page.size <= got {
                        let digest = XXH3_128bits(chunk.baseAddress! + offset, Page.size)
                        hash = PageHash(high: digest.high64, low: digest.low64)
                    } else {
                        hash = PageHash(high: ~0, low: UInt64(page))  // unreadable: never equal
                    }
                    if hash != Self.zeroHash { current[page] = hash }
                    if (hashes[page] ?? Self.zeroHash) != hash { dirty.append(PageRun(pageAt: page)) }
                }
                address += UInt64(length)
            }
        }
        // Pages that held data before and read as zero now.
        for (page, _) in hashes where current[page] == nil && layout.continuing.contains(page: page) {
            dirty.append(PageRun(pageAt: page))
        }
        hashes = current
        history.record(regions: regions, resident: resident)
        return DirtyReport(
            regions: regions, dirty: AddressRuns(dirty).union(layout.new), unmapped: layout.unmapped,
            wholesale: layout.new)
    }
}
