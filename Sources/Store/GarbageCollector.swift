#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Syscall

/// Which generations GC keeps. A generation is kept when any rule keeps it; with no rule at
/// all, every generation is kept and GC only sweeps. The newest generation of every chain is
/// always kept (a writer may be continuing it).
public struct RetentionPolicy: Sendable {
    public var keepLast: Int?
    /// Keep generations created within this many nanoseconds before now.
    public var keepWithinNanoseconds: Int64?
    /// Generation numbers to keep.
    public var keep: Set<UInt64> = []
    /// Chains the rules apply to; nil means all. Other chains keep every generation.
    public var chains: Set<String>?

    public init(
        keepLast: Int? = nil, keepWithinNanoseconds: Int64? = nil, keep: Set<UInt64> = [], chains: Set<String>? = nil
    ) {
        self.keepLast = keepLast
        self.keepWithinNanoseconds = keepWithinNanoseconds
        self.keep = keep
        self.chains = chains
    }

    var hasRules: Bool { keepLast != nil || keepWithinNanoseconds != nil || !keep.isEmpty }

    func kept(_ chain: Chain, now: Int64) -> Set<UInt64> {
        let all = Set(chain.entries.map(\.generation))
        guard hasRules, chains?.contains(chain.name) ?? true else { return all }
        var kept = keep.intersection(all)
        if let keepLast { kept.formUnion(chain.entries.suffix(max(keepLast, 0)).map(\.generation)) }
        if let within = keepWithinNanoseconds {
            kept.formUnion(chain.entries.filter { now - $0.createdNanoseconds <= within }.map(\.generation))
        }
        if let head = chain.head { kept.insert(head.generation) }
        return kept
    }
}

/// What GC did, or would do with `dryRun`.
public struct GCReport: Sendable {
    public var dryRun = false
    public var dropped: [GenerationRef] = []
    public var rewrittenManifests = 0
    public var keptGenerations = 0
    public var liveChunks = 0
    public var deadChunks = 0
    public var packsDeleted = 0
    public var packsRepacked = 0
    public var packsWritten = 0
    public var packBytesBefore: Int64 = 0
    public var packBytesAfter: Int64 = 0
    /// Reclaimed bytes (estimated under dry run: whole dead packs plus dead frames of packs
    /// that would be repacked).
    public var bytesFreed: Int64 = 0
    public var manifestsRemoved = 0
    public var seconds: Double = 0
}

/// How much the chains share and how much a sweep would free (`dumpinfo --stats`).
public struct StoreSharing: Sendable {
    /// Distinct chunks the generations of all chains reference.
    public var referencedChunks = 0
    /// Distinct chunks each chain references, summed over chains: over `referencedChunks`,
    /// how much deduplication across chains saves.
    public var referencesByChain = 0
    /// Indexed chunks no generation references.
    public var deadChunks = 0
    /// What deleting dead packs and repacking every pack with dead chunks would free (estimate).
    public var reclaimableBytes: Int64 = 0
    public var acrossChainsRatio: Double? {
        referencedChunks > 0 ? Double(referencesByChain) / Double(referencedChunks) : nil
    }
}

extension Store {
    /// Sharing and garbage as of now, under a shared lock (writers go on).
    public func sharing() throws(StoreError) -> StoreSharing {
        try StoreLock.withLock(.store, .shared, in: directory) { () throws(StoreError) -> StoreSharing in
            let plan = try planCollection(
                RetentionPolicy(), now: ClockTime.realtime(), repackThreshold: 1, checkingDamage: false)
            let withDead = Set(plan.dead.filter { $0.value > 0 }.keys)
            return StoreSharing(
                referencedChunks: plan.referenced.count, referencesByChain: plan.referencesByChain,
                deadChunks: plan.dead.values.reduce(0, +),
                reclaimableBytes: plan.estimatedFreedBytes(repacking: withDead))
        }
    }

    /// Small packs are merged when at least this many exist.
    static let smallPacksToMerge = 4

