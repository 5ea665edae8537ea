import Foundation
import Incremental
import Store
import Syscall

/// What the store commands print: a table or text for people, and JSON for scripts. Every JSON
/// document carries `"schema": "chpox.<kind>/1"`; fields are only ever added within a version.
public enum StoreReports {
    public static let schemaVersion = 1

    /// One JSON object on one line (for event streams).
    public static func jsonLine(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
    }

    public static func json(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
    }

    // MARK: Chains

    public struct GenerationRow: Codable, Sendable {
        public var chain: String
        public var generation: UInt64
        public var id: String
        public var created: String
        public var createdNanoseconds: Int64
        public var kind: String
        public var parent: String?
        public var pagesWritten: UInt64
        public var zeroPages: UInt64
        public var unmappedPages: UInt64
        public var newChunks: UInt64
        public var storedBytes: UInt64
        public var newLogicalBytes: UInt64
        /// Pages written per new chunk stored: how much deduplication and zero detection saved.
        public var dedupRatio: Double?
        /// From the process image, for generations `cpx` took: the tracker that found the
        /// pages, the final stop in microseconds, and descriptors a restart cannot recreate.
        public var tracker: String?
        public var pauseMicroseconds: Int64?
        public var unsupported: [String]?
    }

    public static func generationRows(_ store: Store, chains: [String]) throws -> [GenerationRow] {
        var rows: [GenerationRow] = []
        for name in chains {
            for entry in try store.chain(name).entries {
                let manifest = try store.manifest(entry.manifest)
                let s = manifest.statistics
                let image =
                    manifest.metadata.isEmpty
                    ? nil : try? ProcessImage(decoding: manifest.metadata, generation: entry.generation)
                rows.append(
                    GenerationRow(
                        chain: name, generation: entry.generation, id: entry.manifest.hex,
                        created: Format.time(nanoseconds: entry.createdNanoseconds),
                        createdNanoseconds: entry.createdNanoseconds,
                        kind: entry.kind == .full ? "full" : "delta", parent: manifest.parent?.hex,
                        pagesWritten: s.pagesWritten, zeroPages: s.zeroPages, unmappedPages: s.unmappedPages,
                        newChunks: s.newChunks, storedBytes: s.storedBytes, newLogicalBytes: s.newLogicalBytes,
                        dedupRatio: s.newChunks > 0 ? Double(s.pagesWritten) / Double(s.newChunks) : nil,
                        tracker: image?.capture.tracker,
                        pauseMicroseconds: image.map { $0.capture.pauseNanoseconds / 1000 },
                        unsupported: image.map(\.unsupported)))
            }
        }
        return rows
    }

    struct ChainDocument: Codable {
        var schema = "chpox.chain/\(StoreReports.schemaVersion)"
        var store: String
        var generations: [GenerationRow]
    }

    public static func chainJSON(_ rows: [GenerationRow], store: String) -> String {
        json(ChainDocument(store: store, generations: rows))
    }

    public static func chainTable(_ rows: [GenerationRow]) -> String {
        guard !rows.isEmpty else { return "no generations" }
        var table = TextTable(
            [
                "CHAIN", "GEN", "ID", "CREATED (UTC)", "KIND", "PARENT", "TRACKER", "PAGES", "ZERO", "NEW CHUNKS",
                "STORED", "DEDUP", "PAUSE",
            ],
            numeric: [1, 7, 8, 9, 10, 11, 12])
        var notes: [String] = []
        for row in rows {
            table.add([
                row.chain, "\(row.generation)", String(row.id.prefix(12)), row.created, row.kind,
                row.parent.map { String($0.prefix(12)) } ?? "-", row.tracker ?? "-", "\(row.pagesWritten)",
                "\(row.zeroPages)",
                "\(row.newChunks)", Format.bytes(row.storedBytes), row.dedupRatio.map(Format.ratio) ?? "-",
                row.pauseMicroseconds.map { Format.decimal(Double($0) / 1000) + " ms" } ?? "-",
            ])
            if let unsupported = row.unsupported, !unsupported.isEmpty {
                notes.append(
                    "\(row.chain) generation \(row.generation) recorded descriptors "
                        + "a restart cannot recreate (unsupported): "
                        + unsupported.joined(separator: ", "))
            }
        }
        return table.render() + notes.map { "\n" + $0 }.joined()
    }

