import Dispatch
import Foundation
import Store
import Syscall

/// Fills the memory of lazily restarted processes (`ld-chpox --lazy`) while they run: a page
/// the process touches before it is in waits on the process's userfaultfd until this server
/// fills it from the store (UFFDIO_COPY, with its neighbours of the same frame), or maps the
/// zero page where nothing is stored (UFFDIO_ZEROPAGE); meanwhile, once the restart lets the
/// processes go (`letGo`), every other stored page is streamed in (the pages the previous
/// lazy restart of the chain saw touched first, first). A page is only ever filled where it is
/// missing: the kernel refuses to fill a present one, so a page the process has written is
/// never overwritten.
///
/// Its own thread serves the userfaultfds from the moment a process's mappings are registered
/// (`add`), so that a later phase of the restart that touches the process's memory (the
/// kernel reading its rseq area, ld-chpox writing a page) is served, not stuck.
///
/// If the server fails or its process dies, no fault may be resolved with a zero page (what
/// the kernel does once the last reference to a userfaultfd is closed): a guardian process
/// (`PageGuard`) holds a reference to each userfaultfd and kills the processes and their
/// descendants when the server ends before every page is in. The processes never run with a
/// page they never had, and none waits forever.
public final class LazyPageServer: @unchecked Sendable {
    /// What the server did.
    public struct Report: Sendable {
        /// Faults served by filling stored pages.
        public var faults = 0
        /// Faults served with the zero page (nothing stored there).
        public var zeroFaults = 0
        /// Pages filled by faults (a fault fills the stored pages of its frame it can).
        public var faultPages = 0
        /// Pages streamed in without a fault.
        public var streamedPages = 0
        /// Pages streamed first because the previous lazy restart saw them touched first.
        public var hintedPages = 0
        /// Forks of a lazily restarted process while it was filled (each child served too).
        public var forks = 0
        /// Changes of the layout the server followed (mremap, MADV_DONTNEED, munmap).
        public var layoutEvents = 0
        /// Seconds from the first registration until every page was in (or its process ended).
        public var seconds = 0.0
        /// Pages never filled because their process ended first (nothing needed them).
        public var pagesOfEndedProcesses = 0
        /// Why it stopped before every page was in (then the guardian killed the processes).
        public var failure: String?
        /// The pages (numbers) of the first restarted process that faults touched first, in order.
        public var touchedFirst: [UInt64] = []
        /// The first pages streamed (page numbers of the first process), in order.
        public var streamedFirst: [UInt64] = []
    }

    /// Pages remembered in `touchedFirst` (256 MiB of pages).
    static let touchedLimit = 65536
    /// Pages remembered in `streamedFirst`.
    static let streamedLimit = 4096
    /// Pages streamed per read of the store.
    static let streamBatch = 16384

    private let store: Store
    public let pageGuard: PageGuard
    private let wake: (read: FileDescriptor, write: FileDescriptor)
    private let lock = NSLock()
    private var incoming: [LazySpace] = []
    private var lettingGo = false
    private var stopping = false
    private var started = false
    private let finishedSignal = DispatchSemaphore(value: 0)
    private var result: Report?
    /// Pages of the first process to stream first.
    private let hint: [UInt64]
    private let hintSet: Set<UInt64>

    // The server thread's own state.
    private var spaces: [LazySpace] = []
    private var report = Report()
    private var faultReader: ChunkReader
    private var queuedFaults: [(space: LazySpace, page: UInt64)] = []
    /// Layout events applied so far: a batch read before one is not written after it.
    private var events = 0
    private var firstPid: Int32?
    private var startTime = DispatchTime.now()

    /// A server for a restart from `store`, with its guardian started; `hint` is the page
    /// order of the first process to stream first.
    public init(store: Store, hint: [UInt64] = []) throws(Errno) {
        self.store = store
        self.hint = hint
        hintSet = Set(hint)
        faultReader = store.reader()
        pageGuard = try PageGuard.start(helper: StubProcess.path)
        do { wake = try FileDescriptor.pipe() } catch {
            pageGuard.abandon()
            throw error
        }
    }

    /// Serves `userfaultfd`, whose registered mappings in process `pid` (`process`, its pidfd,
    /// which the server closes) are missing `entries` (ascending; stored, non-zero pages); the
    /// guardian holds it and watches the process.
    func add(userfaultfd: Userfaultfd, pid: Int32, process: ProcessDescriptor, entries: [PageEntry]) throws(Errno) {
        try pageGuard.hold(userfaultfd.descriptor)
        try pageGuard.watch(pid, pidfd: process.descriptor)
        let space = LazySpace(userfaultfd: userfaultfd, pid: pid, process: process, entries: entries)
        lock.lock()
        if firstPid == nil {
            firstPid = pid
            space.fillFirst(hint)
        }
        incoming.append(space)
        let start = !started
        started = true
        lock.unlock()
        if start {
            startTime = .now()
            let thread = Thread { [self] in run() }
            thread.name = "chpox lazy pages"
            thread.start()
        }
        poke()
    }

