/// A generation's page numbers hold the memory of several processes (a process tree): the
/// page-number space is cut into address spaces of 2^36 pages each (2^48 bytes, more than
/// x86-64's 47-bit user half), and process k of the tree keeps its pages in space k. Space 0 is
/// the first process's, so a one-process generation's page numbers are its page addresses.
/// The store itself never looks at spaces: pages are pages, deduplicated by content across
/// every space (the pages a fork shares copy-on-write are stored once).
public enum AddressSpaces {
    /// Pages in one address space.
    public static let pagesPerSpace: UInt64 = 1 << 36

    /// Every page number of space `space`.
    public static func range(of space: UInt64) -> PageRange {
        PageRange(first: space * pagesPerSpace, count: pagesPerSpace)
    }
}

extension PageMap {
    /// The pages of address space `space`, numbered within it (as page addresses of that
    /// process).
    public func space(_ space: UInt64) -> PageMap {
        let range = AddressSpaces.range(of: space)
        return PageMap(pages: entries(in: range).map { PageEntry(page: $0.page - range.first, chunk: $0.chunk) })
    }
}