    // MARK: Verify

    struct VerifyDocument: Codable {
        var schema = "chpox.verify/\(StoreReports.schemaVersion)"
        var store: String
        var deep: Bool
        var clean: Bool
        var chains: Int
        var generations: Int
        var packs: Int
        var indexEntries: Int
        var chunksRehashed: Int
        var garbagePacks: Int
        var deadChunks: Int
        var problems: [Problem]
        var damaged: [Damaged]
        var dependents: [Dependent]
        struct Problem: Codable {
            var file: String
            var message: String
            /// Damaged chunks: every one, and the generations using them (absent for a file-level
            /// problem).
            var chunks: [String]?
            var generations: [Ref]?
        }
        struct Ref: Codable { var chain: String; var generation: UInt64 }
        struct Damaged: Codable { var chain: String; var generation: UInt64; var reason: String }
        struct Dependent: Codable { var chain: String; var generation: UInt64; var dependsOn: UInt64 }
    }

    public static func verifyJSON(_ report: VerifyReport, store: String) -> String {
        json(
            VerifyDocument(
                store: store, deep: report.deep, clean: report.isClean, chains: report.chains,
                generations: report.generations,
                packs: report.packs, indexEntries: report.indexEntries, chunksRehashed: report.chunksRehashed,
                garbagePacks: report.garbagePacks, deadChunks: report.deadChunks,
                problems: report.problems.map {
                    .init(
                        file: $0.file, message: $0.message, chunks: $0.chunks.isEmpty ? nil : $0.chunks.map(\.hex),
                        generations: $0.chunks.isEmpty
                            ? nil : $0.generations.map { .init(chain: $0.chain, generation: $0.generation) })
                },
                damaged: report.damaged.keys.sorted().map {
                    .init(chain: $0.chain, generation: $0.generation, reason: report.damaged[$0]!)
                },
                dependents: report.dependents.keys.sorted().map {
                    .init(chain: $0.chain, generation: $0.generation, dependsOn: report.dependents[$0]!.generation)
                }))
    }

    /// One line per damaged file (a lost pack: how many chunks, which generations); `verbose`
    /// adds a line per damaged chunk under it.
    public static func verifyText(_ report: VerifyReport, store: String, verbose: Bool = false) -> String {
        var lines: [String] = []
        let what = report.deep ? "deep verify (every chunk decompressed and rehashed)" : "structural verify"
        lines.append("\(store): \(what)")
        lines.append(
            "  \(report.chains) chains, \(report.generations) generations, \(report.packs) packs, "
                + "\(report.indexEntries) indexed chunks"
                + (report.deep ? ", \(report.chunksRehashed) chunks rehashed" : ""))
        if report.garbagePacks > 0 || report.deadChunks > 0 {
            lines.append(
                "  garbage: \(report.garbagePacks) packs from interrupted writes, "
                    + "\(report.deadChunks) dead chunks (`cpx gc` reclaims them)"
            )
        }
        for problem in report.problems {
            lines.append("  PROBLEM \(problem.file): \(problem.message)")
            if verbose { lines += problem.chunks.map { "    chunk \($0.hex)" } }
        }
        if !verbose && report.problems.contains(where: { !$0.chunks.isEmpty }) {
            lines.append("  (`dumpinfo --verify --verbose` lists every damaged chunk)")
        }
        for ref in report.damaged.keys.sorted() { lines.append("  DAMAGED \(ref): \(report.damaged[ref]!)") }
        let dependents = report.dependents.keys.sorted()
        if !dependents.isEmpty {
            lines.append(
                "  depending on damaged generations: "
                    + dependents.map { "\($0) (on \(report.dependents[$0]!.generation))" }.joined(separator: ", "))
        }
        lines.append(
            report.isClean
                ? "OK: no damage found"
                : "DAMAGE FOUND: nothing was changed; restore the named files from a backup "
                    + "(`cpx rebuild-index` repairs a damaged or incomplete index); "
                    + "`cpx gc` refuses to drop or rewrite damaged generations"
        )
        return lines.joined(separator: "\n")
    }

    // MARK: Statistics

