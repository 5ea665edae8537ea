import Syscall

/// The files of a store a remote holds, by kind: each kind lives in one directory of the store
/// (and under the same name on the remote).
public enum StoreFileKind: String, Sendable, CaseIterable {
    case pack, index, manifest, chain, lineage

    /// The store directory holding the kind (also the remote's key segment).
    public var directoryName: String {
        switch self {
        case .pack: return "packs"
        case .index: return "index"
        case .manifest: return "manifests"
        case .chain, .lineage: return "chains"
        }
    }

    /// The file name's suffix after the name (an id's hex, or a chain's name).
    public var suffix: String {
        switch self {
        case .pack: return "pack"
        case .index: return "idx"
        case .manifest: return "gen"
        case .chain: return "chain"
        case .lineage: return "lineage"
        }
    }

    /// The most a file of the kind may hold, read whole.
    var readLimit: Int {
        switch self {
        case .pack, .index: return PackFormat.maxSize
        case .manifest: return GenerationManifest.maxSize
        case .chain: return Chain.maxSize
        case .lineage: return Lineage.maxSize
        }
    }

    public func fileName(_ name: String) -> String { "\(name).\(suffix)" }
}

/// Where a store's files really live when its directory is a cache of them: the store on S3
/// (`S3Store`). The store calls it at the few places a file may be missing from the cache or
/// must be published beyond it; every other read and write stays in the directory, which is an
/// ordinary store (locks, atomic renames, checks).
///
/// What the remote must guarantee (docs of `S3Store`): packs, index segments and manifests are
/// written once under the name of their bytes; a chain changes only by compare-and-swap from the
/// version the writer began from; a generation is visible remotely once its chain's swap
/// succeeded, and only then is it committed in the cache.
public protocol StoreRemote: AnyObject {
    /// The store's name for people: `s3://bucket/prefix`.
    var location: String { get }

    /// Whether the caller vouched that only trusted users can write the remote (`--trust-store`):
    /// root restarts its images as any user only then (`ImageAuthority`).
    var trusted: Bool { get }

    /// Brings file `name` of `kind` into the cache (`Store.install`); false when the remote
    /// has no such file.
    func fetch(_ kind: StoreFileKind, _ name: String, into store: Store) throws(StoreError) -> Bool

    /// Brings packs `names` into the cache, several at once (a restart's, before it reads them).
    func fetch(packs names: [String], into store: Store) throws(StoreError)

    /// The chains the remote holds.
    func chainNames() throws(StoreError) -> [String]

    /// Makes the cache's copy of chain `name`'s file of `kind` (`.chain` or `.lineage`) the
    /// remote's: replaced when it changed, removed when the remote has none.
    func refresh(_ kind: StoreFileKind, chain name: String, in store: Store) throws(StoreError)

    /// Makes the cache's index the remote's: segments it lacks downloaded, segments the remote
    /// no longer has (maintenance replaced them, or a commit failed) removed, so that no writer
    /// takes a chunk for stored that the remote has let go.
    func refreshIndex(in store: Store) throws(StoreError)

    /// Held by a writer for a run of generations of chain `name` (`ChainClaim`): the chain is
    /// this writer's until it lets the returned value go.
    func claim(chain name: String) throws(StoreError) -> AnyObject

    /// Held by a writer from the start of a generation to its commit or abandon: no
    /// maintenance removes anything from the remote meanwhile.
    func beginGeneration(chain name: String) throws(StoreError) -> AnyObject

    /// Uploads a generation's new packs, before any index segment names them: whatever the
    /// cache's index names is on the remote.
    func upload(packs: [ChunkID], from store: Store) throws(StoreError)

    /// Publishes generations whose packs (uploaded), index segment and manifests are in the
    /// cache: uploads the segment and the manifests, then swaps the remote chain from the version
    /// this writer read to `chain`. Throws when the remote chain changed meanwhile, or the
    /// writer's lease was lost (nothing of the generations is then visible).
    func commit(_ chain: Chain, segment: ChunkID?, manifests: [ChunkID], in store: Store) throws(StoreError)

    /// Publishes the cache's lineage of chain `name` (written under the chain's claim).
    func publishLineage(chain name: String, in store: Store) throws(StoreError)

    /// Runs `body` (gc, rebase, rebuild-index) on a cache that holds the whole remote store,
    /// with no writer anywhere, then makes the remote what `body` left: new files uploaded,
    /// chains swapped, files `body` removed deleted from the remote.
    func maintain<Result>(_ store: Store, _ body: () throws(StoreError) -> Result) throws(StoreError) -> Result

    /// Brings every file of the remote store into the cache (`dumpinfo --verify`).
    func pullAll(into store: Store) throws(StoreError)

    /// The remote's packs: name and size.
    func packSizes() throws(StoreError) -> [String: Int64]
}

extension Store {
    /// Where the store is, for people: the remote's location, else the directory.
    public var location: String { remote?.location ?? path }

    /// The names (without suffix) of the cache's files of `kind`.
    public func cachedNames(_ kind: StoreFileKind) throws(StoreError) -> [String] {
        try directory.names(in: directory.descriptor(for: kind), dirName: kind.directoryName, suffix: kind.suffix)
    }