    /// Applies `policy`, merges each dropped generation into its successor (so every kept
    /// generation rebuilds byte for byte, with its number unchanged), marks the chunks the kept
    /// generations reference, deletes packs with none and repacks packs whose dead share is over
    /// `repackThreshold`, and merges small packs. Holds the exclusive store lock: writers in flight finish first.
    public func collectGarbage(
        _ policy: RetentionPolicy, dryRun: Bool = false, repackThreshold: Double = 0.3
    ) throws(StoreError) -> GCReport {
        // One GC (or rebase, or rebuild-index) at a time.
        try maintaining { () throws(StoreError) -> GCReport in
            try StoreLock.withLock(.gc, .exclusive, in: directory) { () throws(StoreError) -> GCReport in
                try collectGarbageAlone(policy, dryRun: dryRun, repackThreshold: repackThreshold)
            }
        }
    }

    /// `collectGarbage` under gc.lock.
    private func collectGarbageAlone(
        _ policy: RetentionPolicy, dryRun: Bool, repackThreshold: Double
    ) throws(StoreError) -> GCReport {
        let started = ClockTime.realtime()
        var report = GCReport()
        report.dryRun = dryRun

        // Phase 1, beside writers (shared lock): plan, and copy the live chunks out of the
        // packs worth repacking. New packs only: nothing is lost, nothing refers to them yet.
        var relocated: [ChunkID: ChunkLocation] = [:]
        let first = try StoreLock.withLock(.store, .shared, in: directory) { () throws(StoreError) in
            let first = try planCollection(policy, now: started, repackThreshold: repackThreshold)
            guard !first.repack.isEmpty else { return first }
            var moving: [(ChunkID, ChunkLocation)] = []
            try joinIndex(with: first.referenced) { (id, location, isLive) throws(StoreError) in
                if isLive && first.repack.contains(location.pack) { moving.append((id, location)) }
            }
            // In pack order, so each frame is decoded once.
            moving.sort { ($0.1.pack, $0.1.frameOffset, $0.1.slot) < ($1.1.pack, $1.1.frameOffset, $1.1.slot) }
            // A dry run reads (decodes and rehashes) what it would copy, so a corrupt frame makes it
            // refuse exactly as the real run would.
            let (moved, written) = try copyChunks(moving.map(\.0), writing: !dryRun)
            relocated = moved
            report.packsWritten = written
            return first
        }
        if dryRun {
            first.fill(&report)
            report.bytesFreed = first.estimatedFreedBytes(repacking: first.repack)
            report.packBytesAfter = report.packBytesBefore - report.bytesFreed
            report.manifestsRemoved = report.rewrittenManifests + report.dropped.count
            report.seconds = Double(ClockTime.realtime() - started) / 1e9
            return report
        }

        // Phase 2, exclusive: plan again against what writers committed meanwhile (rewriting
        // manifests is cheap), then publish and delete. Writers wait only for this part.
        return try StoreLock.withLock(.store, .exclusive, in: directory) { () throws(StoreError) -> GCReport in
            let final = try planCollection(policy, now: started, repackThreshold: repackThreshold)
            final.fill(&report)
            // A repacked pack goes only if every chunk live in it now was copied out; a writer may
            // have come to need a chunk phase 1 found dead.
            var keep: Set<ChunkID> = []
            try joinIndex(with: final.referenced) { (id, location, isLive) throws(StoreError) in
                if isLive && first.repack.contains(location.pack) && relocated[id] == nil { keep.insert(location.pack) }
            }
            let repacked = first.repack.subtracting(keep).intersection(final.packSizes.keys)
            // The packs phase 1 wrote are not indexed yet: they only look unreferenced.
            let written = Set(relocated.values.map(\.pack))
            report.packsRepacked = repacked.count
            report.packsDeleted = final.deletable.subtracting(written).count
            report.packBytesBefore = final.packSizes.filter { !written.contains($0.key) }.values.reduce(0, +)

            for plan in final.chains {
                for (id, bytes) in plan.manifests {
                    try directory.publish(
                        bytes, as: GenerationManifest.fileName(id), in: directory.manifests, dirName: "manifests")
                }
                if plan.new != plan.old { try publish(plan.new) }  // each chain's commit point
            }
            // The new index: live chunks only, at their new places; then delete what is dead.
            try index.replaceAll { (writer) throws(StoreError) in
                try joinIndex(with: final.referenced) { (id, location, isLive) throws(StoreError) in
                    if isLive { try writer.add(id, relocated[id] ?? location) }
                }
            }
            for pack in final.deletable.subtracting(written).union(repacked) {
                try directory.remove(PackFormat.fileName(pack), in: directory.packs, dirName: "packs")
            }
            try directory.sync(directory.packs, dirName: "packs")
            let keptManifests = Set(final.chains.flatMap { $0.new.entries.map(\.manifest.hex) })
            for name in try directory.names(in: directory.manifests, dirName: "manifests", suffix: "gen")
            where !keptManifests.contains(name) {
                try directory.remove(name + ".gen", in: directory.manifests, dirName: "manifests")
                report.manifestsRemoved += 1
            }
            for name in try directory.names(in: directory.snapshots, dirName: "snapshots", suffix: "map")
            where !keptManifests.contains(name) {
                try directory.remove(name + ".map", in: directory.snapshots, dirName: "snapshots")
            }
            // No writer is in flight under the exclusive lock: whatever is in tmp/ is left over.
            for name in (try? directory.tmp.entries()) ?? [] { try? directory.tmp.removeFile(name) }

            for name in try directory.names(in: directory.packs, dirName: "packs", suffix: "pack") {
                report.packBytesAfter += (try? directory.packs.status(of: name + ".pack").size) ?? 0
            }
            report.bytesFreed = report.packBytesBefore - report.packBytesAfter
            report.seconds = Double(ClockTime.realtime() - started) / 1e9
            return report
        }
    }

