import Foundation
import Incremental
import Store
import Tracee
import Syscall
import TrackerTestSupport

/// Ground truth for a checkpoint: taken during the generation's own final stop, a full read of
/// every page of every mapping whose contents a checkpoint keeps, and the descriptor offsets.
/// A generation is right when its rebuilt page map says exactly this about every page: a page
/// in the map holds the chunk's bytes; a page not in it holds its backing's (zero for
/// anonymous memory, the file's bytes for a private file mapping).
public final class CheckpointReference {
    public let regions: [MemoryRegion]
    /// Page number -> id of its bytes now.
    public private(set) var pages: [UInt64: ChunkID] = [:]
    public let offsets: [Int32: Int64]
    public let threads: [Int32]

    public init(_ process: FrozenProcess) throws {
        let pid = process.pid
        regions = try MemoryRegion.of(pid)
        threads = process.threads
        var offsets: [Int32: Int64] = [:]
        for fd in try ProcFS.descriptors(pid) {
            if let pos = (try? ProcFS.descriptorInfo(pid, fd))?["pos"].flatMap({ Int64($0) }) { offsets[fd] = pos }
        }
        self.offsets = offsets
        try TrackerProof.forEachPage(of: regions.filter(Self.kept), pid: pid) { address, page in
            pages[address / 4096] = ChunkID(hashing: page)
        }
    }

    /// Mappings whose pages a checkpoint keeps: all but shared file mappings and the kernel's.
    public static func kept(_ region: MemoryRegion) -> Bool {
        guard !region.isSpecial else { return false }
        if region.shared {
            let path = region.path
            return region.isAnonymous || path.hasPrefix("/dev/zero") || path.hasPrefix("/SYSV")
                || path.hasPrefix("/memfd:") || path.hasSuffix(" (deleted)")
        }
        return true
    }

    /// Every way `map` differs from this reference (at most `limit` lines).
    public func differences(from map: PageMap, limit: Int = 10) -> [String] {
        var problems: [String] = []
        var fileCache: [String: FileDescriptor] = [:]
        defer { for fd in fileCache.values { fd.close() } }
        let filePage = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { filePage.deallocate() }
        for region in regions where Self.kept(region) {
            let fileBacked =
                !region.isAnonymous && !region.shared && !region.path.hasSuffix(" (deleted)")
                && region.path.hasPrefix("/")
            for page in (region.start / 4096)..<(region.end / 4096) {
                guard let live = pages[page] else { continue }
                if let stored = map.chunk(of: page) {
                    if stored != live {
                        problems.append(
                            "page 0x\(String(page * 4096, radix: 16)) in \(region): "
                                + "stored \(stored.short), live \(live.short)"
                        )
                    }
                    continue
                }
                var backing = ChunkID.zeroPage
                if fileBacked {
                    if fileCache[region.path] == nil {
                        fileCache[region.path] = try? FileDescriptor.open(region.path, [.readOnly])
                    }
                    filePage.initializeMemory(as: UInt8.self, repeating: 0)
                    if let fd = fileCache[region.path] {
                        _ = try? fd.readFully(into: filePage, at: Int64(region.offset + (page * 4096 - region.start)))
                    }
                    backing = ChunkID(hashing: UnsafeRawBufferPointer(filePage))
                }
                if backing != live {
                    problems.append(
                        "page 0x\(String(page * 4096, radix: 16)) in \(region): "
                            + "not stored, live \(live.short) differs from its backing"
                    )
                }
                if problems.count >= limit { return problems }
            }
        }
        // Nothing stored outside the kept mappings (but the files the process writes, which a
        // generation keeps in the file slots: `FileChunks`).
        let keptRanges = regions.filter(Self.kept).map { ($0.start / 4096, $0.end / 4096) }
        for entry in map.pages
        where entry.page < FileChunks.firstPage
            && !keptRanges.contains(where: { $0.0 <= entry.page && entry.page < $0.1 })
        {
            problems.append("page 0x\(String(entry.page * 4096, radix: 16)) is stored but in no kept mapping")
            if problems.count >= limit { break }
        }
        return problems
    }
}
