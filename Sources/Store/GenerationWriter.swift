#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Syscall

/// Writes one generation. Pages are hashed; zero pages and chunks the store already has cost
/// nothing but an entry; new chunks are gathered into frames of up to 16 pages, LZ4-compressed
/// into packs (hashing and compression run on every core, see `put` and `ChunkPacker`; the
/// bytes written depend only on the pages put and their order). `commit` publishes, in order: packs, one index segment, the manifest, and last
/// the chain file (the commit point). A writer that is abandoned removes the packs it published;
/// one that is killed leaves only garbage, which the next writer (`reclaimAbandonedWrites`) or GC
/// removes; committed generations are never touched.
public final class GenerationWriter {
    public let chain: String
    public let generation: UInt64
    public let kind: GenerationManifest.Kind
    /// The previous generation's manifest id, nil for a chain's first generation.
    public let parent: ChunkID?

    private let store: Store
    private var storeLock: StoreLock?
    /// The remote's hold for a generation in flight (`StoreRemote.beginGeneration`).
    private var remoteHold: AnyObject?
    private var chainClaim: ChainClaim?
    /// The generation's chunks are in the index: its packs are no longer its own to remove.
    private var indexed = false
    private let packer: ChunkPacker
    /// Chunks written by this generation, not yet in the index.
    private var written: Set<ChunkID> = []
    private var pages: [PageEntry] = []
    private var unmapped: [PageRange] = []
    private var statistics = GenerationManifest.Statistics()
    private var finished = false

    /// `claimed`: the caller holds the chain's claim for a run of generations; otherwise the
    /// writer claims the chain for this generation only.
    init(store: Store, chain name: String, full: Bool, claimed: Bool = false) throws(StoreError) {
        guard Chain.isValidName(name) else { throw .invalidChainName(name) }
        self.store = store
        chain = name
        packer = ChunkPacker(directory: store.directory)
        if !claimed {
            chainClaim = try ChainClaim(store: store, chain: name)
            // What an abandoned or killed writer left goes first, when no one else writes (a
            // claimed run does it once, when it claims the chain).
            _ = try? store.reclaimAbandonedWrites()
        }
        storeLock = try StoreLock(.store, .shared, in: store.directory)
        remoteHold = try store.remote?.beginGeneration(chain: name)
        let current = try store.chainOrEmpty(name)
        generation = current.nextGeneration
        parent = current.head?.manifest
        kind = full || current.entries.isEmpty ? .full : .delta
        // Under the shared lock the index can only grow: what it says now stays true.
        try store.refreshIndex()
    }

    deinit {
        if !finished { abandon() }
    }

    /// Records `count` pages starting at page number `firstPage`, whose bytes are `contents`
    /// (`count` whole pages of bytes). A large put is hashed on every core; the pages are then
    /// looked up and packed in their order, so the generation is the same whatever the cores.
    public func put(firstPage: UInt64, contents: UnsafeRawBufferPointer) throws(StoreError) {
        precondition(!finished, "generation already committed or abandoned")
        guard Page.isAligned(contents.count) else { throw .invalidArgument("page contents must be whole pages") }
        let count = contents.pageCount
        if count < 2 * Self.pagesPerHashBlock {
            for k in 0..<count {
                let page = contents.page(at: k)
                try put(firstPage + UInt64(k), page, ChunkID(hashing: page))
            }
            return
        }
        let ids = [ChunkID](unsafeUninitializedCapacity: count) { ids, initialized in
            Parallel.forEachBlock(count, step: Self.pagesPerHashBlock) { block in
                for k in block { ids.initializeElement(at: k, to: ChunkID(hashing: contents.page(at: k))) }
            }
            initialized = count
        }
        for k in 0..<count { try put(firstPage + UInt64(k), contents.page(at: k), ids[k]) }
    }

    /// Pages hashed per task of a large put (256 KiB, about 25 us of XXH3: a 1 MiB put is four
    /// tasks); a put of fewer than two blocks is hashed on the caller's thread.
    static let pagesPerHashBlock = 64

    private func put(_ number: UInt64, _ page: UnsafeRawBufferPointer, _ id: ChunkID) throws(StoreError) {
        pages.append(PageEntry(page: number, chunk: id))
        statistics.pagesWritten += 1
        if id == .zeroPage {
            statistics.zeroPages += 1
            return
        }
        // One hash of the set per page (an insert that finds the id is the contains).
        guard store.index.lookup(id) == nil, written.insert(id).inserted else { return }
        try packer.add(id, page: page)
    }

    /// Makes room for `count` more pages at once, for a caller that knows how many it is about to
    /// put (a checkpoint's round): the page list of a large generation then grows once instead of
    /// doubling, which holds the old entries and twice as many new ones at the same moment (24
    /// bytes a page: 67 MB for the 2.8 million pages of a 16 GiB base, 151 MB while doubling).
    public func reservePages(_ count: Int) {
        if pages.capacity < pages.count + count { pages.reserveCapacity(pages.count + count) }
    }

    /// Records one page that is zero without looking at any bytes.
    public func putZero(page: UInt64) {
        pages.append(PageEntry(page: page, chunk: .zeroPage))
        statistics.pagesWritten += 1
        statistics.zeroPages += 1
    }

