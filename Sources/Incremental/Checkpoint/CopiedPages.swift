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
///
/// A large read is split into parts of about `bytesPerPart` read on every core at once (each
/// part's pages land at their own place in the buffer, so the copy is the same whatever the
/// order): the final stop of a full base copies the whole process while it is frozen.
final class CopiedPages {
    struct Slice {
        var firstPage: UInt64
        var count: UInt64
        var bytes: UnsafeRawBufferPointer
    }

    typealias Request = (address: UInt64, buffer: UnsafeMutableRawBufferPointer)

    /// The size of the parts read at once (16 MiB: tens of microseconds of system call
    /// overhead against milliseconds of copying, and enough parts to keep every core busy).
    static let bytesPerPart = 16 << 20

    let pageCount: UInt64
    private let buffer: UnsafeMutableRawBufferPointer
    private let ownsBuffer: Bool
    /// The prepared buffer the pages were read into, kept as long as they are.
    private let prepared: AnonymousMapping?
    private let slices: [(firstPage: UInt64, count: UInt64, offset: Int)]
    private let unreadable: AddressRuns

    /// Reads `runs` now, all at once, into `prepared` when it holds them (a buffer faulted in
    /// beforehand, see `Checkpointer`'s stop; kept with the pages), else into a buffer of their
    /// size (or into `reusing`, which must hold them, and which the caller keeps).
    init(
        _ runs: [PageRun], from memory: ProcessMemory, reusing: UnsafeMutableRawBufferPointer? = nil,
        prepared: AnonymousMapping? = nil
    ) throws {
        let pages = runs.reduce(0) { $0 + Int($1.pageCount) }
        precondition(reusing.map { $0.count >= Page.bytes(pages) } ?? true)
        let prepared = reusing == nil ? prepared.flatMap { $0.bytes.count >= Page.bytes(pages) ? $0 : nil } : nil
        let buffer = reusing ?? prepared?.bytes ?? UnsafeMutableRawBufferPointer.allocate(pages: pages)
        let ownsBuffer = reusing == nil && prepared == nil
        var offset = 0
        var requests: [Request] = []
        var slices: [(firstPage: UInt64, count: UInt64, offset: Int)] = []
        for run in runs {
            let size = Page.bytes(Int(run.pageCount))
            requests.append((run.start, UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<(offset + size)])))
            slices.append((Page.number(of: run.start), run.pageCount, offset))
            offset += size
        }
        do { unreadable = AddressRuns(try Self.read(requests, from: memory)) } catch {
            if ownsBuffer { buffer.deallocate() }
            throw error
        }
        self.buffer = buffer
        self.ownsBuffer = ownsBuffer
        self.prepared = prepared
        self.slices = slices
        pageCount = UInt64(pages)
    }

    deinit { if ownsBuffer { buffer.deallocate() } }

    /// Whether the pages were read into `mapping` (prepared beforehand).
    func isIn(_ mapping: AnonymousMapping) -> Bool { prepared === mapping }

    /// Reads `requests` in parts of about `bytesPerPart`, in parallel; returns the pages that
    /// could not be read.
    static func read(_ requests: [Request], from memory: ProcessMemory) throws -> [PageRun] {
        let parts = split(requests, bytesPerPart: bytesPerPart)
        var outcomes = [Result<[PageRun], TraceeError>](repeating: .success([]), count: parts.count)
        outcomes.withUnsafeMutableBufferPointer { outcomes in
            Parallel.forEach(parts.count) { k in
                outcomes[k] = Result { () throws(TraceeError) in try memory.read(parts[k]) }
            }
        }
        return try outcomes.flatMap { try $0.get() }
    }

    /// `requests` cut at page boundaries into parts of about `bytesPerPart` bytes each.
    static func split(_ requests: [Request], bytesPerPart: Int) -> [[Request]] {
        var parts: [[Request]] = []
        var part: [Request] = []
        var partBytes = 0
        for request in requests {
            var offset = 0
            while offset < request.buffer.count {
                let take = min(request.buffer.count - offset, max(Page.size, Page.alignDown(bytesPerPart - partBytes)))
                part.append(
                    (
                        request.address + UInt64(offset),
                        UnsafeMutableRawBufferPointer(rebasing: request.buffer[offset..<(offset + take)])
                    ))
                partBytes += take
                offset += take
                if partBytes >= bytesPerPart {
                    parts.append(part)
                    part = []
                    partBytes = 0
                }
            }
        }
        if !part.isEmpty { parts.append(part) }
        return parts
    }

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
    /// batch handed to `consume` in order; returns how many pages it read. The next batch is
    /// read while `consume` works on the current one, into the other of two buffers allocated
    /// once (a batch's pages are put before the next collect whenever they were read: a page
    /// written after its read is reported dirty by that collect).
    static func stream(
        _ runs: AddressRuns, from pid: Int32, maximumPages: Int, _ consume: (Slice) throws -> Void
    ) throws -> UInt64 {
        let memory = ProcessMemory(pid: pid)
        let batches = Batches(runs.runs, maximumPages: maximumPages)
        guard batches.count > 0 else { return 0 }
        let buffers = (0..<min(2, batches.count)).map { _ in
            UnsafeMutableRawBufferPointer.allocate(pages: batches.largest)
        }
        defer { for buffer in buffers { buffer.deallocate() } }
        let reader = BatchReader()
        defer { _ = try? reader.wait() }  // never leave a read in flight into freed buffers
        var total: UInt64 = 0
        var current = try CopiedPages(batches.runs(0), from: memory, reusing: buffers[0])
        for k in 0..<batches.count {
            if k + 1 < batches.count {
                let next = batches.runs(k + 1)
                reader.start { try CopiedPages(next, from: memory, reusing: buffers[(k + 1) % 2]) }
            }
            try current.forEach(consume)
            total += current.pageCount
            if k + 1 < batches.count { current = try reader.wait()! }
        }
        return total
    }

    /// `runs` cut into batches of at most `maximumPages` pages, each batch's runs made when it is
    /// read: where each batch begins is all that is kept (a copy of every run up front cost 16
    /// bytes a run, 34 MB for a 16 GiB process whose resident pages alternate with holes).
    struct Batches {
        private let all: [PageRun]
        private let maximumPages: Int
        /// Where each batch begins: an index into `all` and the address within that run.
        private var starts: [(run: Int, address: UInt64)] = []
        private(set) var largest = 0
        var count: Int { starts.count }

        init(_ runs: [PageRun], maximumPages: Int) {
            all = runs
            self.maximumPages = maximumPages
            var pages = 0
            for (k, run) in runs.enumerated() {
                var start = run.start
                while start < run.end {
                    if pages == 0 { starts.append((k, start)) }
                    let take = min(Int(Page.count(of: run.end - start)), maximumPages - pages)
                    pages += take
                    start += Page.bytes(UInt64(take))
                    largest = max(largest, pages)
                    if pages == maximumPages { pages = 0 }
                }
            }
        }

        /// The runs of batch `k`.
        func runs(_ k: Int) -> [PageRun] {
            var batch: [PageRun] = []
            var (index, start) = starts[k]
            var pages = 0
            while index < all.count && pages < maximumPages {
                let run = all[index]
                let take = min(Int(Page.count(of: run.end - start)), maximumPages - pages)
                if take > 0 { batch.append(PageRun(start: start, end: start + Page.bytes(UInt64(take)))) }
                pages += take
                start += Page.bytes(UInt64(take))
                if start == run.end {
                    index += 1
                    if index < all.count { start = all[index].start }
                }
            }
            return batch
        }
    }
}

/// One read in flight on another thread; `wait` returns it (or throws what it threw).
private final class BatchReader: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var inFlight = false
    private var outcome: Result<CopiedPages, any Error>?

    func start(_ read: @escaping () throws -> CopiedPages) {
        precondition(!inFlight)
        inFlight = true
        let work = Unchecked(value: read)
        DispatchQueue.global().async {
            self.outcome = Result { try work.value() }
            self.done.signal()
        }
    }

    /// The read started last, nil when none is in flight.
    @discardableResult
    func wait() throws -> CopiedPages? {
        guard inFlight else { return nil }
        done.wait()
        inFlight = false
        defer { outcome = nil }
        return try outcome!.get()
    }

    private struct Unchecked<Value>: @unchecked Sendable {
        let value: Value
    }
}
