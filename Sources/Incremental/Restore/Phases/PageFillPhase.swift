import Store
import Syscall
import Tracee

/// Every page the generation's page map holds, written into the mappings through
/// /proc/<pid>/mem (which writes read-only pages too). A zero page is written only where a
/// file's bytes would otherwise show; anonymous memory is zero already. Pages a process keeps
/// shared copy-on-write with its parent (`RestartSession.inheritedPages`) hold the same bytes
/// already and are left, so that they stay shared.
public struct PageFillPhase: RestartPhase {
    /// Page ranges (page numbers, end exclusive) of private file mappings (and memory files').
    public var fileBackedPages: [Range<UInt64>]
    /// Page ranges of MAP_DROPPABLE mappings (VmFlags `dp`): left empty, as the kernel may
    /// leave them at any moment (and CRIU does).
    public var droppablePages: [Range<UInt64>] = []

    public var name: String { "page fill" }
    public var steps: [String] {
        ["write the stored pages through /proc/PID/mem (zero pages only over \(fileBackedPages.count) file mappings)"]
            + (droppablePages.isEmpty ? [] : ["leave \(droppablePages.count) droppable mappings empty"])
    }

    public init(image: ProcessImage) {
        fileBackedPages = image.mappings.filter { $0.backing == .privateFile || $0.backing == .memoryFile }.map {
            Page.numbers(from: $0.start, to: $0.end)
        }
        droppablePages = image.mappings.filter { $0.flags.contains("dp") }.map {
            Page.numbers(from: $0.start, to: $0.end)
        }
    }

    /// Whether a zero page at `page` must be written (it would show a file's bytes otherwise).
    public func writesZeroPage(at page: UInt64) -> Bool {
        fileBackedPages.contains { $0.contains(page) }
    }

    public func run(in session: RestartSession) throws {
        let pid = session.pid
        let memory: FileDescriptor
        do { memory = try FileDescriptor.open("/proc/\(pid)/mem", [.readWrite, .closeOnExec]) } catch {
            throw TraceeError.from(error, pid: pid, "open the memory of")
        }
        defer { memory.close() }
        var written = 0
        try session.store.reader().readPages(session.map) { entry, bytes in
            if entry.chunk == .zeroPage && !writesZeroPage(at: entry.page) { return }
            if droppablePages.contains(where: { $0.contains(entry.page) }) { return }
            if session.inheritedPages.contains(entry.page) { return }  // its parent's, shared copy-on-write
            do throws(Errno) { try memory.writeAll(bytes, at: Int64(Page.address(of: entry.page))) } catch {
                throw TraceeError.from(
                    error, pid: pid, "write page 0x\(String(Page.address(of: entry.page), radix: 16)) of")
            }
            written += 1
        }
        session.pagesWritten = written
    }
}
