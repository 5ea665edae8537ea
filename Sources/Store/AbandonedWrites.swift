import Syscall

/// What failed or killed writers left behind: packs no index entry names (a generation publishes
/// its packs before its index segment, at commit) and files in tmp/ (packs and other files
/// being written). None of it is part of any generation.
public struct AbandonedWrites: Sendable, Equatable {
    public var packs = 0
    public var packBytes: Int64 = 0
    public var temporaryFiles = 0
    public var temporaryBytes: Int64 = 0

    public var bytes: Int64 { packBytes + temporaryBytes }
    public var isEmpty: Bool { packs == 0 && temporaryFiles == 0 }
}

extension ChunkIndex {
    /// Every pack an index entry names: the union of the segments' pack tables. A pack outside it
    /// cannot be reached by any lookup, whatever its trailer lists.
    func referencedPacks() -> Set<ChunkID> {
        var packs: Set<ChunkID> = []
        for segment in segments { packs.formUnion(segment.packs) }
        return packs
    }
}

extension Store {
    /// What failed or killed writers left, as of now; nil while a writer, GC, rebase or
    /// rebuild-index is in flight (its packs are not indexed yet and its tmp/ files are being
    /// written: they only look abandoned) or while the index is damaged (`cpx rebuild-index`).
    public func abandonedWrites() throws(StoreError) -> AbandonedWrites? {
        try withNoWriter { () throws(StoreError) in try findAbandoned().0 }
    }

    /// Removes what failed or killed writers left (packs no index entry names, files in tmp/),
    /// when no writer, GC, rebase or rebuild-index is in flight, without waiting for one; returns
    /// what it removed, or nil when it could not look. Every writing command calls it first.
    @discardableResult
    public func reclaimAbandonedWrites() throws(StoreError) -> AbandonedWrites? {
        try withNoWriter { () throws(StoreError) -> AbandonedWrites in
            let (found, packs, temporaries) = try findAbandoned()
            for pack in packs {
                try directory.remove(PackFormat.fileName(pack), in: directory.packs, dirName: "packs")
            }
            if !packs.isEmpty { try directory.sync(directory.packs, dirName: "packs") }
            for name in temporaries { try directory.remove(name, in: directory.tmp, dirName: "tmp") }
            return found
        }
    }

    /// Removes packs an abandoned generation published, unless an index entry names one (a pack
    /// is named by its bytes: another writer may have published the same one and indexed it).
    func removeUnreferenced(_ published: [ChunkID]) {
        guard !published.isEmpty, (try? index.refresh()) != nil, index.damaged.isEmpty else { return }
        let referenced = index.referencedPacks()
        for pack in published where !referenced.contains(pack) {
            try? directory.remove(PackFormat.fileName(pack), in: directory.packs, dirName: "packs")
        }
        try? directory.sync(directory.packs, dirName: "packs")
    }

    /// Runs `body` holding gc.lock and store.lock exclusively, taken without waiting; nil when
    /// either is held or the index is damaged.
    private func withNoWriter<Result>(
        _ body: () throws(StoreError) -> Result
    ) throws(StoreError) -> Result? {
        guard let maintenance = try StoreLock.ifFree(.gc, .exclusive, in: directory) else { return nil }
        return try withExtendedLifetime(maintenance) { () throws(StoreError) -> Result? in
            guard let writers = try StoreLock.ifFree(.store, .exclusive, in: directory) else { return nil }
            return try withExtendedLifetime(writers) { () throws(StoreError) -> Result? in
                try index.refresh()
                guard index.damaged.isEmpty else { return nil }
                return try body()
            }
        }
    }

    /// Under `withNoWriter`: the abandoned packs and tmp/ files, and their totals.
    private func findAbandoned() throws(StoreError) -> (AbandonedWrites, packs: [ChunkID], temporaries: [String]) {
        let referenced = index.referencedPacks()
        var found = AbandonedWrites()
        var packs: [ChunkID] = []
        for name in try directory.names(in: directory.packs, dirName: "packs", suffix: "pack") {
            guard let id = ChunkID(hex: name), !referenced.contains(id) else { continue }
            packs.append(id)
            found.packs += 1
            found.packBytes += (try? directory.packs.status(of: name + ".pack").size) ?? 0
        }
        let temporaries: [String]
        do { temporaries = try directory.tmp.entries() } catch { throw error.store("list", "\(path)/tmp") }
        for name in temporaries {
            found.temporaryFiles += 1
            found.temporaryBytes += (try? directory.tmp.status(of: name).size) ?? 0
        }
        return (found, packs, temporaries)
    }
}
