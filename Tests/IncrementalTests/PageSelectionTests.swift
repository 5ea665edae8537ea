import Foundation
@testable import Incremental
import SoftDirty
import Testing
@testable import Tracee

/// PageSelection over pages of this test process, whose state the test set itself: which
/// pages were written, which were only read from a file. No other process is traced.
@Suite struct PageSelectionTests {
    static let page = 4096

    /// `count` fresh pages of this process, unmapped by the caller.
    static func map(
        _ count: Int, fd: Int32 = -1, flags: Int32 = MAP_PRIVATE | MAP_ANONYMOUS
    ) throws -> UnsafeMutableRawPointer {
        let memory = try #require(mmap(nil, count * page, PROT_READ | PROT_WRITE, flags, fd, 0))
        try #require(memory != MAP_FAILED)
        return memory
    }

    static func region(
        _ memory: UnsafeMutableRawPointer, pages: Int, shared: Bool = false, inode: UInt64 = 0, path: String = ""
    ) -> MemoryRegion {
        let start = UInt64(UInt(bitPattern: memory))
        return MemoryRegion(
            start: start, end: start + UInt64(pages * page), readable: true, writable: true, executable: false,
            shared: shared, offset: 0, device: "00:00", inode: inode, path: path)
    }

    /// Page indexes of `memory` as runs.
    static func runs(_ memory: UnsafeMutableRawPointer, _ pages: [Int]) -> AddressRuns {
        let start = UInt64(UInt(bitPattern: memory))
        return AddressRuns(
            pages.map { PageRun(start: start + UInt64($0 * page), end: start + UInt64(($0 + 1) * page)) })
    }

    static func select(
        _ region: MemoryRegion, candidates: AddressRuns, written: AddressRuns = AddressRuns(),
        mappedBy pid: Int32 = getpid()
    ) throws -> PageSelection {
        try PageSelection(
            pid: pid, candidates: candidates, written: written, regions: [region],
            pagemap: try Pagemap(pid: getpid()))
    }

    @Test func anonymousPagesWrittenAreCopiedAndTheRestAreZero() throws {
        let memory = try Self.map(8)
        defer { munmap(memory, 8 * Self.page) }
        for k in [1, 2, 5] { memory.storeBytes(of: 0xa5, toByteOffset: k * Self.page, as: UInt8.self) }
        let region = Self.region(memory, pages: 8)
        let all = Self.runs(memory, Array(0..<8))
        var selection = try Self.select(region, candidates: all)
        #expect(selection.copy == Self.runs(memory, [1, 2, 5]))
        #expect(selection.zero == Self.runs(memory, [0, 3, 4, 6, 7]))
        #expect(selection.revert.isEmpty)
        // What the tracker reports written is copied on its word, without a lookup.
        selection = try Self.select(region, candidates: all, written: Self.runs(memory, [0]))
        #expect(selection.copy == Self.runs(memory, [0, 1, 2, 5]))
        #expect(selection.zero == Self.runs(memory, [3, 4, 6, 7]))
        // Candidates outside the region are not the region's business.
        let start = UInt64(UInt(bitPattern: memory))
        selection = try Self.select(
            region, candidates: AddressRuns([PageRun(start: start + 4 * 4096, end: start + 64 * 4096)]))
        #expect(selection.copy == Self.runs(memory, [5]))
        #expect(selection.zero == Self.runs(memory, [4, 6, 7]))
    }

    @Test func privateFilePagesComeFromTheFileUnlessWrittenOrTheFileIsGoneUnsaved() throws {
        let path = NSTemporaryDirectory() + "chpox-page-selection-\(getpid())"
        try Data(repeating: 0x5a, count: 4 * Self.page).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fd = open(path, O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        let memory = try Self.map(4, fd: fd, flags: MAP_PRIVATE)
        defer { munmap(memory, 4 * Self.page) }
        var sum = 0
        for k in [0, 2, 3] { sum += Int(memory.load(fromByteOffset: k * Self.page, as: UInt8.self)) }
        #expect(sum == 3 * 0x5a)
        memory.storeBytes(of: 1, toByteOffset: 1 * Self.page, as: UInt8.self)  // copy-on-write: anonymous now
        let all = Self.runs(memory, Array(0..<4))

        var selection = try Self.select(Self.region(memory, pages: 4, inode: 77, path: path), candidates: all)
        #expect(selection.copy == Self.runs(memory, [1]))
        #expect(selection.revert == Self.runs(memory, [0, 2, 3]))
        #expect(selection.zero.isEmpty)

        // The file is gone but small enough to be saved with the image (`MappedFileCapture`):
        // its clean pages come from the file recreated, as before.
        let deleted = Self.region(memory, pages: 4, inode: 77, path: path + " (deleted)")
        selection = try Self.select(deleted, candidates: all)
        #expect(selection.copy == Self.runs(memory, [1]))
        #expect(selection.revert == Self.runs(memory, [0, 2, 3]))

        // The file is gone and cannot be saved (here: not found through /proc/PID/map_files of
        // a process that does not map it): nothing else has its pages, every one is kept.
        selection = try Self.select(deleted, candidates: all, mappedBy: 1)
        #expect(selection.copy == all)
        #expect(selection.revert.isEmpty)
        #expect(selection.zero.isEmpty)

        // A shared file mapping: its pages are the file's, whatever was written.
        selection = try Self.select(Self.region(memory, pages: 4, shared: true, inode: 77, path: path), candidates: all)
        #expect(selection.revert == all)
        #expect(selection.copy.isEmpty)
        #expect(selection.zero.isEmpty)
    }
}