    public struct Statistics: Codable, Sendable {
        public var schema = "chpox.stats/\(StoreReports.schemaVersion)"
        public var store: String
        public var chains: Int
        public var generations: Int
        public var uniqueChunks: Int
        public var packs: Int
        public var packBytes: Int64
        /// Pages written by all generations, times the page size.
        public var logicalBytes: UInt64
        public var dedupRatio: Double?
        /// Distinct chunks referenced by any generation, and each chain's distinct chunks
        /// summed over chains over it: what deduplication across chains saves (1.0: nothing
        /// shared). Nil when the index is damaged (`cpx rebuild-index`).
        public var referencedChunks: Int?
        public var dedupAcrossChains: Double?
        /// Chunks no generation references, and the bytes `cpx gc` would free (an estimate).
        public var deadChunks: Int?
        public var reclaimableBytes: Int64?
        /// Packs no index entry names and files in tmp/, left by failed or killed writes (the
        /// next `cpx` or `cpx gc` removes them); nil while a writer is in flight.
        public var orphanPacks: Int?
        public var orphanTemporaryFiles: Int?
        public var orphanBytes: Int64?
    }

    public static func statistics(_ store: Store) throws -> Statistics {
        let totals = try store.totals()
        var logical: UInt64 = 0
        var generations = 0
        for name in try store.chainNames() {
            for entry in try store.chain(name).entries {
                logical += Page.bytes(try store.manifest(entry.manifest).statistics.pagesWritten)
                generations += 1
            }
        }
        let sharing = try? store.sharing()
        return Statistics(
            store: store.location, chains: totals.chains, generations: generations, uniqueChunks: totals.uniqueChunks,
            packs: totals.packs, packBytes: totals.packBytes, logicalBytes: logical,
            dedupRatio: totals.packBytes > 0 ? Double(logical) / Double(totals.packBytes) : nil,
            referencedChunks: sharing?.referencedChunks, dedupAcrossChains: sharing?.acrossChainsRatio,
            deadChunks: sharing?.deadChunks, reclaimableBytes: sharing?.reclaimableBytes,
            orphanPacks: totals.abandoned?.packs, orphanTemporaryFiles: totals.abandoned?.temporaryFiles,
            orphanBytes: totals.abandoned?.bytes)
    }

    public static func statisticsText(_ s: Statistics) -> String {
        """
        store          \(s.store)
        chains         \(s.chains)
        generations    \(s.generations)
        unique chunks  \(s.uniqueChunks)
        packs          \(s.packs) (\(Format.bytes(s.packBytes)))
        logical        \(Format.bytes(s.logicalBytes)) written by all generations
        saved          \(s.dedupRatio.map(Format.ratio) ?? "-") (logical / stored: zero pages, dedup and LZ4)
        across chains  \(s.dedupAcrossChains.map(Format.ratio) ?? "-") \
        (chunks each chain references / distinct chunks referenced)
        garbage        \(s.deadChunks.map { "\($0) dead chunks" } ?? "-"), \
        \(s.reclaimableBytes.map(Format.bytes) ?? "-") reclaimable by `cpx gc`
        orphans        \(orphansText(s))
        """
    }

    static func orphansText(_ s: Statistics) -> String {
        guard let packs = s.orphanPacks, let files = s.orphanTemporaryFiles, let bytes = s.orphanBytes else {
            return "- (not counted while a cpx, gc or rebuild-index writes into the store)"
        }
        return "\(packs) packs, \(files) tmp files, \(Format.bytes(bytes)) left by failed or killed writes "
            + "(the next `cpx` or `cpx gc` removes them)"
    }

    public static func statisticsJSON(_ s: Statistics) -> String { json(s) }

    // MARK: GC

    struct GCDocument: Codable {
        var schema = "chpox.gc/\(StoreReports.schemaVersion)"
        var store: String
        var dryRun: Bool
        var dropped: [Ref]
        var keptGenerations: Int
        var rewrittenManifests: Int
        var liveChunks: Int
        var deadChunks: Int
        var packsDeleted: Int
        var packsRepacked: Int
        var packsWritten: Int
        var packBytesBefore: Int64
        var packBytesAfter: Int64
        var bytesFreed: Int64
        var seconds: Double
        struct Ref: Codable { var chain: String; var generation: UInt64 }
    }