    /// What a collection would do now: each chain rewritten for retention, the chunks the kept
    /// generations reference, live and dead chunks per pack, and which packs go or are repacked.
    struct CollectionPlan {
        var chains: [(old: Chain, new: Chain, manifests: [(ChunkID, [UInt8])])] = []
        var dropped: [GenerationRef] = []
        var keptGenerations = 0
        var rewrittenManifests = 0
        /// Sorted, unique.
        var referenced: [ChunkID] = []
        var live: [ChunkID: Int] = [:]
        var dead: [ChunkID: Int] = [:]
        var packSizes: [ChunkID: Int64] = [:]
        var deletable: Set<ChunkID> = []
        var repack: Set<ChunkID> = []

        /// Distinct chunks each chain references, summed over chains.
        var referencesByChain = 0

        /// Bytes freed by deleting the dead packs and repacking `packs`: each repacked pack
        /// loses its dead share (an estimate: frames compress differently).
        func estimatedFreedBytes(repacking packs: Set<ChunkID>) -> Int64 {
            deletable.reduce(0) { $0 + packSizes[$1]! }
                + packs.subtracting(deletable).reduce(0) { total, pack in
                    let l = Int64(live[pack, default: 0]), d = Int64(dead[pack, default: 0])
                    return total + (l + d > 0 ? packSizes[pack, default: 0] * d / (l + d) : 0)
                }
        }

        func fill(_ report: inout GCReport) {
            report.dropped = dropped
            report.keptGenerations = keptGenerations
            report.rewrittenManifests = rewrittenManifests
            report.liveChunks = live.values.reduce(0, +)
            report.deadChunks = dead.values.reduce(0, +)
            report.packBytesBefore = packSizes.values.reduce(0, +)
            report.packsDeleted = deletable.count
            report.packsRepacked = repack.count
        }
    }

