#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall

/// Categories of a page, as PAGEMAP_SCAN reports them (Linux 6.7+).
public struct PageCategory: OptionSet, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// The corresponding C constant is PAGE_IS_WPALLOWED: the range is registered for uffd-wp.
    public static let wpAllowed = PageCategory(rawValue: 1 << 0)
    /// The corresponding C constant is PAGE_IS_WRITTEN: written since it was write-protected.
    public static let written = PageCategory(rawValue: 1 << 1)
    /// The corresponding C constant is PAGE_IS_FILE.
    public static let file = PageCategory(rawValue: 1 << 2)
    /// The corresponding C constant is PAGE_IS_PRESENT.
    public static let present = PageCategory(rawValue: 1 << 3)
    /// The corresponding C constant is PAGE_IS_SWAPPED.
    public static let swapped = PageCategory(rawValue: 1 << 4)
    /// The corresponding C constant is PAGE_IS_PFNZERO: mapped to the shared zero page.
    public static let pfnZero = PageCategory(rawValue: 1 << 5)
    /// The corresponding C constant is PAGE_IS_HUGE.
    public static let huge = PageCategory(rawValue: 1 << 6)
    /// The corresponding C constant is PAGE_IS_SOFT_DIRTY.
    public static let softDirty = PageCategory(rawValue: 1 << 7)
    /// The corresponding C constant is PAGE_IS_GUARD (Linux 6.15): a guard page
    /// (madvise MADV_GUARD_INSTALL), which faults on any access.
    public static let guardRegion = PageCategory(rawValue: 1 << 8)
}

/// A run of pages with the same categories: [start, end) in bytes.
public struct PageRun: Hashable, Sendable, CustomStringConvertible {
    public var start: UInt64
    public var end: UInt64
    public var categories: PageCategory

    public init(start: UInt64, end: UInt64, categories: PageCategory = []) {
        self.start = start
        self.end = end
        self.categories = categories
    }

    /// The one page at `address` (page-aligned).
    public init(pageAt address: UInt64, categories: PageCategory = []) {
        self.init(start: address, end: address + UInt64(Page.size), categories: categories)
    }

    public var pageCount: UInt64 { Page.count(of: end - start) }
    public var description: String { "\(String(start, radix: 16))-\(String(end, radix: 16))" }
}

/// /proc/<pid>/pagemap: the PAGEMAP_SCAN ioctl where the kernel has it, and the 8-bytes-per-
/// page read interface everywhere.
public final class Pagemap {
    public let pid: Int32
    private let fd: FileDescriptor

    /// Opens /proc/<pid>/pagemap. The file binds the process's address space when it is
    /// opened: a descriptor opened while the process was still inside execve (posix_spawn
    /// returns as soon as the child has released its parent's memory, before the new memory
    /// is installed) reads the old address space for ever. Trackers therefore open it anew,
    /// with `init(frozen:)`, for every collect.
    public init(pid: Int32) throws(TraceeError) {
        self.pid = pid
        do { fd = try FileDescriptor.open("/proc/\(pid)/pagemap", [.readOnly]) } catch {
            throw .from(error, pid: pid, "open /proc/\(pid)/pagemap of")
        }
    }

    /// Opens the pagemap of a frozen process: bound to the memory it has now.
    public convenience init(frozen process: FrozenProcess) throws(TraceeError) {
        try self.init(pid: process.pid)
    }

    deinit { fd.close() }