    public static func gcJSON(_ r: GCReport, store: String) -> String {
        json(
            GCDocument(
                store: store, dryRun: r.dryRun,
                dropped: r.dropped.map { .init(chain: $0.chain, generation: $0.generation) },
                keptGenerations: r.keptGenerations, rewrittenManifests: r.rewrittenManifests, liveChunks: r.liveChunks,
                deadChunks: r.deadChunks, packsDeleted: r.packsDeleted, packsRepacked: r.packsRepacked,
                packsWritten: r.packsWritten,
                packBytesBefore: r.packBytesBefore, packBytesAfter: r.packBytesAfter, bytesFreed: r.bytesFreed,
                seconds: r.seconds))
    }

    public static func gcText(_ r: GCReport) -> String {
        let verb = r.dryRun ? "would drop" : "dropped"
        var lines: [String] = []
        let byChain = Dictionary(grouping: r.dropped, by: \.chain)
        if byChain.isEmpty { lines.append("\(verb) no generations") }
        for chain in byChain.keys.sorted() {
            lines.append(
                "\(verb) \(chain): generations " + byChain[chain]!.map { "\($0.generation)" }.joined(separator: ", "))
        }
        lines.append(
            "kept \(r.keptGenerations) generations (\(r.rewrittenManifests) manifests rewritten to absorb dropped ones)"
        )
        lines.append(
            "chunks: \(r.liveChunks) live, \(r.deadChunks) dead; "
                + "packs: \(r.packsDeleted) deleted, \(r.packsRepacked) repacked into \(r.packsWritten)"
        )
        lines.append(
            (r.dryRun ? "would free " : "freed ") + Format.bytes(r.bytesFreed)
                + " (packs \(Format.bytes(r.packBytesBefore)) -> \(Format.bytes(r.packBytesAfter)))"
                + " in \(Format.decimal(r.seconds)) s"
        )
        return lines.joined(separator: "\n")
    }

    // MARK: Rebase and index rebuild

    struct RebaseDocument: Codable {
        var schema = "chpox.rebase/\(StoreReports.schemaVersion)"
        var store: String
        var chain: String
        var generation: UInt64
        var id: String
    }

    /// `cpx copy`'s line per chain.
    public static func copyText(_ report: ChainCopyReport, to destination: String) -> String {
        guard report.generationsCopied > 0 else {
            return "\(report.chain): \(report.generationsPresent) generations already in \(destination)"
        }
        return "\(report.chain): \(report.generationsCopied) generations copied to \(destination)"
            + (report.generationsPresent > 0 ? " (\(report.generationsPresent) there already)" : "")
            + ", \(report.chunksCopied) chunks (\(Format.bytes(report.storedBytes)) stored), "
            + "\(report.chunksPresent) chunks there already"
    }

    struct CopyDocument: Codable {
        struct Chain: Codable {
            var chain: String
            var generationsCopied: Int
            var generationsPresent: Int
            var chunksCopied: Int
            var chunksPresent: Int
            var storedBytes: Int64
        }
        var schema = "chpox.copy/\(StoreReports.schemaVersion)"
        var from: String
        var to: String
        var chains: [Chain]
    }

    public static func copyJSON(_ reports: [ChainCopyReport], from: String, to: String) -> String {
        json(
            CopyDocument(
                from: from, to: to,
                chains: reports.map {
                    .init(
                        chain: $0.chain, generationsCopied: $0.generationsCopied,
                        generationsPresent: $0.generationsPresent, chunksCopied: $0.chunksCopied,
                        chunksPresent: $0.chunksPresent, storedBytes: $0.storedBytes)
                }))
    }

    public static func rebaseJSON(_ entry: Chain.Entry, chain: String, store: String) -> String {
        json(RebaseDocument(store: store, chain: chain, generation: entry.generation, id: entry.manifest.hex))
    }

    struct RebuildIndexDocument: Codable {
        var schema = "chpox.rebuild-index/\(StoreReports.schemaVersion)"
        var store: String
        var chunks: Int
        var packs: Int
        var skipped: [VerifyDocument.Problem]
    }

    public static func rebuildIndexJSON(
        chunks: Int, packs: Int, skipped: [VerifyReport.Problem], store: String
    ) -> String {
        json(
            RebuildIndexDocument(
                store: store, chunks: chunks, packs: packs,
                skipped: skipped.map { .init(file: $0.file, message: $0.message, chunks: nil, generations: nil) }))
    }
}
