import Incremental
import Store
import Syscall

/// `dumpinfo --diff A B`: a table of the mappings whose pages or shape changed and lists of
/// the other changes, for people; `chpox.diff/1` JSON with every changed range, for scripts.
public enum DiffReports {
    public struct Document: Codable, Sendable {
        public var schema = "chpox.diff/\(StoreReports.schemaVersion)"
        public var store: String
        public var chain: String
        public var from: UInt64
        public var to: UInt64
        public var changedPages: UInt64
        public var mappings: [Mapping]
        /// Changed pages outside every mapping (generations without a process image).
        public var unattributedRanges: [Range]
        public var descriptors: [Change]
        public var threads: [Change]
        public var signals: [Change]
        public var process: [Change]
        /// The kept files that differ: path, change, sizes, bytes stored anew.
        public var files: [File]?
    }

    public struct File: Codable, Sendable {
        public var path: String
        public var change: String
        public var sizeBefore: Int64?
        public var sizeAfter: Int64?
        public var changedBytes: Int64
    }

    public struct Mapping: Codable, Sendable {
        /// added, removed, changed (extent, protection or backing) or pages (contents only).
        public var change: String
        public var start: String
        public var end: String
        public var protection: String
        public var backing: String
        public var path: String
        /// What the mapping was, for `changed`.
        public var before: Before?
        public var changedPages: UInt64
        public var ranges: [Range]
    }

    public struct Before: Codable, Sendable {
        public var start: String; public var end: String; public var protection: String; public var backing: String;
        public var path: String
    }
    /// A run of changed pages: its first page's address and how many pages.
    public struct Range: Codable, Sendable { public var start: String; public var pages: UInt64 }
    public struct Change: Codable, Sendable {
        public var change: String; public var subject: String; public var before: String?; public var after: String?
    }

    static func range(_ r: PageRange) -> Range {
        Range(start: Format.address(Page.address(of: r.first)), pages: r.count)
    }
    static func change(_ c: GenerationDiff.Change) -> Change {
        Change(change: c.kind.rawValue, subject: c.subject, before: c.before, after: c.after)
    }

    public static func document(_ diff: GenerationDiff, store: String) -> Document {
        Document(
            store: store, chain: diff.chain, from: diff.from, to: diff.to, changedPages: diff.changedPages,
            mappings: diff.mappings.map { m in
                Mapping(
                    change: m.kind.rawValue, start: Format.address(m.mapping.start), end: Format.address(m.mapping.end),
                    protection: m.mapping.protection.description, backing: m.mapping.backing.rawValue,
                    path: m.mapping.path,
                    before: m.before.map {
                        Before(
                            start: Format.address($0.start), end: Format.address($0.end),
                            protection: $0.protection.description,
                            backing: $0.backing.rawValue, path: $0.path)
                    },
                    changedPages: m.changedPages, ranges: m.ranges.map(range))
            },
            unattributedRanges: diff.unattributedRanges.map(range),
            descriptors: diff.descriptors.map(change), threads: diff.threads.map(change),
            signals: diff.signals.map(change),
            process: diff.process.map(change),
            files: diff.files.isEmpty
                ? nil
                : diff.files.map {
                    File(
                        path: $0.path, change: $0.kind.rawValue, sizeBefore: $0.sizeBefore, sizeAfter: $0.sizeAfter,
                        changedBytes: $0.changedBytes)
                })
    }

    public static func json(_ diff: GenerationDiff, store: String) -> String {
        StoreReports.json(document(diff, store: store))
    }

    /// Ranges shown per mapping in the table; JSON has them all.
    static let rangesShown = 3

    public static func text(_ diff: GenerationDiff) -> String {
        let changed = Format.bytes(Page.bytes(diff.changedPages))
        var lines = [
            "\(diff.chain): generation \(diff.from) -> \(diff.to): \(diff.changedPages) pages changed (\(changed))"
        ]
        lines.append("")
        lines.append("MEMORY")
        if diff.mappings.isEmpty && diff.unattributedRanges.isEmpty {
            lines.append("no changes")
        } else {
            var table = TextTable(
                ["CHANGE", "START", "END", "PROT", "BACKING", "PAGES", "RANGES", "PATH"], numeric: [5])
            for m in diff.mappings {
                let shape =
                    m.before.map {
                        " (was \(Format.address($0.start))-\(Format.address($0.end))"
                            + " \($0.protection.description) \($0.backing.rawValue))"
                    } ?? ""
                table.add([
                    m.kind.rawValue, Format.address(m.mapping.start), Format.address(m.mapping.end),
                    m.mapping.protection.description,
                    m.mapping.backing.rawValue, "\(m.changedPages)", ranges(m.ranges), m.mapping.path + shape,
                ])
            }
            if !diff.unattributedRanges.isEmpty {
                let pages = diff.unattributedRanges.reduce(0) { $0 + $1.count }
                table.add([
                    "pages", "-", "-", "-", "-", "\(pages)", ranges(diff.unattributedRanges), "(no process image)",
                ])
            }
            lines.append(table.render())
        }
        if !diff.files.isEmpty {
            lines.append("")
            lines.append("FILES")
            var table = TextTable(["CHANGE", "BEFORE", "AFTER", "CHANGED", "PATH"], numeric: [1, 2, 3])
            for f in diff.files {
                table.add([
                    f.kind.rawValue, f.sizeBefore.map { "\($0)" } ?? "-", f.sizeAfter.map { "\($0)" } ?? "-",
                    "\(f.changedBytes)", f.path,
                ])
            }
            lines.append(table.render())
        }
        for (title, changes) in [
            ("DESCRIPTORS", diff.descriptors), ("THREADS", diff.threads), ("SIGNALS", diff.signals),
            ("PROCESS", diff.process),
        ] {
            lines.append("")
            lines.append(title)
            if changes.isEmpty { lines.append("no changes") }
            for c in changes {
                switch c.kind {
                case .added: lines.append("+ \(c.subject): \(c.after ?? "")")
                case .removed: lines.append("- \(c.subject): \(c.before ?? "")")
                case .changed: lines.append("~ \(c.subject): \(c.before ?? "-") -> \(c.after ?? "-")")
                }
            }
        }
        return lines.joined(separator: "\n")
    }

    /// "0x7f00+3, 0x7f10+1, +5 more": each run's first address and its page count.
    static func ranges(_ runs: [PageRange]) -> String {
        guard !runs.isEmpty else { return "-" }
        let shown = runs.prefix(rangesShown).map { "\(Format.address(Page.address(of: $0.first)))+\($0.count)" }
        return shown.joined(separator: ", ") + (runs.count > rangesShown ? ", +\(runs.count - rangesShown) more" : "")
    }
}
