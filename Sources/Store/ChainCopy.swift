import Syscall

/// What `Store.copyChain` did.
public struct ChainCopyReport: Sendable {
    public var chain: String
    /// Generations the destination had already (the same, byte for byte) and kept.
    public var generationsPresent = 0
    /// Generations copied.
    public var generationsCopied = 0
    /// Chunks copied (read, checked against their ids, packed again).
    public var chunksCopied = 0
    /// Chunks the destination had already.
    public var chunksPresent = 0
    /// Bytes the copied chunks take in the destination's packs.
    public var storedBytes: Int64 = 0
}

extension Store {
    /// Copies chain `name` to `destination` (another store: a local one and one on S3, either
    /// way): its manifests byte for byte (same ids, so the copy is the same chain, tamper-evident
    /// alike), every chunk they reference that the destination lacks (each rehashed against its
    /// id as it is read), and its lineage. A destination holding the chain already must hold a
    /// prefix of it (an earlier copy): only the newer generations go. The destination commits
    /// the copy as one generation would: new packs, one index segment, the manifests, then the
    /// chain (on S3, the chain's swap); killed before, it leaves only garbage for `cpx gc`.
    /// `progress`: (generations done, generations to copy).
    public func copyChain(
        _ name: String, to destination: Store, progress: ((Int, Int) -> Void)? = nil
    ) throws(StoreError) -> ChainCopyReport {
        let source = try chain(name)
        let claim = try ChainClaim(store: destination, chain: name)
        return try withExtendedLifetime(claim) { () throws(StoreError) -> ChainCopyReport in
            let lock = try StoreLock(.store, .shared, in: destination.directory)
            let hold = try destination.remote?.beginGeneration(chain: name)
            return try withExtendedLifetime((lock, hold)) { () throws(StoreError) -> ChainCopyReport in
                try copy(source, to: destination, progress: progress)
            }
        }
    }

    /// `copyChain` with the destination's chain claimed and its shared lock held.
    private func copy(
        _ source: Chain, to destination: Store, progress: ((Int, Int) -> Void)?
    ) throws(StoreError) -> ChainCopyReport {
        var report = ChainCopyReport(chain: source.name)
        let existing = try destination.chainOrEmpty(source.name)
        guard existing.entries.count <= source.entries.count,
            Array(source.entries.prefix(existing.entries.count)) == existing.entries
        else {
            let differs =
                existing.entries.indices.first { k in
                    k >= source.entries.count || existing.entries[k] != source.entries[k]
                }
                .map { existing.entries[$0].generation } ?? 0
            throw .invalidArgument(
                "chain '\(source.name)' in \(destination.location) is not an earlier copy of the one in \(location) "
                    + "(they differ from generation \(differs) on): remove it there, or copy into another store")
        }
        report.generationsPresent = existing.entries.count
        let todo = Array(source.entries.dropFirst(existing.entries.count))
        guard !todo.isEmpty else { return report }

        try destination.refreshIndex()
        let packer = ChunkPacker(directory: destination.directory)
        var published = false
        do throws(StoreError) {
            var seen: Set<ChunkID> = []
            var manifests: [(ChunkID, [UInt8])] = []
            let reader = self.reader()
            for (done, entry) in todo.enumerated() {
                let manifest = try checkedManifest(entry, in: source)
                manifests.append((entry.manifest, try readThroughCache(.manifest, entry.manifest.hex)))
                var needed: [PageEntry] = []
                for page in manifest.delta.pages where page.chunk != .zeroPage && seen.insert(page.chunk).inserted {
                    if destination.index.lookup(page.chunk) != nil {
                        report.chunksPresent += 1
                    } else {
                        needed.append(page)
                    }
                }
                do {
                    try reader.readPages(PageMap(pages: needed)) { page, bytes in
                        try packer.add(page.chunk, page: bytes)
                    }
                } catch let error as StoreError {
                    throw error
                } catch {
                    throw StoreError.invalidArgument("\(error)")
                }
                report.chunksCopied += needed.count
                progress?(done + 1, todo.count)
            }
            _ = try packer.finish()
            report.storedBytes = Int64(packer.storedBytes)
            let (chunks, packs) = try packer.takeChunks()
            try destination.remote?.upload(packs: packs, from: destination)
            let segment = try destination.index.add(chunks, packs: packs)
            published = true
            for (id, bytes) in manifests {
                try destination.directory.publish(
                    bytes, as: GenerationManifest.fileName(id), in: destination.directory.manifests,
                    dirName: "manifests")
            }
            var copied = existing
            copied.entries = source.entries
            copied.nextGeneration = source.nextGeneration
            try destination.remote?.commit(copied, segment: segment, manifests: manifests.map(\.0), in: destination)
            try destination.publish(copied)
            report.generationsCopied = todo.count
            if let lineage = try? lineage(of: source.name) { try destination.publish(lineage) }
            return report
        } catch {
            packer.discard()
            if !published { destination.removeUnreferenced(packer.finished) }
            throw error
        }
    }
}