    /// Whether any process is served.
    public var isServing: Bool {
        lock.lock()
        defer { lock.unlock() }
        return started
    }

    /// The restart is done: stream every page in, `after` seconds from now (until then only the
    /// pages touched are filled), or as soon as every restarted process has ended.
    public func letGo(after seconds: Double = 0) {
        lock.lock()
        lettingGo = true
        streamAt = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, seconds) * 1e9)
        lock.unlock()
        poke()
    }

    /// When streaming starts (`letGo`), in uptime nanoseconds.
    private var streamAt: UInt64 = 0

    /// Waits until every page is in (or the server failed); then releases the guardian (or,
    /// after a failure, has it kill the processes) and closes every userfaultfd.
    public func finish() -> Report {
        lock.lock()
        let running = started
        lock.unlock()
        guard running else {
            pageGuard.release()
            return Report()
        }
        finishedSignal.wait()
        let report = result ?? Report()
        if report.failure == nil { pageGuard.release() } else { pageGuard.abandon() }
        closeSpaces()
        return report
    }

    private func closeSpaces() {
        for space in spaces {
            space.userfaultfd.close()
            space.process?.close()
        }
        wake.read.close()
        wake.write.close()
    }

    /// Stops serving at once (a failed restart, whose processes are killed): the guardian
    /// kills what it watches.
    public func cancel() {
        lock.lock()
        stopping = true
        let running = started
        lock.unlock()
        poke()
        if running { finishedSignal.wait() }
        pageGuard.abandon()
        closeSpaces()
    }

    private func poke() {
        let byte: [UInt8] = [1]
        _ = try? byte.withRawBytes { (bytes) throws(Errno) in try wake.write.writeAll(bytes) }
    }

    private struct Stop: Error {}

    private func run() {
        do {
            while true {
                lock.lock()
                spaces += incoming
                incoming = []
                let released = lettingGo
                let at = streamAt
                let stop = stopping
                lock.unlock()
                if stop { throw Stop() }
                let open = spaces.filter { !$0.finished }
                if released && open.isEmpty { break }
                let now = DispatchTime.now().uptimeNanoseconds
                // Once every restarted process has ended, only forked children are left: no wait.
                let ended = !spaces.contains { $0.pid != nil && !$0.gone }
                let streaming = released && (now >= at || ended)
                let timeout: Int32 =
                    streaming ? 0 : released ? Int32(clamping: (at - now) / 1_000_000 + 1) : -1
                try serveWaiting(timeout: timeout)
                if streaming, let space = open.first { try stream(space) }
            }
        } catch is Stop {
            report.failure = "stopped before every page was in"
        } catch {
            report.failure = "\(error)"
        }
        report.pagesOfEndedProcesses = spaces.filter(\.gone).map(\.remaining).reduce(0, +)
        report.seconds = Double(DispatchTime.now().uptimeNanoseconds - startTime.uptimeNanoseconds) / 1e9
        result = report
        finishedSignal.signal()
    }

    /// Waits up to `timeout` ms (-1: until something comes) for messages, then serves every
    /// message queued on any userfaultfd, faults last.
    private func serveWaiting(timeout: Int32) throws {
        let open = spaces.filter { !$0.gone }
        let watched = open.filter { $0.process != nil }
        let ready = try Poll.readable(
            [wake.read] + open.map(\.userfaultfd.descriptor) + watched.compactMap { $0.process?.descriptor },
            timeout: timeout)
        if ready.contains(0) {
            var sink = [UInt8](repeating: 0, count: 64)
            _ = try? sink.withMutableRawBytes { (bytes) throws(Errno) in try wake.read.read(into: bytes) }
        }
        for k in ready where k > 0 && k <= open.count { try readMessages(open[k - 1]) }
        try serveQueuedFaults()
        // A process that ended (its pidfd is readable) has nothing more to fill.
        for k in ready where k > open.count { watched[k - open.count - 1].gone = true }
    }

    /// Serves what is queued without waiting (between streamed runs).
    private func serveQueued() throws {
        let open = spaces.filter { !$0.gone }
        let ready = try Poll.readable(open.map(\.userfaultfd.descriptor), timeout: 0)
        for k in ready { try readMessages(open[k]) }
        try serveQueuedFaults()
    }

    /// Reads every message of `space`: layout events applied at once, faults queued.
    private func readMessages(_ space: LazySpace) throws {
        while true {
            let messages: [Userfaultfd.Message]
            do { messages = try space.userfaultfd.readMessages() } catch {
                if error == .noSuchProcess { space.gone = true }
                return
            }
            if messages.isEmpty { return }
            for message in messages {
                switch message {
                case .pageFault(let address, _):
                    queuedFaults.append((space, Page.number(of: address)))
                case .fork(let child):
                    let uffd = Userfaultfd(descriptor: child)
                    try pageGuard.hold(child)
                    spaces.append(space.forked(userfaultfd: uffd))
                    report.forks += 1
                    events += 1
                case .remap(let from, let to, let length):
                    space.move(
                        from: Page.number(of: from), to: Page.number(of: to), count: UInt64(length) / UInt64(Page.size))
                    report.layoutEvents += 1
                    events += 1
                case .remove(let start, let end), .unmap(let start, let end):
                    space.drop(Page.number(of: start)..<Page.number(of: end + UInt64(Page.size) - 1))
                    report.layoutEvents += 1
                    events += 1
                case .other: break
                }
            }
        }
    }

    private func serveQueuedFaults() throws {
        while !queuedFaults.isEmpty {
            let (space, page) = queuedFaults.removeFirst()
            try serveFault(space, page)
        }
    }

    /// Fills the faulting page `page` of `space` (with the stored pages of its 16-page block
    /// still missing), or maps the zero page where nothing is stored; after a layout change
    /// it looks again.
    private func serveFault(_ space: LazySpace, _ page: UInt64) throws {
        // EAGAIN lasts until the task whose fork, mremap or madvise we were told of runs again
        // (it lowers the kernel's count as it leaves its wait): on 2 busy cores, milliseconds.
        // Each try after the first waits a little longer, for ten seconds in all.
        let deadline = DispatchTime.now().uptimeNanoseconds + 10_000_000_000
        var pause: UInt64 = 0
        while DispatchTime.now().uptimeNanoseconds < deadline {
            if pause > 0 { CurrentProcess.sleep(microseconds: pause) }
            pause = min(max(pause * 2, 20), 2000)
            guard !space.gone else { return }
            if let index = space.pending(page) {
                let block = page & ~UInt64(15)
                var indexes: [Int] = []
                for neighbour in block..<(block + 16) {
                    if neighbour == page {
                        indexes.append(index)
                    } else if let k = space.pending(neighbour) {
                        indexes.append(k)
                    }
                }
                indexes.sort()
                switch try fill(space, indexes, reader: faultReader) {
                case .done:
                    report.faults += 1
                    report.faultPages += indexes.count
                    if space.pid == firstPid && report.touchedFirst.count < Self.touchedLimit {
                        report.touchedFirst.append(page)
                    }
                    return
                case .changed: try readMessages(space)
                }
            } else {
                switch space.userfaultfd.zeroPage(at: Page.address(of: page), length: UInt64(Page.size)) {
                case nil:
                    report.zeroFaults += 1
                    return
                case .some(.exists):
                    space.userfaultfd.wake(at: Page.address(of: page), length: UInt64(Page.size))
                    return
                case .some(.noSuchProcess):
                    space.gone = true
                    return
                case .some(let error) where error.rawValue == EAGAIN:
                    try readMessages(space)
                case .some(let error) where error.rawValue == ENOENT:
                    space.userfaultfd.wake(at: Page.address(of: page), length: UInt64(Page.size))
                    return
                case .some(let error):
                    throw LazyPageError(
                        "map the zero page at 0x\(String(Page.address(of: page), radix: 16)) of "
                            + "\(space.pid.map { "process \($0)" } ?? "a forked child"): \(error)")
                }
            }
        }
        throw LazyPageError("page 0x\(String(Page.address(of: page), radix: 16)) kept moving while it was filled")
    }

    private enum FillOutcome { case done, changed }

    /// Reads the pages at `indexes` (ascending) of `space` and copies them in, runs of
    /// consecutive pages one call each. `.changed` when the layout changed first (nothing
    /// more copied: the caller reads the events and looks again).
    private func fill(_ space: LazySpace, _ indexes: [Int], reader: ChunkReader) throws -> FillOutcome {
        let before = events
        let entries = indexes.map { space.entry($0) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(pages: entries.count)
        defer { buffer.deallocate() }
        var slot: [UInt64: Int] = [:]
        for (k, entry) in entries.enumerated() { slot[entry.page] = k }
        try reader.readFew(entries) { entry, bytes in
            if let k = slot[entry.page] { buffer.page(at: k).copyMemory(from: bytes) }
        }
        return try copyRuns(space, indexes, entries, buffer, eventsBefore: before)
    }

    /// Copies `entries` (ascending, their bytes at the same positions in `buffer`) into `space`.
    private func copyRuns(
        _ space: LazySpace, _ indexes: [Int], _ entries: [PageEntry], _ buffer: UnsafeMutableRawBufferPointer,
        eventsBefore: Int
    ) throws -> FillOutcome {
        var start = 0
        while start < entries.count {
            var end = start + 1
            while end < entries.count && entries[end].page == entries[end - 1].page + 1 { end += 1 }
            var k = start
            // A run spans mappings (an mprotect splits one, neighbours join): UFFDIO_COPY then
            // answers ENOENT for the whole run, which says nothing of its pages: page by page.
            var single = false
            while k < end {
                guard events == eventsBefore, !space.gone else { return .changed }
                let bytes = UnsafeRawBufferPointer(buffer.pages(k..<(single ? k + 1 : end)))
                let (copied, error) = space.userfaultfd.copy(bytes, to: Page.address(of: entries[k].page))
                let pages = copied / Page.size
                for j in k..<(k + pages) { space.markDone(indexes[j]) }
                k += pages
                guard let error else { continue }
                if error.rawValue == EAGAIN { return .changed }
                if error == .noSuchProcess {
                    space.gone = true
                    return .done
                }
                guard k < end else { continue }
                if error.rawValue == ENOENT && !single && end - k > 1 {
                    single = true
                    continue
                }
                if error == .exists || error.rawValue == ENOENT {
                    // Present already (a fault's fill came first) or no mapping registered there
                    // any more (unmapped, or mapped anew): nothing to fill.
                    space.markDone(indexes[k])
                    space.userfaultfd.wake(at: Page.address(of: entries[k].page), length: UInt64(Page.size))
                    k += 1
                    continue
                }
                throw LazyPageError(
                    "fill page 0x\(String(Page.address(of: entries[k].page), radix: 16)) of "
                        + "\(space.pid.map { "process \($0)" } ?? "a forked child"): \(error)")
            }
            start = end
        }
        return .done
    }

    /// Streams one batch of `space`'s missing pages, serving faults and events between runs.
    private func stream(_ space: LazySpace) throws {
        let indexes = space.next(Self.streamBatch).sorted()
        guard !indexes.isEmpty else { return }
        let before = events
        let entries = indexes.map { space.entry($0) }
        var position = 0
        try store.reader().readPageWindows(PageMap(pages: entries)) { window in
            guard events == before, !space.gone else { return }
            var start = 0
            while start < window.count {
                var end = start + 1
                while end < window.count && end - start < 256
                    && window[end].entry.page == window[end - 1].entry.page + 1
                {
                    end += 1
                }
                let buffer = UnsafeMutableRawBufferPointer.allocate(pages: end - start)
                defer { buffer.deallocate() }
                var runIndexes: [Int] = []
                var runEntries: [PageEntry] = []
                for k in start..<end {
                    let (entry, bytes) = window[k]
                    buffer.page(at: k - start).copyMemory(from: bytes)
                    runIndexes.append(indexes[position + k])
                    runEntries.append(entry)
                }
                // Only pages still missing: a fault may have filled some since the batch was picked.
                var keep: [Int] = []
                for (j, index) in runIndexes.enumerated() where space.pending(space.entry(index).page) == index {
                    keep.append(j)
                }
                if keep.count == runIndexes.count {
                    if try copyRuns(space, runIndexes, runEntries, buffer, eventsBefore: before) == .changed { return }
                } else {
                    for j in keep {
                        let one = buffer.page(at: j)
                        if try copyRuns(space, [runIndexes[j]], [runEntries[j]], one, eventsBefore: before) == .changed
                        {
                            return
                        }
                    }
                }
                let counted = keep.count
                report.streamedPages += counted
                if space.pid == firstPid {
                    for j in keep {
                        if report.streamedFirst.count < Self.streamedLimit {
                            report.streamedFirst.append(runEntries[j].page)
                        }
                        if hintSet.contains(runEntries[j].page) { report.hintedPages += 1 }
                    }
                }
                try serveQueued()
                guard events == before, !space.gone else { return }
                start = end
            }
            position += window.count
        }
    }
}

/// A failure of the lazy page server.
struct LazyPageError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension LazyPageServer {
    /// A server being made on a thread of its own (its guardian is a process spawned: a few
    /// milliseconds that overlap the restart's checks and the stub's start). `take` waits for it;
    /// one never taken is cancelled when this is let go.
    final class Starting: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var result: Result<LazyPageServer, Errno>?
        private var taken = false

        init(store: Store, hint: @escaping @Sendable () -> [UInt64]) {
            let thread = Thread { [self] in
                result = Result { () throws(Errno) in try LazyPageServer(store: store, hint: hint()) }
                done.signal()
            }
            thread.name = "chpox lazy start"
            thread.start()
        }

        /// The server, once made.
        func take() throws(Errno) -> LazyPageServer {
            done.wait()
            done.signal()  // a second take, or deinit, does not wait again
            taken = true
            return try result!.get()
        }

        deinit {
            guard !taken else { return }
            done.wait()
            if case .success(let server) = result { server.cancel() }
        }
    }
}
