import Foundation
import StoreTestSupport
import Syscall
import TestTools
import Testing

@testable import Store

#if canImport(Glibc)
import Glibc
#endif

/// The ChunkPacker compresses a batch of frames on every core at once and appends them in the
/// order their pages came, on a thread of its own, and publishes full packs on another: its
/// packs must be the same bytes as one frame at a time, and a write or a publish that fails must
/// fail the generation and leave nothing behind once it is dropped.
@Suite struct ParallelPackerTests {
    /// 14,000 pages (55 MiB, 38 MiB stored: a full pack and part of another; not a whole number of frames or
    /// batches) in frames that LZ4 shrinks, frames it cannot, and frames of both.
    static let pageCount = 14000

    static func content(of page: Int) -> SyntheticMemory.Content {
        switch (page / PackFormat.maxPagesPerFrame) % 3 {
        case 0: .random(UInt64(page))
        case 1: .compressible(UInt64(page))
        default: page % 2 == 0 ? .random(UInt64(page)) : .compressible(UInt64(page))
        }
    }

    struct PackFile: Equatable {
        var name: String
        var bytes: Data
    }

    /// The packs `framesPerBatch` makes of the pages, in a store of its own.
    static func packs(framesPerBatch: Int) throws -> (files: [PackFile], firstPackFrames: Int) {
        let temporary = TemporaryStore("packer-\(framesPerBatch)")
        defer { temporary.cleanup() }
        let store = try temporary.open()
        let packer = ChunkPacker(directory: store.directory, framesPerBatch: framesPerBatch)
        let page = UnsafeMutableRawBufferPointer.allocate(pages: 1)
        defer { page.deallocate() }
        var added: [ChunkID] = []
        for number in 0..<pageCount {
            SyntheticMemory.fill(content(of: number), page)
            added.append(ChunkID(hashing: UnsafeRawBufferPointer(page)))
            try packer.add(added[number], page: UnsafeRawBufferPointer(page))
        }
        let finished = try packer.finish()
        let files = try finished.map { pack in
            let name = PackFormat.fileName(pack)
            let path = "\(temporary.path)/packs/\(name)"
            return PackFile(name: name, bytes: try Data(contentsOf: URL(fileURLWithPath: path)))
        }
        // The locations, read back from the trailers: every chunk added, in its order, in the
        // packs published, each frame's pages in slot order.
        let locations = try packer.takeLocations()
        #expect(locations.map(\.0) == added)
        #expect(Set(locations.map(\.1.pack)) == Set(finished))
        for (k, location) in locations.enumerated().dropFirst() {
            let previous = locations[k - 1].1
            if location.1.pack == previous.pack && location.1.frameOffset == previous.frameOffset {
                #expect(location.1.slot == previous.slot + 1)
            } else {
                #expect(location.1.slot == 0)
            }
        }
        let firstPackFrames = Set(locations.filter { $0.1.pack == finished.first }.map(\.1.frameOffset)).count
        return (files, firstPackFrames)
    }

    @Test func batchesOfAnySizeWriteTheSamePacksAsOneFrameAtATime() throws {
        let serial = try Self.packs(framesPerBatch: 1)
        #expect(serial.files.count == 2)
        for framesPerBatch in [5, ChunkPacker.defaultFramesPerBatch] {
            let batched = try Self.packs(framesPerBatch: framesPerBatch)
            // The first pack fills in the middle of a batch: the boundary is where it would be
            // one frame at a time, not at the end of the batch.
            #expect(serial.firstPackFrames % framesPerBatch != 0)
            #expect(batched.files.map(\.name) == serial.files.map(\.name))
            #expect(batched.files == serial.files, "batches of \(framesPerBatch) frames")
        }
    }

