import Syscall

/// A generation of a chain, by number.
public struct GenerationRef: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var chain: String
    public var generation: UInt64
    public init(chain: String, generation: UInt64) {
        self.chain = chain
        self.generation = generation
    }
    public static func < (a: GenerationRef, b: GenerationRef) -> Bool {
        (a.chain, a.generation) < (b.chain, b.generation)
    }
    public var description: String { "\(chain)#\(generation)" }
}

/// What `verify` found. It never changes the store.
public struct VerifyReport: Sendable {
    public struct Problem: Sendable, CustomStringConvertible {
        /// The file at fault, relative to the store.
        public var file: String
        public var message: String
        /// For damaged chunks (one problem per file and cause): every one of them, sorted.
        public var chunks: [ChunkID] = []
        /// And the generations whose own deltas use them, sorted.
        public var generations: [GenerationRef] = []
        public var description: String { "\(file): \(message)" }
        public init(file: String, message: String, chunks: [ChunkID] = [], generations: [GenerationRef] = []) {
            (self.file, self.message, self.chunks, self.generations) = (file, message, chunks, generations)
        }
    }

    public var deep = false
    public var chains = 0
    public var generations = 0
    public var packs = 0
    public var indexEntries = 0
    /// Chunks rehashed (deep only).
    public var chunksRehashed = 0
    /// Packs none of whose chunks are indexed: left by a writer that died before its commit.
    /// Garbage for GC, not damage.
    public var garbagePacks = 0
    /// Chunks in packs that no index entry refers to any more (reclaimed by a later repack).
    public var deadChunks = 0
    /// Damaged files, one per file and cause: a lost pack is one problem naming how many
    /// chunks it held and which generations use them, not one per chunk.
    public var problems: [Problem] = []
    /// Generations that cannot be rebuilt, with why.
    public var damaged: [GenerationRef: String] = [:]
    /// Later generations whose rebuild passes through a damaged one.
    public var dependents: [GenerationRef: GenerationRef] = [:]

    public var isClean: Bool { problems.isEmpty && damaged.isEmpty }
}

