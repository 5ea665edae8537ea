#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Syscall

/// A chpox store: chains of generations over a deduplicating, compressed chunk store.
/// See StoreDirectory for the layout and StoreLock for the lock protocol.
public final class Store: @unchecked Sendable {
    public let path: String
    let directory: StoreDirectory
    let index: ChunkIndex
    /// Where the store's files really live when `path` is a cache of them (the store on S3);
    /// nil for a store that is its directory.
    public let remote: StoreRemote?
    /// Inside `maintaining`: the remote's maintenance is under way, the cache holds everything.
    var maintenanceUnderWay = false

    /// Opens the store at `path`; with `create`, makes it (0700) when missing or empty.
    /// `reading`: to read it (inspect, restart): the caller's own store opens as usual, and
    /// root may open another user's, read-only (`isReadOnly`).
    /// `remote`: `path` is a cache of the store `remote` holds (`StoreRemote`).
    public init(
        at path: String, create: Bool = false, reading: Bool = false, remote: StoreRemote? = nil
    ) throws(StoreError) {
        self.path = path
        self.remote = remote
        directory = try StoreDirectory(path: path, create: create || remote != nil, reading: reading && remote == nil)
        if remote != nil { try directory.requireWritable("cache the store \(remote!.location)") }
        index = try ChunkIndex(directory: directory)
        // ChunkIndex read the directory's segments; a cache first takes the remote's.
        if remote != nil { try refreshIndex() }
    }

    /// The user whose store it is: the one who can have written it, so whom its images can
    /// at most become (docs/threat-model.md).
    public var owner: UInt32 { directory.owner }

    /// The group of the store's directory.
    public var ownerGroup: UInt32 { directory.ownerGroup }

    /// Removes the store again when this open created it and nothing was stored in it: a
    /// command that fails before its first generation leaves no empty store behind.
    @discardableResult
    public func discardIfUnused() -> Bool { directory.removeIfUnused() }

    /// Whether it is another user's, opened to read: nothing in it is written.
    public var isReadOnly: Bool { directory.readOnly }

    /// `$CHPOX_STORE`, else `$XDG_STATE_HOME/chpox`, else `~/.local/state/chpox`.
    public static func defaultPath(environment: [String: String]) -> String {
        if let explicit = environment["CHPOX_STORE"], !explicit.isEmpty { return explicit }
        if let state = environment["XDG_STATE_HOME"], !state.isEmpty { return state + "/chpox" }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "/root"
        return home + "/.local/state/chpox"
    }

    // MARK: Chains and manifests

    public func chainNames() throws(StoreError) -> [String] {
        if let remote { return try remote.chainNames().filter(Chain.isValidName).sorted() }
        return try directory.names(in: directory.chains, dirName: "chains", suffix: "chain").filter(Chain.isValidName)
            .sorted()
    }

    /// `requested`, or the store's only chain when none is named.
    public func chainName(_ requested: String?) throws(StoreError) -> String {
        if let requested { return requested }
        let names = try chainNames()
        guard names.count == 1 else {
            throw .invalidArgument(
                names.isEmpty
                    ? "the store \(path) holds no chains yet"
                    : "the store holds \(names.count) chains (\(names.joined(separator: ", "))): name one with --name")
        }
        return names[0]
    }

    /// The chain `name`, as last committed.
    public func chain(_ name: String) throws(StoreError) -> Chain {
        guard Chain.isValidName(name) else { throw .invalidChainName(name) }
        try remote?.refresh(.chain, chain: name, in: self)
        let bytes: [UInt8]
        do {
            bytes = try directory.readFile(
                Chain.fileName(name), in: directory.chains, dirName: "chains", limit: Chain.maxSize)
        } catch .system(let errno, _, _) where errno == .noSuchFile {
            throw .noSuchChain(name)
        }
        let file = "\(path)/chains/\(Chain.fileName(name))"
        let chain = try bytes.withRawBytes { (raw) throws(StoreError) in try Chain(decoding: raw, file: file) }
        guard chain.name == name else { throw .malformed(file: file, reason: "it names chain '\(chain.name)'") }
        return chain
    }

    /// The chain, or an empty one when it does not exist yet.
    func chainOrEmpty(_ name: String) throws(StoreError) -> Chain {
        do { return try chain(name) } catch .noSuchChain { return Chain(name: name, nextGeneration: 0, entries: []) }
    }

    func publish(_ chain: Chain) throws(StoreError) {
        try directory.publish(chain.encoded(), as: Chain.fileName(chain.name), in: directory.chains, dirName: "chains")
    }

    /// Reads manifest `id` and checks that its bytes hash to `id`.
    public func manifest(_ id: ChunkID) throws(StoreError) -> GenerationManifest {
        let name = GenerationManifest.fileName(id)
        let file = "\(path)/manifests/\(name)"
        let bytes = try readThroughCache(.manifest, id.hex)
        return try bytes.withRawBytes { (raw) throws(StoreError) in
            guard ChunkID(hashing: raw) == id else {
                throw StoreError.malformed(file: file, reason: "its bytes do not hash to its id (altered or damaged)")
            }
            return try GenerationManifest(decoding: raw, file: file)
        }
    }

