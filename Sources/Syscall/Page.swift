/// The memory page: the unit in which the kernel maps, reports (pagemap, soft-dirty,
/// userfaultfd) and protects memory, and in which chpox tracks, stores and restores it. One
/// size everywhere: chpox supports only kernels with 4 KiB base pages (x86-64), and its stores
/// hold 4 KiB chunks, so a store is not portable to a 16 KiB- or 64 KiB-page kernel.
///
/// Addresses and page numbers are `UInt64` (a remote process's address space, not ours);
/// counts and lengths take whatever integer type the call site holds.
public enum Page {
    /// Bytes in a page.
    public static let size = 4096
    /// log2(`size`): an address shifted right by this is its page number.
    public static let shift = 12

    /// The number of the page that holds `address` (`address / size`).
    @inlinable
    public static func number(of address: UInt64) -> UInt64 { address >> UInt64(shift) }

    /// The address of the first byte of page `number` (`number * size`).
    @inlinable
    public static func address(of number: UInt64) -> UInt64 { number << UInt64(shift) }

    /// The page numbers of the bytes `start ..< end` (both page-aligned).
    @inlinable
    public static func numbers(from start: UInt64, to end: UInt64) -> Range<UInt64> {
        number(of: start)..<number(of: end)
    }

    /// Whole pages in `length` bytes, rounding down.
    @inlinable
    public static func count<T: BinaryInteger>(of length: T) -> T { length / T(size) }

    /// Bytes in `count` pages.
    @inlinable
    public static func bytes<T: BinaryInteger>(_ count: T) -> T { count * T(size) }

    /// Whether an address, offset or length is a whole number of pages.
    @inlinable
    public static func isAligned<T: BinaryInteger>(_ value: T) -> Bool { value % T(size) == 0 }

    /// `value` rounded down to a page boundary.
    @inlinable
    public static func alignDown<T: BinaryInteger>(_ value: T) -> T { value - value % T(size) }

    /// `value` rounded up to a page boundary.
    @inlinable
    public static func alignUp<T: BinaryInteger>(_ value: T) -> T { alignDown(value + T(size - 1)) }
}

// Page-sized views of a buffer of whole pages, for the loops that hash, compress or copy one
// page at a time. The index is the page's place in the buffer, not its page number.

extension UnsafeRawBufferPointer {
    /// Whole pages in the buffer (a partial tail is not counted).
    @inlinable
    public var pageCount: Int { Page.count(of: count) }

    /// Page `index` of the buffer: bytes `index * Page.size ..< (index + 1) * Page.size`.
    @inlinable
    public func page(at index: Int) -> UnsafeRawBufferPointer { pages(index..<(index + 1)) }

    /// Pages `range` of the buffer.
    @inlinable
    public func pages(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[Page.bytes(range.lowerBound)..<Page.bytes(range.upperBound)])
    }

    /// Calls `body` with each whole page of the buffer and its index, in order.
    @inlinable
    public func forEachPage<E: Error>(_ body: (Int, UnsafeRawBufferPointer) throws(E) -> Void) throws(E) {
        for index in 0..<pageCount { try body(index, page(at: index)) }
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Whole pages in the buffer (a partial tail is not counted).
    @inlinable
    public var pageCount: Int { Page.count(of: count) }

    /// Page `index` of the buffer: bytes `index * Page.size ..< (index + 1) * Page.size`.
    @inlinable
    public func page(at index: Int) -> UnsafeMutableRawBufferPointer { pages(index..<(index + 1)) }

    /// Pages `range` of the buffer.
    @inlinable
    public func pages(_ range: Range<Int>) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: self[Page.bytes(range.lowerBound)..<Page.bytes(range.upperBound)])
    }

    /// An allocation of `count` pages, page-aligned; the caller deallocates it.
    @inlinable
    public static func allocate(pages count: Int) -> UnsafeMutableRawBufferPointer {
        allocate(byteCount: Page.bytes(count), alignment: Page.size)
    }
}