extension Store {
    /// Checks the store. Structural: every chain's manifests exist, hash to their ids and link
    /// to their parents; every chunk they reference is in the index; every index segment and
    /// pack trailer parses and every index entry points into an existing pack. Deep, in
    /// addition: every pack hashes to its name and every chunk decompresses and hashes to its id.
    /// `progress` is told (packs checked, packs in all) after each pack: deep verify of a
    /// large store reads all of it.
    public func verify(deep: Bool = false, progress: ((Int, Int) -> Void)? = nil) throws(StoreError) -> VerifyReport {
        var report = VerifyReport()
        report.deep = deep
        // A cache of a remote store: everything is checked here, so everything comes here.
        try remote?.pullAll(into: self)
        try refreshIndex()
        for (name, error) in index.damaged {
            report.problems.append(
                .init(
                    file: "index/\(name)",
                    message: "\(error) — run `cpx rebuild-index` to rebuild the index from the packs"))
        }

        // Packs: trailers (and in deep mode, contents).
        var packSizes: [ChunkID: Int64] = [:]
        var badChunks: Set<ChunkID> = []
        var damage = ChunkDamage()
        let packNames = try directory.names(in: directory.packs, dirName: "packs", suffix: "pack")
        for (done, name) in packNames.enumerated() {
            defer { progress?(done + 1, packNames.count) }
            let file = "packs/\(name).pack"
            guard let id = ChunkID(hex: name) else {
                report.problems.append(.init(file: file, message: "a pack name must be 32 hex digits"))
                continue
            }
            report.packs += 1
            do {
                let fd = try FileDescriptor.open(name + ".pack", in: directory.packs, [.readOnly, .noFollow])
                defer { fd.close() }
                packSizes[id] = try fd.status().size
                let entries = try PackReader.readTrailer(fd, file: "\(path)/\(file)")
                if !entries.isEmpty && entries.allSatisfy({ index.lookup($0.id) == nil }) {
                    report.garbagePacks += 1
                    continue
                }
                for entry in entries {
                    // A chunk GC found dead stays in a pack that was not worth repacking.
                    guard let location = index.lookup(entry.id) else {
                        report.deadChunks += 1
                        continue
                    }
                    if location.pack == id && (location.frameOffset != entry.frameOffset || location.slot != entry.slot)
                    {
                        report.problems.append(
                            .init(
                                file: file,
                                message: "the index places chunk \(entry.id.short) elsewhere than the trailer does"))
                    }
                }
                if deep {
                    report.chunksRehashed += try deepCheck(
                        fd, id: id, entries: entries, file: file, report: &report, bad: &badChunks, damage: &damage)
                }
            } catch let error as StoreError {
                report.problems.append(.init(file: file, message: "\(error)"))
            } catch let error as Errno {
                report.problems.append(.init(file: file, message: "\(error.store("read", "\(path)/\(file)"))"))
            } catch {
                report.problems.append(.init(file: file, message: "\(error)"))
            }
        }

        // Index entries must point into packs that exist.
        for segment in index.segments {
            report.indexEntries += segment.count
            for i in 0..<segment.count {
                guard let location = segment.location(i) else {
                    report.problems.append(
                        .init(
                            file: "index/\(IndexFormat.fileName(segment.id))",
                            message: "entry \(i) names a pack outside its table"))
                    continue
                }
                guard let size = packSizes[location.pack] else {
                    badChunks.insert(segment.entryID(i))
                    damage.add(segment.entryID(i), pack: location.pack, fault: .packMissing)
                    continue
                }
                if Int64(location.frameOffset) + Int64(location.frameLength) > size {
                    badChunks.insert(segment.entryID(i))
                    damage.add(segment.entryID(i), pack: location.pack, fault: .pastEnd, packSize: size)
                }
            }
        }

        // Chains and their manifests.
        let snapshotNames = Set(
            (try? directory.names(in: directory.snapshots, dirName: "snapshots", suffix: "map")) ?? [])
        for name in try chainNames() {
            let chain: Chain
            do { chain = try self.chain(name) } catch {
                report.problems.append(.init(file: "chains/\(Chain.fileName(name))", message: "\(error)"))
                continue
            }
            report.chains += 1
            var damagedSince: GenerationRef?
            for entry in chain.entries {
                report.generations += 1
                let ref = GenerationRef(chain: name, generation: entry.generation)
                var reason: String?
                do {
                    let manifest = try checkedManifest(entry, in: chain)
                    for page in manifest.delta.pages where page.chunk != .zeroPage {
                        if badChunks.contains(page.chunk) {
                            damage.note(page.chunk, usedBy: ref)
                        } else if index.lookup(page.chunk) == nil {
                            damage.add(page.chunk, pack: nil, fault: .notIndexed)
                            damage.note(page.chunk, usedBy: ref)
                        }
                    }
                    if let missing = manifest.delta.pages.first(where: {
                        $0.chunk != .zeroPage && (badChunks.contains($0.chunk) || index.lookup($0.chunk) == nil)
                    }) {
                        let count = manifest.delta.pages.reduce(0) {
                            $0
                                + ($1.chunk != .zeroPage
                                    && (badChunks.contains($1.chunk) || index.lookup($1.chunk) == nil) ? 1 : 0)
                        }
                        reason =
                            "\(count) of its chunks are missing or corrupt "
                            + "(first: page \(missing.page), chunk \(missing.chunk.short)"
                            + (damage.file(of: missing.chunk).map { $0 == "index" ? ", not indexed" : " in \($0)" }
                                ?? "")
                            + ")"
                    }
                } catch {
                    reason = "\(error)"
                }
                if entry.kind == .full { damagedSince = nil }
                if let reason {
                    report.damaged[ref] = reason
                    if damagedSince == nil { damagedSince = ref }
                } else if let cause = damagedSince {
                    report.dependents[ref] = cause
                }
                if snapshotNames.contains(entry.manifest.hex) {
                    do { _ = try Snapshot.read(entry.manifest, in: directory) } catch {
                        report.problems.append(
                            .init(
                                file: "snapshots/\(Snapshot.fileName(entry.manifest))",
                                message: "\(error) (a cache: GC removes it and rebuilds read the chain instead)"))
                    }
                }
            }
        }
        damage.finish()
        for entry in damage.entries {
            // The generations that cannot be rebuilt follow in the report: no need to point to it.
            let repair = entry.fault == .notIndexed ? entry.repair : "restore the pack from a backup"
            report.problems.append(
                .init(
                    file: entry.file, message: entry.message + "; " + repair, chunks: entry.chunks,
                    generations: entry.generations))
        }
        return report
    }

