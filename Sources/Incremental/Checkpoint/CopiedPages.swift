#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SoftDirty
import Store
import Syscall
import Tracee

/// Pages copied out of a process into one buffer, with the pages that could not be read
/// (unmapped while the process ran): those are never handed on, and the next collect reports
/// them.
final class CopiedPages {
    struct Slice {
        var firstPage: UInt64
        var count: UInt64
        var bytes: UnsafeRawBufferPointer
    }

    let pageCount: UInt64
    private let buffer: UnsafeMutableRawBufferPointer
    private let slices: [(firstPage: UInt64, count: UInt64, offset: Int)]
    private let unreadable: AddressRuns

    /// Reads `runs` now, all at once.
    init(_ runs: [PageRun], from memory: ProcessMemory) throws {
        let pages = runs.reduce(0) { $0 + Int($1.pageCount) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(pages: pages)
        var offset = 0
        var requests: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)] = []
        var slices: [(firstPage: UInt64, count: UInt64, offset: Int)] = []
        for run in runs {
            let size = Page.bytes(Int(run.pageCount))
            requests.append((run.start, UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<(offset + size)])))
            slices.append((Page.number(of: run.start), run.pageCount, offset))
            offset += size
        }
        do { unreadable = AddressRuns(try memory.read(requests)) } catch {
            buffer.deallocate()
            throw error
        }
        self.buffer = buffer
        self.slices = slices
        pageCount = UInt64(pages)
    }

    deinit { buffer.deallocate() }

    /// Hands on every run of pages that was read.
    func forEach(_ body: (Slice) throws -> Void) throws {
        for slice in slices {
            let range = PageRun(
                start: Page.address(of: slice.firstPage), end: Page.address(of: slice.firstPage + slice.count))
            for part in unreadable.isEmpty ? [range] : AddressRuns([range]).subtracting(unreadable).runs {
                let offset = slice.offset + Int(part.start - range.start)
                try body(
                    Slice(
                        firstPage: Page.number(of: part.start), count: part.pageCount,
                        bytes: UnsafeRawBufferPointer(
                            rebasing: buffer[offset..<(offset + Page.bytes(Int(part.pageCount)))])))
            }
        }
    }

    /// Reads `runs` batch by batch (at most `maximumPages` each) while the process runs, each
    /// batch handed to `consume` before the next is read; returns how many pages it read.
    static func stream(
        _ runs: AddressRuns, from pid: Int32, maximumPages: Int, _ consume: (Slice) throws -> Void
    ) throws -> UInt64 {
        let memory = ProcessMemory(pid: pid)
        var batch: [PageRun] = []
        var batchPages = 0
        var total: UInt64 = 0
        func flush() throws {
            guard batchPages > 0 else { return }
            try CopiedPages(batch, from: memory).forEach(consume)
            total += UInt64(batchPages)
            batch = []
            batchPages = 0
        }
        for run in runs.runs {
            var start = run.start
            while start < run.end {
                let take = min(Int(Page.count(of: run.end - start)), maximumPages - batchPages)
                batch.append(PageRun(start: start, end: start + Page.bytes(UInt64(take))))
                batchPages += take
                start += Page.bytes(UInt64(take))
                if batchPages == maximumPages { try flush() }
            }
        }
        try flush()
        return total
    }
}