    /// How PAGEMAP_SCAN treats the pages it matches.
    public struct ScanFlags: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        /// The corresponding C constant is PM_SCAN_WP_MATCHING: write-protect what matched,
        /// atomically with reporting it.
        public static let writeProtectMatching = ScanFlags(rawValue: 1 << 0)
        /// The corresponding C constant is PM_SCAN_CHECK_WPASYNC: fail unless the range is
        /// registered for async uffd-wp.
        public static let checkWPAsync = ScanFlags(rawValue: 1 << 1)
    }

    /// Runs of pages one PAGEMAP_SCAN call can return (a buffer size, not a page); `scan` calls
    /// again from where the kernel stopped.
    static let regionsPerScan = 4096

    /// PAGEMAP_SCAN over [start, end): runs of pages that have every category in `required`
    /// (after flipping `inverted`) and any of `anyOf` (when not empty), with `returned`
    /// categories reported. Loops until the whole range is walked, or until `maxPages` pages
    /// (when not 0) are found: the kernel stops its walk there (the corresponding field is
    /// max_pages).
    public func scan(
        start: UInt64, end: UInt64, flags: ScanFlags = [], required: PageCategory = [], inverted: PageCategory = [],
        anyOf: PageCategory = [], returned: PageCategory, maxPages: UInt64 = 0
    ) throws(TraceeError) -> [PageRun] {
        var runs: [PageRun] = []
        var found: UInt64 = 0
        // A range of n pages holds at most n runs: a small mapping (a process can have tens of
        // thousands) gets a small buffer, not a full one to clear.
        let pages = Int(min((end &- start) / UInt64(Page.size), UInt64(Self.regionsPerScan)))
        var regions = [chpox_page_region](repeating: chpox_page_region(), count: max(1, pages))
        var cursor = start
        while cursor < end {
            var argument = chpox_pm_scan_arg()
            argument.size = UInt64(MemoryLayout<chpox_pm_scan_arg>.size)
            argument.flags = flags.rawValue
            argument.start = cursor
            argument.end = end
            argument.vec_len = UInt64(regions.count)
            argument.category_inverted = inverted.rawValue
            argument.category_mask = required.rawValue
            argument.category_anyof_mask = anyOf.rawValue
            argument.return_mask = returned.rawValue
            argument.max_pages = maxPages == 0 ? 0 : maxPages - found
            let count: Int32
            do {
                count = try regions.withUnsafeMutableBufferPointer { (buffer) throws(Errno) -> Int32 in
                    argument.vec = UInt64(UInt(bitPattern: buffer.baseAddress))
                    return try fd.control(chpox_PAGEMAP_SCAN, &argument)
                }
            } catch {
                throw .from(error, pid: pid, "PAGEMAP_SCAN")
            }
            for region in regions[0..<Int(count)] {
                runs.append(
                    PageRun(start: region.start, end: region.end, categories: PageCategory(rawValue: region.categories))
                )
                found += (region.end - region.start) / UInt64(Page.size)
            }
            guard argument.walk_end > cursor, maxPages == 0 || found < maxPages else { break }
            cursor = argument.walk_end
        }
        return runs
    }

    /// Whether this kernel has PAGEMAP_SCAN (Linux 6.7+).
    public func hasScan() -> Bool {
        (try? scan(start: 0, end: UInt64(Page.size), returned: .present)) != nil
    }

    /// Raw 64-bit pagemap entries for `count` pages from `address` (bit 63 present, 62
    /// swapped, 61 file or shared, 55 soft-dirty, 0-54 the page frame number for root).
    public func entries(from address: UInt64, count: Int) throws(TraceeError) -> [UInt64] {
        var entries = [UInt64](repeating: 0, count: count)
        let got: Int
        do {
            got = try entries.withUnsafeMutableBufferPointer { (buffer) throws(Errno) -> Int in
                try fd.readFully(into: UnsafeMutableRawBufferPointer(buffer), at: Int64(Page.number(of: address) * 8))
            }
        } catch {
            throw .from(error, pid: pid, "read /proc/\(pid)/pagemap of")
        }
        entries.removeLast(count - got / 8)
        return entries
    }
}

/// Bits of a pagemap entry.
public enum PagemapBit {
    public static let present: UInt64 = 1 << 63
    public static let swapped: UInt64 = 1 << 62
    public static let fileOrShared: UInt64 = 1 << 61
    public static let exclusive: UInt64 = 1 << 56
    public static let softDirty: UInt64 = 1 << 55
    public static let frameMask: UInt64 = (1 << 55) - 1
}