    /// Manifest of `generation` in `chain`, checked against the chain's record of it.
    public func manifest(chain name: String, generation: UInt64) throws(StoreError) -> GenerationManifest {
        let chain = try chain(name)
        guard let entry = chain.entry(generation) else { throw .noSuchGeneration(chain: name, generation: generation) }
        return try checkedManifest(entry, in: chain)
    }

    func checkedManifest(_ entry: Chain.Entry, in chain: Chain) throws(StoreError) -> GenerationManifest {
        let manifest: GenerationManifest
        do { manifest = try self.manifest(entry.manifest) } catch {
            throw .brokenChain(chain: chain.name, generation: entry.generation, reason: "\(error)")
        }
        guard manifest.generation == entry.generation, manifest.chain == chain.name, manifest.kind == entry.kind else {
            throw .brokenChain(
                chain: chain.name, generation: entry.generation,
                reason: "manifest \(entry.manifest.short) belongs to another generation")
        }
        let position = chain.entries.firstIndex(of: entry)!
        let expectedParent = position > 0 ? chain.entries[position - 1].manifest : nil
        guard manifest.parent == expectedParent else {
            throw .brokenChain(
                chain: chain.name, generation: entry.generation, reason: "its parent link does not match the chain")
        }
        return manifest
    }

    // MARK: Rebuild

    /// Generation `generation`'s full page map: the nearest snapshot or full generation at or
    /// before it, with the deltas since composed and applied once. Snapshots are written every
    /// `SnapshotPolicy.interval` generations, so the work is bounded by the result's size plus
    /// at most that many deltas, whatever the chain's length.
    public func pageMap(chain name: String, generation: UInt64) throws(StoreError) -> PageMap {
        let chain = try chain(name)
        guard let position = chain.entries.firstIndex(where: { $0.generation == generation }) else {
            throw .noSuchGeneration(chain: name, generation: generation)
        }
        return try pageMap(chain, position: position)
    }

    /// Generation `generation` (default: the chain's newest): its chain entry, its manifest
    /// (metadata, statistics) and its full page map, the manifest read and decoded once for
    /// both: what inspecting or restarting a generation needs.
    public func rebuild(
        chain name: String, generation: UInt64?
    ) throws(StoreError)
        -> (entry: Chain.Entry, manifest: GenerationManifest, map: PageMap)
    {
        let chain = try chain(name)
        guard let target = generation ?? chain.head?.generation else { throw .noSuchChain(name) }
        guard let position = chain.entries.firstIndex(where: { $0.generation == target }) else {
            throw .noSuchGeneration(chain: name, generation: target)
        }
        let entry = chain.entries[position]
        let manifest = try checkedManifest(entry, in: chain)
        return (entry, manifest, try pageMap(chain, position: position, newest: manifest))
    }

    /// `newest`: the manifest at `position`, when the caller has read it already.
    func pageMap(_ chain: Chain, position: Int, newest: GenerationManifest? = nil) throws(StoreError) -> PageMap {
        var deltas: [PageDelta] = []
        var base = PageMap.empty
        var i = position
        while true {
            let entry = chain.entries[i]
            if let snapshot = try? Snapshot.read(entry.manifest, in: directory) {
                base = snapshot
                break
            }
            let manifest: GenerationManifest
            if i == position, let newest { manifest = newest } else { manifest = try checkedManifest(entry, in: chain) }
            deltas.append(manifest.delta)
            if manifest.kind == .full { break }
            guard i > 0 else {
                throw .brokenChain(
                    chain: chain.name, generation: entry.generation, reason: "no full generation before it")
            }
            i -= 1
        }
        return PageDelta.compose(deltas.reversed()).applied(to: base)
    }

    // MARK: Writing

    /// Starts generation `nextGeneration` of chain `name` (creating the chain), claiming the chain
    /// for this generation only (a run of generations claims it once: `ChainClaim`). The first
    /// generation of a chain is always full; `full` forces a full one later.
    public func beginGeneration(chain name: String, full: Bool = false) throws(StoreError) -> GenerationWriter {
        try GenerationWriter(store: self, chain: name, full: full)
    }

    public func reader() -> ChunkReader { ChunkReader(store: self) }
}

extension Store {
    /// Counts for `dumpinfo --stats`.
    public struct Totals: Sendable {
        public var chains: Int
        public var uniqueChunks: Int
        public var packs: Int
        public var packBytes: Int64
        /// What failed or killed writers left (included in `packs` and `packBytes`); nil while a
        /// writer is in flight, when it cannot be told apart from what that writer is writing.
        public var abandoned: AbandonedWrites?
    }

    public func totals() throws(StoreError) -> Totals {
        try refreshIndex()
        if let remote {
            let packs = try remote.packSizes()
            return Totals(
                chains: try chainNames().count, uniqueChunks: index.entryCount, packs: packs.count,
                packBytes: packs.values.reduce(0, +), abandoned: nil)
        }
        let packs = try directory.names(in: directory.packs, dirName: "packs", suffix: "pack")
        let bytes = packs.reduce(Int64(0)) { $0 + ((try? directory.packs.status(of: $1 + ".pack").size) ?? 0) }
        return Totals(
            chains: try chainNames().count, uniqueChunks: index.entryCount, packs: packs.count, packBytes: bytes,
            abandoned: try abandonedWrites())
    }
}
