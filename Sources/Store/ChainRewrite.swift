#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Syscall

/// Rewriting a chain: dropped generations merged into the next kept one (GC's retention) and
/// generations made full (`rebase`), each kept generation still rebuilding byte for byte under
/// its own number.
extension Store {
    /// Rewrites `chain` so that only `kept` generations remain (each dropped one merged into the
    /// next kept one) and generations in `makingFull` become full. Returns the new chain, the
    /// manifests to publish (id, bytes), every chunk the kept generations reference, and the
    /// generations it touches (dropped, or kept with a new manifest) with the chunks their old
    /// and new deltas name: what GC must find intact before it changes anything.
    ///
    /// A generation whose delta changes gets statistics that describe the new delta: pages
    /// set, zero and unmapped are counted from it (a merged full generation reports every page
    /// it rebuilds, not the sum of what the merged generations wrote); new chunks and stored
    /// bytes stay the sum of what it and the generations merged into it added to the store.
    func rewrite(
        _ chain: Chain, keeping kept: Set<UInt64>, makingFull: Set<UInt64>
    ) throws(StoreError)
        -> (
            chain: Chain, manifests: [(ChunkID, [UInt8])], referenced: [ChunkID],
            touched: [(generation: UInt64, chunks: [ChunkID])]
        )
    {
        var entries: [Chain.Entry] = []
        var manifests: [(ChunkID, [UInt8])] = []
        var referenced: [ChunkID] = []
        var touched: [(generation: UInt64, chunks: [ChunkID])] = []
        var pending: [PageDelta] = []
        var pendingFull = false
        var pendingStatistics = GenerationManifest.Statistics()
        for (position, entry) in chain.entries.enumerated() {
            let manifest = try checkedManifest(entry, in: chain)
            if manifest.kind == .full {
                pending = []
                pendingFull = true
            }
            pending.append(manifest.delta)
            if !kept.contains(entry.generation) {
                pendingStatistics = pendingStatistics + manifest.statistics
                touched.append((entry.generation, manifest.delta.pages.map(\.chunk)))
                continue
            }
            var rewritten = manifest
            let mergesDropped = pending.count > 1 || (pendingFull && manifest.kind != .full)
            if makingFull.contains(entry.generation) && manifest.kind != .full {
                rewritten.kind = .full
                rewritten.delta = PageDelta(full: try pageMap(chain, position: position))
            } else if mergesDropped {
                let composed = PageDelta.compose(pending)
                rewritten.kind = pendingFull || entries.isEmpty ? .full : .delta
                rewritten.delta = rewritten.kind == .full ? PageDelta(full: composed.applied(to: .empty)) : composed
                rewritten.statistics = pendingStatistics + manifest.statistics
            }
            if entries.isEmpty && rewritten.kind != .full {
                // The first kept generation of a chain must stand alone.
                rewritten.kind = .full
                rewritten.delta = PageDelta(full: try pageMap(chain, position: position))
            }
            if rewritten.delta != manifest.delta {
                rewritten.statistics.pagesWritten = UInt64(rewritten.delta.pages.count)
                rewritten.statistics.zeroPages = UInt64(rewritten.delta.pages.count(where: { $0.chunk == .zeroPage }))
                rewritten.statistics.unmappedPages = rewritten.delta.unmappedPageCount
            }
            rewritten.parent = entries.last?.manifest
            pending = []
            pendingFull = false
            pendingStatistics = .init()

            var newEntry = entry
            if rewritten != manifest {
                let bytes = rewritten.encoded()
                let id = bytes.withUnsafeBytes { ChunkID(hashing: $0) }
                manifests.append((id, bytes))
                newEntry.manifest = id
                newEntry.kind = rewritten.kind
                newEntry.deltaEntries = UInt64(rewritten.delta.pages.count + rewritten.delta.unmapped.count)
                touched.append(
                    (entry.generation, manifest.delta.pages.map(\.chunk) + rewritten.delta.pages.map(\.chunk)))
            }
            entries.append(newEntry)
            for page in rewritten.delta.pages where page.chunk != .zeroPage { referenced.append(page.chunk) }
        }
        return (
            Chain(name: chain.name, nextGeneration: chain.nextGeneration, entries: entries), manifests, referenced,
            touched
        )
    }

    /// Makes `generation` of `chain` a full generation (its page map stored whole), so that
    /// rebuilding it and everything after it no longer reads older generations; those stay.
    public func rebase(chain name: String, generation: UInt64) throws(StoreError) -> Chain.Entry {
        try maintaining { () throws(StoreError) in try rebaseLocally(chain: name, generation: generation) }
    }

    private func rebaseLocally(chain name: String, generation: UInt64) throws(StoreError) -> Chain.Entry {
        try StoreLock.withMaintenanceLocks(in: directory) { () throws(StoreError) in
            let chain = try self.chain(name)
            guard chain.entry(generation) != nil else { throw .noSuchGeneration(chain: name, generation: generation) }
            let plan = try rewrite(chain, keeping: Set(chain.entries.map(\.generation)), makingFull: [generation])
            for (id, bytes) in plan.manifests {
                try directory.publish(
                    bytes, as: GenerationManifest.fileName(id), in: directory.manifests, dirName: "manifests")
            }
            try publish(plan.chain)
            return plan.chain.entry(generation)!
        }
    }
}