    /// With `checkingDamage`, refuses (`StoreError.damaged`) when a chunk of a generation the
    /// plan drops or rewrites, or a live chunk of a pack it repacks, fails `ChunkProbe`'s
    /// structural check. Nothing is decompressed here: merging moves chunk ids, never bytes, so
    /// a frame whose bytes are bad is no worse after GC than before, and the chunks GC does copy
    /// (repacking) are decoded and rehashed as they are copied, in a dry run too. A dry run plans
    /// with the same checks, so it refuses whenever the real run would.
    func planCollection(
        _ policy: RetentionPolicy, now: Int64, repackThreshold: Double, checkingDamage: Bool = true
    ) throws(StoreError) -> CollectionPlan {
        try index.refresh()
        guard index.damaged.isEmpty else {
            throw .invalidArgument(
                "the index is damaged (\(index.damaged.map(\.name).joined(separator: ", "))): "
                    + "run `cpx rebuild-index` before GC"
            )
        }
        var plan = CollectionPlan()
        var probe = ChunkProbe(store: self)
        // Retention: new chains, with dropped generations merged into their successors.
        for name in try chainNames() {
            let chain = try self.chain(name)
            let kept = policy.kept(chain, now: now)
            let rewritten = try rewrite(chain, keeping: kept, makingFull: [])
            if checkingDamage {
                for (generation, chunks) in rewritten.touched {
                    let ref = GenerationRef(chain: name, generation: generation)
                    for chunk in chunks { probe.check(chunk, usedBy: ref) }
                }
            }
            plan.dropped += chain.entries.filter { !kept.contains($0.generation) }.map {
                GenerationRef(chain: name, generation: $0.generation)
            }
            plan.keptGenerations += rewritten.chain.entries.count
            plan.rewrittenManifests += rewritten.manifests.count
            plan.referenced += rewritten.referenced
            plan.referencesByChain += rewritten.referenced.sorted().uniqued().count
            plan.chains.append((chain, rewritten.chain, rewritten.manifests))
        }
        plan.referenced.sort()
        plan.referenced = plan.referenced.uniqued()
        // Mark: a merge-join of the sorted index with the sorted referenced ids, counting live
        // and dead chunks per pack; nothing per chunk is held but the referenced ids.
        var live: [ChunkID: Int] = [:], dead: [ChunkID: Int] = [:]
        try joinIndex(with: plan.referenced) { (_, location, isLive) throws(StoreError) in
            if isLive { live[location.pack, default: 0] += 1 } else { dead[location.pack, default: 0] += 1 }
        }
        plan.live = live
        plan.dead = dead
        for name in try directory.names(in: directory.packs, dirName: "packs", suffix: "pack") {
            guard let id = ChunkID(hex: name) else { continue }
            plan.packSizes[id] = (try? directory.packs.status(of: name + ".pack").size) ?? 0
        }
        plan.deletable = Set(plan.packSizes.keys.filter { live[$0, default: 0] == 0 })
        let mostlyDead = Set(
            plan.packSizes.keys.filter { pack in
                let l = live[pack, default: 0], d = dead[pack, default: 0]
                return l > 0 && Double(d) / Double(l + d) > repackThreshold
            })
        // Every generation closes its own pack, so a long chain leaves many small ones:
        // four or more packs under a quarter of the target size are merged.
        let small = Set(
            plan.packSizes.keys.filter {
                live[$0, default: 0] > 0 && plan.packSizes[$0]! < Int64(PackFormat.targetSize / 4)
            })
        plan.repack = mostlyDead.union(small.count >= Self.smallPacksToMerge ? small : [])
        if checkingDamage {
            if !plan.repack.isEmpty {
                try joinIndex(with: plan.referenced) { (id, location, isLive) throws(StoreError) in
                    if isLive && plan.repack.contains(location.pack) { probe.check(id, at: location) }
                }
            }
            let damage = probe.finish()
            guard damage.isEmpty else { throw .damaged(operation: "gc", damage) }
        }
        return plan
    }

    /// Visits every index entry in id order with whether `referenced` (sorted, unique) has it.
    private func joinIndex(
        with referenced: [ChunkID], _ visit: (ChunkID, ChunkLocation, Bool) throws(StoreError) -> Void
    ) throws(StoreError) {
        var r = 0
        try ChunkIndex.mergeEntries(index.segments) { (id, location) throws(StoreError) in
            while r < referenced.count && referenced[r] < id { r += 1 }
            try visit(id, location, r < referenced.count && referenced[r] == id)
        }
    }

    /// Copies chunks into new packs and returns their new locations and how many packs were
    /// written. Without `writing`, only reads them (each checked against its id).
    private func copyChunks(
        _ ids: [ChunkID], writing: Bool = true
    ) throws(StoreError) -> ([ChunkID: ChunkLocation], Int) {
        let packer = ChunkPacker(directory: directory)
        // The reader takes a page map: number the chunks in the order given (pack order), so
        // each frame is decoded once.
        let map = PageMap(pages: ids.enumerated().map { PageEntry(page: UInt64($0.offset), chunk: $0.element) })
        do {
            try reader().readPages(map) { entry, page in if writing { try packer.add(entry.chunk, page: page) } }
            let packs = try packer.finish()
            return (Dictionary(try packer.takeLocations(), uniquingKeysWith: { first, _ in first }), packs.count)
        } catch {
            packer.discard()
            if let error = error as? StoreError { throw error }
            throw .invalidArgument("\(error)")
        }
    }
}

extension Array where Element: Equatable {
    /// A sorted array without repeats.
    func uniqued() -> [Element] {
        var result: [Element] = []
        result.reserveCapacity(count)
        for element in self where result.last != element { result.append(element) }
        return result
    }
}