    /// The bytes of the cache's file `name` of `kind`.
    public func cachedBytes(_ kind: StoreFileKind, _ name: String) throws(StoreError) -> [UInt8] {
        try directory.readFile(
            kind.fileName(name), in: directory.descriptor(for: kind), dirName: kind.directoryName,
            limit: kind.readLimit)
    }

    /// The size of the cache's file `name` of `kind`, and when it was written there (seconds
    /// since the epoch: for eviction, oldest first); nil when the cache lacks it.
    public func cachedStatus(_ kind: StoreFileKind, _ name: String) -> (size: Int64, written: Int64)? {
        guard let status = try? directory.descriptor(for: kind).status(of: kind.fileName(name)) else { return nil }
        return (status.size, Int64(status.modified.tv_sec))
    }

    /// Puts `bytes` into the cache as file `name` of `kind` (written whole, then renamed into
    /// place). The caller checked them: a pack and a manifest are named by their hash, which is
    /// checked whenever they are read; a segment and a chain are checked when parsed.
    public func install(_ kind: StoreFileKind, _ name: String, _ bytes: [UInt8]) throws(StoreError) {
        try directory.publish(
            bytes, as: kind.fileName(name), in: directory.descriptor(for: kind), dirName: kind.directoryName)
    }

    /// Removes the cache's file `name` of `kind` (gone already is fine).
    public func uncache(_ kind: StoreFileKind, _ name: String) throws(StoreError) {
        try directory.remove(kind.fileName(name), in: directory.descriptor(for: kind), dirName: kind.directoryName)
    }

    /// Picks up index segments other processes wrote or removed: from the remote first, when
    /// the store has one.
    func refreshIndex() throws(StoreError) {
        if !maintenanceUnderWay { try remote?.refreshIndex(in: self) }
        try index.refresh()
    }

    /// Removes the cache's packs written there longest ago, while they hold more than `limit`
    /// bytes; only packs the index names go (those are on the remote), never the packs of a
    /// generation being written. Returns how many packs and bytes went.
    @discardableResult
    public func evictPacks(over limit: Int64) -> (packs: Int, bytes: Int64) {
        guard (try? index.refresh()) != nil, let names = try? cachedNames(.pack) else { return (0, 0) }
        var packs = names.compactMap { name in cachedStatus(.pack, name).map { (name, $0.size, $0.written) } }
        var total = packs.reduce(Int64(0)) { $0 + $1.1 }
        guard total > limit else { return (0, 0) }
        let indexed = Set(index.referencedPacks().map(\.hex))
        packs.sort { $0.2 < $1.2 }
        var removed = (packs: 0, bytes: Int64(0))
        for (name, size, _) in packs where total > limit && indexed.contains(name) {
            guard (try? uncache(.pack, name)) != nil else { continue }
            total -= size
            removed.packs += 1
            removed.bytes += size
        }
        return removed
    }

    /// Reads a file of the cache, fetched from the remote first when the cache lacks it.
    func readThroughCache(_ kind: StoreFileKind, _ name: String) throws(StoreError) -> [UInt8] {
        do {
            return try cachedBytes(kind, name)
        } catch .system(let errno, let operation, let path) where errno == .noSuchFile {
            guard let remote, try remote.fetch(kind, name, into: self) else {
                throw StoreError.system(
                    errno, operation: operation, path: remote.map { _ in remotePath(kind, name) } ?? path)
            }
            return try cachedBytes(kind, name)
        }
    }

    /// Runs a maintenance operation (gc, rebase, rebuild-index): on a cache, through the
    /// remote's `maintain` (the whole store in the cache, no writer anywhere, the result pushed).
    func maintaining<Result>(_ body: () throws(StoreError) -> Result) throws(StoreError) -> Result {
        guard let remote, !maintenanceUnderWay else { return try body() }
        maintenanceUnderWay = true
        defer { maintenanceUnderWay = false }
        return try remote.maintain(self, body)
    }

    /// Brings the packs holding `map`'s pages into the cache before they are read, several at a
    /// time, for a store whose directory caches a remote one (nothing otherwise).
    func prefetchPacks(for map: PageMap) throws(StoreError) {
        guard let remote else { return }
        try refreshIndex()
        var packs: Set<ChunkID> = []
        var last: ChunkID?
        for entry in map.pages where entry.chunk != .zeroPage {
            guard let location = index.lookup(entry.chunk), location.pack != last else { continue }
            last = location.pack
            packs.insert(location.pack)
        }
        let cached = Set(try cachedNames(.pack))
        try remote.fetch(packs: packs.map(\.hex).filter { !cached.contains($0) }, into: self)
    }

    /// Where file `name` of `kind` is on the remote, for messages.
    func remotePath(_ kind: StoreFileKind, _ name: String) -> String {
        "\(location)/\(kind.directoryName)/\(kind.fileName(name))"
    }
}

extension StoreDirectory {
    func descriptor(for kind: StoreFileKind) -> FileDescriptor {
        switch kind {
        case .pack: return packs
        case .index: return index
        case .manifest: return manifests
        case .chain, .lineage: return chains
        }
    }
}
