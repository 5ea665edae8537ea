import Syscall

/// A rebuilt page map kept beside a generation (`snapshots/<manifest id>.map`), so that a long
/// chain rebuilds from the nearest snapshot instead of its base. Purely a cache: a missing or
/// damaged snapshot is ignored and the chain is read instead.
///
///     "CHPXSNAP" u32 version, manifest id(16), page delta (pages only), u64 XXH3-64
enum Snapshot {
    static let version: UInt32 = 1
    /// Generations between snapshots on a chain.
    static let interval = 32

    static func fileName(_ manifest: ChunkID) -> String { "\(manifest.hex).map" }

    static func write(_ map: PageMap, for manifest: ChunkID, in directory: StoreDirectory) throws(StoreError) {
        let delta = PageDelta(full: map)
        var writer = BinaryWriter(capacity: 64 + delta.encodedSize)
        writer.append(magic: "CHPXSNAP")
        writer.append(version)
        writer.append(manifest)
        delta.encode(into: &writer)
        writer.appendChecksum()
        try directory.publish(writer.bytes, as: fileName(manifest), in: directory.snapshots, dirName: "snapshots")
    }

    static func read(_ manifest: ChunkID, in directory: StoreDirectory) throws(StoreError) -> PageMap {
        let name = fileName(manifest)
        let file = "\(directory.path)/snapshots/\(name)"
        let bytes = try directory.readFile(
            name, in: directory.snapshots, dirName: "snapshots", limit: GenerationManifest.maxSize)
        return try bytes.withRawBytes { (raw) throws(StoreError) in
            var reader = BinaryReader(raw, file: file)
            try reader.expect(magic: "CHPXSNAP")
            let version: UInt32 = try reader.read()
            guard version == Self.version else {
                throw StoreError.malformed(file: file, reason: "snapshot format \(version) is unknown")
            }
            guard try reader.readID() == manifest else {
                throw StoreError.malformed(file: file, reason: "it belongs to another manifest")
            }
            let delta = try PageDelta.decode(from: &reader)
            try reader.verifyChecksum()
            guard delta.unmapped.isEmpty else {
                throw StoreError.malformed(file: file, reason: "a snapshot has no unmapped ranges")
            }
            return PageMap(pages: delta.pages)
        }
    }

    /// Whether generation `position` of `chain` should get a snapshot: `interval` generations
    /// since the last full generation or snapshot.
    static func isDue(_ chain: Chain, position: Int, existing: Set<String>) -> Bool {
        var depth = 0
        var i = position
        while i >= 0 {
            let entry = chain.entries[i]
            if entry.kind == .full || (i != position && existing.contains(entry.manifest.hex)) { break }
            depth += 1
            i -= 1
        }
        return depth >= interval
    }
}