    /// Records pages that are no longer mapped (or whose contents revert to their mapping's
    /// backing). Pages put earlier in this generation within the range are taken back; pages
    /// put after it stand. So a checkpointer can copy memory in rounds while the process runs
    /// (pre-copy) and unmap what vanished meanwhile, in a full generation too.
    public func unmap(_ range: PageRange) {
        unmapped.append(range)
        retractions.append(Retraction(range: range, before: pages.count))
    }

    /// An unmap that takes back the first `before` pages put, within `range`.
    private struct Retraction { var range: PageRange; var before: Int }
    private var retractions: [Retraction] = []

    /// `pages` without the entries taken back by later unmaps: a sweep over both sorted by page.
    private func retracted(_ pages: consuming [PageEntry]) -> [PageEntry] {
        let relevant = retractions.filter { $0.before > 0 && $0.range.count > 0 }.sorted {
            $0.range.first < $1.range.first
        }
        guard !relevant.isEmpty else { return pages }
        let order = pages.indices.sorted { (pages[$0].page, $0) < (pages[$1].page, $1) }
        var dropped = [Bool](repeating: false, count: pages.count)
        var active: [Retraction] = []
        var next = 0
        for index in order {
            let page = pages[index].page
            while next < relevant.count && relevant[next].range.first <= page {
                active.append(relevant[next])
                next += 1
            }
            active.removeAll { $0.range.end <= page }
            if active.contains(where: { $0.before > index }) { dropped[index] = true }
        }
        var kept = 0  // in place: the list is this call's own
        for index in pages.indices where !dropped[index] {
            pages[kept] = pages[index]
            kept += 1
        }
        pages.removeSubrange(kept...)
        return pages
    }

    /// Publishes the generation; returns its chain entry.
    @discardableResult
    public func commit(metadata: [UInt8] = [], createdNanoseconds: Int64? = nil) throws(StoreError) -> Chain.Entry {
        precondition(!finished, "generation already committed or abandoned")
        do throws(StoreError) {
            _ = try packer.finish()
            // Every chunk is packed: what put() kept to find a page's twin within the generation
            // (one id per chunk) goes before the index and the page list are built.
            written = []
            statistics.newChunks = UInt64(packer.chunks)
            statistics.storedBytes = UInt64(packer.storedBytes)
            statistics.newLogicalBytes = UInt64(packer.logicalBytes)
            let (chunks, packs) = try packer.takeChunks()
            try store.remote?.upload(packs: packs, from: store)
            let segment = try store.index.add(chunks, packs: packs)
            indexed = true

            // The page list is handed over to the delta, not copied (nothing is put after this).
            let entries = pages
            pages = []
            let delta = PageDelta(unmapped: kind == .full ? [] : unmapped, pages: retracted(consume entries))
            statistics.unmappedPages = delta.unmappedPageCount
            let created = createdNanoseconds ?? ClockTime.realtime()
            let manifest = GenerationManifest(
                generation: generation, createdNanoseconds: created, parent: parent, kind: kind,
                chain: chain, statistics: statistics, metadata: metadata, delta: delta)
            let bytes = manifest.encoded()
            let id = bytes.withUnsafeBytes { ChunkID(hashing: $0) }
            try store.directory.publish(
                bytes, as: GenerationManifest.fileName(id), in: store.directory.manifests, dirName: "manifests")

            var current = try store.chainOrEmpty(chain)
            guard current.nextGeneration == generation else {
                throw StoreError.brokenChain(
                    chain: chain, generation: generation, reason: "the chain changed while it was being written")
            }
            let entry = Chain.Entry(
                generation: generation, manifest: id, createdNanoseconds: created, kind: kind,
                deltaEntries: UInt64(delta.pages.count + delta.unmapped.count))
            current.entries.append(entry)
            current.nextGeneration = generation + 1
            // A remote store's commit point is its chain's swap; the cache follows it.
            try store.remote?.commit(current, segment: segment, manifests: [id], in: store)
            try store.publish(current)  // the commit point
            finished = true

            // After the commit: failures here cost speed, never data. A cache's index is the
            // remote's segments as they are (`StoreRemote.refreshIndex`): it is not merged here.
            if store.remote == nil { try? store.index.compact() }
            writeSnapshotIfDue(current)
            release()
            return entry
        } catch {
            abandon()
            throw error
        }
    }

    /// Drops the generation: the packs it published are removed (no index entry names them yet:
    /// nothing else refers to them); locks are released. Once its index segment is written (a
    /// commit that failed later), its chunks stay as dead chunks for `cpx gc`: another writer may
    /// already have merged that segment.
    public func abandon() {
        guard !finished else { return }
        finished = true
        packer.discard()
        if !indexed { store.removeUnreferenced(packer.finished) }
        release()
    }

    /// Figures so far (final after commit).
    public var currentStatistics: GenerationManifest.Statistics { statistics }

    private func release() {
        remoteHold = nil
        storeLock = nil
        chainClaim = nil
    }

    private func writeSnapshotIfDue(_ chain: Chain) {
        guard
            let existing = try? store.directory.names(
                in: store.directory.snapshots, dirName: "snapshots", suffix: "map"),
            Snapshot.isDue(chain, position: chain.entries.count - 1, existing: Set(existing)),
            let map = try? store.pageMap(chain, position: chain.entries.count - 1)
        else { return }
        try? Snapshot.write(map, for: chain.entries[chain.entries.count - 1].manifest, in: store.directory)
    }

}