    /// Reads a whole pack, checks it hashes to its name, decodes every frame and rehashes
    /// every chunk; returns how many chunks were rehashed.
    private func deepCheck(
        _ fd: FileDescriptor, id: ChunkID, entries: [PackEntry], file: String, report: inout VerifyReport,
        bad: inout Set<ChunkID>, damage: inout ChunkDamage
    ) throws -> Int {
        let size = Int(try fd.status().size)
        var bytes = [UInt8](repeating: 0, count: size)
        let got = try bytes.withMutableRawBytes { (raw) throws(Errno) in try fd.readFully(into: raw, at: 0) }
        guard got == size else {
            throw StoreError.malformed(file: "\(path)/\(file)", reason: "changed size while being read")
        }
        if bytes.withUnsafeBytes({ ChunkID(hashing: $0) }) != id {
            report.problems.append(.init(file: file, message: "its bytes do not hash to its name (damaged)"))
        }
        let pages = UnsafeMutableRawBufferPointer.allocate(pages: PackFormat.maxPagesPerFrame)
        defer { pages.deallocate() }
        var decodedOffset: UInt32?
        var decodedCount = 0
        var rehashed = 0
        // One problem per pack for frames that do not decode and for bad copies no index entry
        // uses (the first named), not one per frame or chunk.
        var badFrames: (count: Int, first: String?) = (0, nil)
        var badUnused = 0
        defer {
            if let first = badFrames.first {
                let more = badFrames.count > 1 ? " (and \(badFrames.count - 1) more frames)" : ""
                report.problems.append(.init(file: file, message: first + more))
            }
            if badUnused > 0 {
                report.problems.append(
                    .init(
                        file: file,
                        message: "\(badUnused) chunks no index entry uses do not decode to their ids "
                            + "(no generation needs them; `cpx gc` drops them when it repacks the pack)"))
            }
        }
        for entry in entries.sorted(by: { ($0.frameOffset, $0.slot) < ($1.frameOffset, $1.slot) }) {
            if decodedOffset != entry.frameOffset {
                decodedOffset = entry.frameOffset
                do {
                    decodedCount = try bytes.withRawBytes { (raw) throws(StoreError) in
                        let frame = UnsafeRawBufferPointer(
                            rebasing: raw[Int(entry.frameOffset)..<(Int(entry.frameOffset) + Int(entry.frameLength))])
                        return try PackReader.decodeFrame(
                            frame, into: pages, file: "\(path)/\(file)", offset: entry.frameOffset)
                    }
                } catch {
                    decodedCount = 0
                    badFrames.count += 1
                    if badFrames.first == nil { badFrames.first = "\(error)" }
                }
            }
            rehashed += 1
            let slot = Int(entry.slot)
            guard slot < decodedCount,
                ChunkID(hashing: UnsafeRawBufferPointer(pages.page(at: slot))) == entry.id
            else {
                if index.lookup(entry.id)?.pack == id {
                    bad.insert(entry.id)
                    damage.add(entry.id, pack: id, fault: .corrupt)
                } else {
                    badUnused += 1
                }
                continue
            }
        }
        return rehashed
    }
}
