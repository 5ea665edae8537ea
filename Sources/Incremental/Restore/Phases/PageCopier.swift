#if canImport(Glibc)
import Glibc
#endif
import Store
import Syscall
import Tracee

/// The eager page fill of a process's anonymous private memory through a userfaultfd of the
/// process (UFFDIO_COPY), where the kernel allows one: a copy puts a new page in place with the
/// bytes given, where `process_vm_writev` faults in a zeroed page first and then copies over it,
/// which takes twice as long (700 MB here: 320 against 700 ms a thread). Nothing runs in the
/// process meanwhile (it is stopped), so no fault ever waits on this userfaultfd: it is
/// registered for missing pages, used for the copies, unregistered and closed within the phase,
/// and what the process then runs on is exactly what `PageWriter` would have written (a page
/// nothing is stored for stays absent: zero when touched). A page the kernel finds present
/// already (EEXIST: memory the layout populated), or that the kernel will not copy, is handed
/// back for `PageWriter`.
struct PageCopier {
    private let userfaultfd: Userfaultfd
    private let ranges: [Range<UInt64>]
    private var batch: [(page: UInt64, bytes: UnsafeRawBufferPointer)] = []
    /// Pages copied so far.
    private(set) var copied = 0

    /// A copier for `ranges` (page numbers: anonymous private mappings) of `session`'s process,
    /// or nil where the kernel gives no userfaultfd for it (the fill writes them as before).
    /// UFFD_USER_MODE_ONLY: no fault is to be served, and an unprivileged restart may have one.
    static func open(_ session: RestartSession, ranges: [Range<UInt64>]) -> PageCopier? {
        let merged = RestartSession.merged(ranges)
        guard !merged.isEmpty,
            let (userfaultfd, process) = try? session.takeUserfaultfd(
                Int(O_CLOEXEC | Userfaultfd.Options.userModeOnly.rawValue), refused: { "\($0)" })
        else { return nil }
        process.close()
        var registered: [Range<UInt64>] = []
        do throws(Errno) {
            try userfaultfd.enable([])
            for range in merged {
                try userfaultfd.registerForMissingPages(
                    start: Page.address(of: range.lowerBound), length: UInt64(range.count) * UInt64(Page.size))
                registered.append(range)
            }
        } catch {
            Self.unregister(registered, userfaultfd)
            userfaultfd.close()
            return nil
        }
        return PageCopier(userfaultfd: userfaultfd, ranges: registered)
    }

    private init(userfaultfd: Userfaultfd, ranges: [Range<UInt64>]) {
        self.userfaultfd = userfaultfd
        self.ranges = ranges
        batch.reserveCapacity(PageWriter.maxBatch)
    }

    /// Adds `bytes` (one page, valid until `flush`) for page `page`.
    mutating func add(_ page: UInt64, _ bytes: UnsafeRawBufferPointer) {
        batch.append((page, bytes))
    }

    /// Copies the batch, in parts at once on every core; returns the pages it could not copy
    /// (found present already, or refused), for `PageWriter` (their bytes valid until the
    /// caller's window ends).
    mutating func flush() -> [(page: UInt64, bytes: UnsafeRawBufferPointer)] {
        guard !batch.isEmpty else { return [] }
        let parts = PageWriter.parts(of: batch.count)
        var outcomes = [(copied: Int, present: [Int])](repeating: (0, []), count: parts.count)
        let userfaultfd = self.userfaultfd
        batch.withUnsafeBufferPointer { batch in
            outcomes.withUnsafeMutableBufferPointer { outcomes in
                Parallel.forEach(parts.count) { k in
                    outcomes[k] = Self.copy(
                        UnsafeBufferPointer(rebasing: batch[parts[k]]), offset: parts[k].lowerBound, userfaultfd)
                }
            }
        }
        var present: [(page: UInt64, bytes: UnsafeRawBufferPointer)] = []
        for (done, left) in outcomes {
            copied += done
            present += left.map { batch[$0] }
        }
        batch.removeAll(keepingCapacity: true)
        return present
    }

    /// Copies `pages` (from `offset` in the batch) in runs: consecutive pages whose bytes are
    /// consecutive too (a decoded frame's) go in one UFFDIO_COPY. Returns the pages copied and
    /// the batch indices of those it could not copy.
    private static func copy(
        _ pages: UnsafeBufferPointer<(page: UInt64, bytes: UnsafeRawBufferPointer)>, offset: Int,
        _ userfaultfd: Userfaultfd
    ) -> (copied: Int, present: [Int]) {
        var copied = 0
        var present: [Int] = []
        var first = 0
        while first < pages.count {
            var end = first + 1
            while end < pages.count, pages[end].page == pages[end - 1].page + 1,
                let previous = pages[end - 1].bytes.baseAddress, pages[end].bytes.baseAddress == previous + Page.size
            {
                end += 1
            }
            var at = first
            var retries = 0
            var single = false  // page by page, after a run met the end of its mapping
            while at < end {
                let count = single ? 1 : end - at
                let bytes = UnsafeRawBufferPointer(start: pages[at].bytes.baseAddress, count: count * Page.size)
                let (done, error) = userfaultfd.copy(bytes, to: Page.address(of: pages[at].page))
                copied += done / Page.size
                at += done / Page.size
                guard let error else { continue }
                if error.rawValue == EEXIST {
                    present.append(offset + at)
                    at += 1
                } else if error.rawValue == ENOENT && count > 1 {
                    // A run over two mappings (another protection from some page on) is refused
                    // whole: ENOENT names no page. Page by page from here.
                    single = true
                } else if (error.rawValue == EINTR || error.rawValue == EAGAIN) && retries < 100 {
                    retries += 1
                } else {
                    // Anything else (a mapping the kernel will not fill so): the writer's way.
                    present += (offset + at)..<(offset + (single ? at + 1 : end))
                    at = single ? at + 1 : end
                }
            }
            first = end
        }
        return (copied, present)
    }

    /// Unregisters every range and closes the userfaultfd: the process's memory is as if
    /// written by hand.
    func close() {
        Self.unregister(ranges, userfaultfd)
        userfaultfd.close()
    }

    private static func unregister(_ ranges: [Range<UInt64>], _ userfaultfd: Userfaultfd) {
        for range in ranges {
            try? userfaultfd.unregister(
                start: Page.address(of: range.lowerBound), length: UInt64(range.count) * UInt64(Page.size))
        }
    }
}