    /// On a 34 MiB tmpfs: a first pack (32 MiB) is published in the middle of a batch, and the
    /// disk fills while the same batch goes on into the next pack.
    @Test(.enabled(if: getuid() == 0, "needs root to mount a small tmpfs"), .timeLimit(.minutes(2)))
    func aWriteThatFailsMidBatchLeavesNothingOnceAbandoned() throws {
        let temporary = TemporaryStore("packer-full")
        try FileManager.default.createDirectory(atPath: temporary.path, withIntermediateDirectories: true)
        defer { temporary.cleanup() }
        try #require(
            try TestTools.run("/bin/mount", ["-t", "tmpfs", "-o", "size=34m,mode=0700", "tmpfs", temporary.path])
                .status == 0)
        defer { _ = try? TestTools.run("/bin/umount", [temporary.path]) }
        let path = temporary.path + "/store"
        let store = try Store(at: path, create: true)
        let writer = try store.beginGeneration(chain: "full")
        let page = UnsafeMutableRawBufferPointer.allocate(pages: 1)
        defer { page.deallocate() }
        // One frame that LZ4 shrinks to almost nothing, so that the first pack closes one frame
        // into a batch (it holds 512 frames of random pages and this one).
        SyntheticMemory.fill(.compressible(1), page)
        for number in 0..<UInt64(PackFormat.maxPagesPerFrame) {
            page.storeBytes(of: number, toByteOffset: 0, as: UInt64.self)
            try writer.put(firstPage: number, contents: UnsafeRawBufferPointer(page))
        }
        var failure: StoreError?
        for number in UInt64(PackFormat.maxPagesPerFrame)..<20000 {
            SyntheticMemory.fill(.random(number), page)
            do { try writer.put(firstPage: number, contents: UnsafeRawBufferPointer(page)) } catch {
                failure = error
                break
            }
        }
        let error = try #require(failure)
        guard case .system(let errno, _, _) = error else {
            Issue.record("expected a write to fail for want of space: \(error)")
            return
        }
        #expect(errno == .noSpace)
        let published = try FileManager.default.contentsOfDirectory(atPath: path + "/packs")
        #expect(published.count == 1, "the first pack was published before the failure")
        writer.abandon()
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/packs").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/tmp").isEmpty)
        #expect(try store.chainOrEmpty("full").entries.isEmpty)
        let report = try store.verify(deep: true)
        #expect(report.isClean)
        #expect(report.garbagePacks == 0)
    }

    /// On a tmpfs whose packs/ is immutable (chattr +i, which stops root too): every pack is
    /// written and sealed in tmp/, and its rename into packs/, on the publishing thread, fails.
    /// The generation must fail with that error, naming the pack, and leave no generation, no
    /// pack and nothing in tmp/; once packs/ is writable again the same writes commit.
    @Test(
        .enabled(if: getuid() == 0, "needs root to mount a tmpfs and make a directory immutable"),
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/chattr"), "needs chattr (e2fsprogs)"),
        .timeLimit(.minutes(2)))
    func aPackWhosePublishFailsFailsTheGenerationAndLeavesNothing() throws {
        let temporary = TemporaryStore("packer-publish")
        try FileManager.default.createDirectory(atPath: temporary.path, withIntermediateDirectories: true)
        defer { temporary.cleanup() }
        try #require(
            try TestTools.run("/bin/mount", ["-t", "tmpfs", "-o", "size=96m,mode=0700", "tmpfs", temporary.path])
                .status == 0)
        defer { _ = try? TestTools.run("/bin/umount", [temporary.path]) }
        let path = temporary.path + "/store"
        let store = try Store(at: path, create: true)
        try #require(try TestTools.run("/usr/bin/chattr", ["+i", path + "/packs"]).status == 0)
        var immutable = true
        defer { if immutable { _ = try? TestTools.run("/usr/bin/chattr", ["-i", path + "/packs"]) } }

        // 9,000 random pages: a full pack, published while the pages are still being put, and
        // the rest, published by commit.
        let pageCount: UInt64 = 9000
        func writeGeneration() throws(StoreError) {
            let writer = try store.beginGeneration(chain: "publish")
            let page = UnsafeMutableRawBufferPointer.allocate(pages: 1)
            defer { page.deallocate() }
            do throws(StoreError) {
                for number in 0..<pageCount {
                    SyntheticMemory.fill(.random(number), page)
                    try writer.put(firstPage: number, contents: UnsafeRawBufferPointer(page))
                }
                try writer.commit()
            } catch {
                writer.abandon()
                throw error
            }
        }
        var failure: StoreError?
        do { try writeGeneration() } catch { failure = error }
        let error = try #require(failure, "a generation whose packs cannot be renamed into packs/ committed")
        guard case .system(let errno, let operation, let failedPath) = error else {
            Issue.record("expected the rename into packs/ to fail: \(error)")
            return
        }
        #expect(errno == .notPermitted)
        #expect(operation == "publish")
        #expect(failedPath.hasPrefix(path + "/packs/") && failedPath.hasSuffix(".pack"), "\(failedPath)")
        #expect(try store.chainOrEmpty("publish").entries.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/packs").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/tmp").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/index").isEmpty)

        try #require(try TestTools.run("/usr/bin/chattr", ["-i", path + "/packs"]).status == 0)
        immutable = false
        try writeGeneration()
        let chain = try store.chain("publish")
        #expect(chain.entries.count == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/packs").count == 2)
        let map = try store.pageMap(chain: "publish", generation: chain.entries[0].generation)
        #expect(map.pages.count == Int(pageCount))
        let report = try store.verify(deep: true)
        #expect(report.isClean)
        #expect(report.garbagePacks == 0)
    }
}
