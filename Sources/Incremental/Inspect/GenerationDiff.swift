import Store
import Tracee

/// What changed between two generations (`dumpinfo --diff A B`): pages by content (a page
/// changed when the chunk holding it differs, or it is held in one generation only), grouped
/// by the mappings of B; mappings that appeared, vanished or changed; and the process's
/// descriptors, threads, signals and other state, field by field.
public struct GenerationDiff: Sendable {
    public struct MappingChange: Sendable {
        public enum Kind: String, Sendable, Codable { case added, removed, changed, pages }
        /// `pages`: same mapping, some pages differ; `changed`: the mapping it continues had
        /// another extent, protection or backing (`before` says what it was); `added` / `removed`.
        public var kind: Kind
        /// B's mapping (A's for `removed`).
        public var mapping: ProcessImage.Mapping
        public var before: ProcessImage.Mapping?
        /// Pages of the mapping that differ (for `removed`: the pages A held).
        public var changedPages: UInt64
        /// Those pages as ascending, coalesced runs.
        public var ranges: [PageRange]
    }

    /// One difference in the process's state outside memory.
    public struct Change: Sendable, Equatable {
        public enum Kind: String, Sendable, Codable { case added, removed, changed }
        public var kind: Kind
        /// What it is about: "fd 3", "thread 4242", "SIGUSR1", "cwd"...
        public var subject: String
        public var before: String?
        public var after: String?
    }

    public var chain: String
    public var from: UInt64
    public var to: UInt64
    /// Pages that differ in all (the symmetric difference of the two page maps by content).
    public var changedPages: UInt64
    /// Changed pages outside every mapping of both images (generations without an image).
    public var unattributedRanges: [PageRange]
    public var mappings: [MappingChange]
    public var descriptors: [Change]
    public var threads: [Change]
    public var signals: [Change]
    public var process: [Change]
    /// The files the generations kept (`ProcessImage.files`) that differ.
    public var files: [FileChange] = []

    /// A kept file that changed from one generation to the other.
    public struct FileChange: Sendable {
        public var path: String
        public var kind: Change.Kind
        public var sizeBefore: Int64?
        public var sizeAfter: Int64?
        /// Bytes of B's chunks that A does not have: what B stored for it.
        public var changedBytes: Int64
    }

    public static func load(_ store: Store, chain: String, from a: UInt64, to b: UInt64) throws -> GenerationDiff {
        let old = try GenerationDetail.load(store, chain: chain, generation: a)
        let new = try GenerationDetail.load(store, chain: chain, generation: b)
        var diff = GenerationDiff(old, new)
        diff.files = try Self.fileChanges(old, new, store: store)
        return diff
    }

    /// The kept files that differ, each with the bytes of the chunks B has that A has not.
    static func fileChanges(_ a: GenerationDetail, _ b: GenerationDetail, store: Store) throws -> [FileChange] {
        let before = Dictionary((a.image?.files ?? []).map { ($0.path, $0) }, uniquingKeysWith: { x, _ in x })
        let after = Dictionary((b.image?.files ?? []).map { ($0.path, $0) }, uniquingKeysWith: { x, _ in x })
        var changes: [FileChange] = []
        let reader = store.reader()
        for path in Set(before.keys).union(after.keys).sorted() {
            let old = before[path], new = after[path]
            if let old, let new, old.digest == new.digest, old.state == new.state, old.size == new.size { continue }
            let oldChunks = Set(old?.slot.map { FileChunks.chunks(ofSlot: $0, in: a.map).pages.map(\.chunk) } ?? [])
            var fresh = (new?.slot.map { FileChunks.chunks(ofSlot: $0, in: b.map).pages } ?? []).filter {
                !oldChunks.contains($0.chunk)
            }
            fresh = Array(Set(fresh.map(\.chunk))).enumerated().map { PageEntry(page: UInt64($0), chunk: $1) }
            var bytes: Int64 = 0
            try reader.readPages(PageMap(pages: fresh)) { _, page in
                bytes += Int64(FileChunks.payload(page, new?.chunking ?? .content)?.count ?? 0)
            }
            changes.append(
                FileChange(
                    path: path, kind: old == nil ? .added : new == nil ? .removed : .changed, sizeBefore: old?.size,
                    sizeAfter: new?.size, changedBytes: bytes))
        }
        return changes
    }

    public init(_ a: GenerationDetail, _ b: GenerationDetail) {
        chain = b.chain
        from = a.entry.generation
        to = b.entry.generation
        let changed = Self.changedPages(Self.contents(a), Self.contents(b)).filter {
            $0 < FileChunks.firstPage
        }
        changedPages = UInt64(changed.count)
        let oldMappings = a.image?.mappings ?? []
        let newMappings = b.image?.mappings ?? []
        mappings = Self.mappingChanges(oldMappings, newMappings, changed: changed, oldMap: a.map)
        unattributedRanges = Self.runs(Self.outside(changed, (oldMappings + newMappings).map(\.pages)))
        let before = a.image, after = b.image
        descriptors = Self.keyed(
            before?.descriptors ?? [], after?.descriptors ?? [], key: \.fd, subject: { "fd \($0.fd)" },
            describe: Self.describe)
        threads = Self.keyed(
            before?.threads ?? [], after?.threads ?? [], key: \.tid, subject: { "thread \($0.tid)" },
            describe: Self.describe)
        signals =
            Self.keyed(
                before?.signalActions ?? [], after?.signalActions ?? [], key: \.signal,
                subject: { SignalNames.name($0.signal) }, describe: Self.describe)
            + Self.field(
                "pending signals (process)",
                before.map { SignalNames.describe(siginfo: $0.sharedPendingSignals.map(\.bytes)) },
                after.map { SignalNames.describe(siginfo: $0.sharedPendingSignals.map(\.bytes)) })
            + Self.keyed(
                before?.intervalTimers ?? [], after?.intervalTimers ?? [], key: \.which,
                subject: { Self.timerName($0.which) }, describe: Self.describe)
        var process: [Change] = []
        if let before, let after {
            process += Self.field(
                "command", before.command.joined(separator: " "), after.command.joined(separator: " "))
            process += Self.field("executable", before.executable, after.executable)
            process += Self.field("cwd", before.workingDirectory, after.workingDirectory)
            process += Self.field("umask", Self.octal(before.umask), Self.octal(after.umask))
            process += Self.field("credentials", Self.describe(before.credentials), Self.describe(after.credentials))
            process += Self.field(
                "capabilities", before.credentials.capabilities?.summary, after.credentials.capabilities?.summary)
            process += Self.field("root", before.rootDirectory, after.rootDirectory)
            process += Self.field(
                "brk", Format.address(before.addressSpace.brk), Format.address(after.addressSpace.brk))
            process += Self.keyed(
                before.limits, after.limits, key: \.resource, subject: { "limit \($0.name)" }, describe: Self.describe)
            process += Self.field(
                "unsupported", before.unsupported.joined(separator: ", "), after.unsupported.joined(separator: ", "))
        }
        self.process = process
    }

    // MARK: Pages

    /// The page map with zero pages of anonymous memory left out: there a page the map does
    /// not hold is zero too (a full generation records untouched memory as absent, a later
    /// one may record it as zero). In a file mapping a zero page is not the file's bytes.
    static func contents(_ detail: GenerationDetail) -> PageMap {
        guard detail.map.pages.contains(where: { $0.chunk == .zeroPage }) else { return detail.map }
        let fileRanges = (detail.image?.mappings ?? []).filter(\.isFileBacked).map(\.pages)
        return PageMap(
            pages: detail.map.pages.filter { entry in
                entry.chunk != .zeroPage || fileRanges.contains { $0.first <= entry.page && entry.page < $0.end }
            })
    }

    /// The ascending `pages` that lie in none of `ranges`, in one sweep.
    static func outside(_ pages: [UInt64], _ ranges: [PageRange]) -> [UInt64] {
        let sorted = ranges.sorted { $0.first < $1.first }
        var result: [UInt64] = []
        var r = 0
        var coveredUpTo: UInt64 = 0  // pages below this are inside some range seen
        for page in pages {
            while r < sorted.count && sorted[r].first <= page {
                coveredUpTo = max(coveredUpTo, sorted[r].end)
                r += 1
            }
            if page >= coveredUpTo { result.append(page) }
        }
        return result
    }

    /// Pages whose chunk differs or that one map holds and the other does not, ascending.
    static func changedPages(_ a: PageMap, _ b: PageMap) -> [UInt64] {
        var result: [UInt64] = []
        var i = 0, j = 0
        let (a, b) = (a.pages, b.pages)
        while i < a.count || j < b.count {
            if j == b.count || (i < a.count && a[i].page < b[j].page) {
                result.append(a[i].page)
                i += 1
            } else if i == a.count || b[j].page < a[i].page {
                result.append(b[j].page)
                j += 1
            } else {
                if a[i].chunk != b[j].chunk { result.append(a[i].page) }
                i += 1
                j += 1
            }
        }
        return result
    }

    /// The part of the ascending `pages` inside `range`.
    static func slice(_ pages: [UInt64], _ range: PageRange) -> ArraySlice<UInt64> {
        func lowerBound(_ value: UInt64) -> Int {
            var low = 0, high = pages.count
            while low < high {
                let middle = (low + high) / 2
                if pages[middle] < value { low = middle + 1 } else { high = middle }
            }
            return low
        }
        return pages[lowerBound(range.first)..<lowerBound(range.end)]
    }

    /// Ascending pages as coalesced runs.
    static func runs(_ pages: some Sequence<UInt64>) -> [PageRange] {
        var runs: [PageRange] = []
        for page in pages {
            if let last = runs.last, last.end == page {
                runs[runs.count - 1].count += 1
            } else {
                runs.append(PageRange(first: page, count: 1))
            }
        }
        return runs
    }

    /// Each mapping of B is paired with the mapping of A it continues: the one at the same
    /// start, else an overlapping one with the same backing, path and protection (a region
    /// that grew or moved its boundary, like a guard area after its neighbour grew). Paired
    /// and identical in shape: `pages` if any page differs; paired and reshaped: `changed`;
    /// unpaired: `added` (B) or `removed` (A).
    static func mappingChanges(
        _ old: [ProcessImage.Mapping], _ new: [ProcessImage.Mapping], changed: [UInt64],
        oldMap: PageMap
    ) -> [MappingChange] {
        var paired = [Bool](repeating: false, count: old.count)
        var result: [MappingChange] = []
        // Both lists ascend (as /proc/pid/maps does): the overlapping ones are a window that
        // only moves forward.
        var low = 0
        for mapping in new {
            let pages = slice(changed, mapping.pages)
            while low < old.count && old[low].end <= mapping.start { low += 1 }
            var overlapping: [Int] = []
            var i = low
            while i < old.count && old[i].start < mapping.end {
                if !paired[i] { overlapping.append(i) }
                i += 1
            }
            let match =
                overlapping.first { old[$0].start == mapping.start }
                ?? overlapping.first {
                    old[$0].backing == mapping.backing && old[$0].path == mapping.path
                        && old[$0].protection == mapping.protection
                }
            guard let match else {
                result.append(
                    .init(
                        kind: .added, mapping: mapping, before: nil, changedPages: UInt64(pages.count),
                        ranges: runs(pages)))
                continue
            }
            paired[match] = true
            let before = old[match]
            let same =
                before.start == mapping.start && before.end == mapping.end && before.protection == mapping.protection
                && before.backing == mapping.backing && before.path == mapping.path && before.offset == mapping.offset
            if !same {
                result.append(
                    .init(
                        kind: .changed, mapping: mapping, before: before, changedPages: UInt64(pages.count),
                        ranges: runs(pages)))
            } else if !pages.isEmpty {
                result.append(
                    .init(
                        kind: .pages, mapping: mapping, before: nil, changedPages: UInt64(pages.count),
                        ranges: runs(pages)))
            }
        }
        for (index, mapping) in old.enumerated() where !paired[index] {
            let held = oldMap.entries(in: mapping.pages)
            result.append(
                .init(
                    kind: .removed, mapping: mapping, before: nil, changedPages: UInt64(held.count),
                    ranges: runs(held.map(\.page))))
        }
        return result.sorted { ($0.mapping.start, $0.kind.rawValue) < ($1.mapping.start, $1.kind.rawValue) }
    }

    // MARK: Everything else

    static func field(_ subject: String, _ before: String?, _ after: String?) -> [Change] {
        guard before != after else { return [] }
        return [Change(kind: .changed, subject: subject, before: before, after: after)]
    }

    /// Items matched by `key`: added, removed, and changed where a field differs (a change
    /// names only the fields that differ).
    static func keyed<Item, Key: Hashable & Comparable>(
        _ old: [Item], _ new: [Item], key: (Item) -> Key, subject: (Item) -> String,
        describe: (Item) -> [(String, String)]
    ) -> [Change] {
        let oldByKey = Dictionary(old.map { (key($0), $0) }, uniquingKeysWith: { first, _ in first })
        let newByKey = Dictionary(new.map { (key($0), $0) }, uniquingKeysWith: { first, _ in first })
        var result: [Change] = []
        for k in Set(oldByKey.keys).union(newByKey.keys).sorted() {
            switch (oldByKey[k], newByKey[k]) {
            case (nil, let added?):
                result.append(
                    Change(
                        kind: .added, subject: subject(added), before: nil,
                        after: text(describe(added).filter { $0.1 != "-" })))
            case (let removed?, nil):
                result.append(
                    Change(
                        kind: .removed, subject: subject(removed),
                        before: text(describe(removed).filter { $0.1 != "-" }), after: nil))
            case (let a?, let b?):
                let (before, after) = (describe(a), describe(b))
                let differing = before.indices.filter { $0 >= after.count || before[$0] != after[$0] }
                if !differing.isEmpty || before.count != after.count {
                    result.append(
                        Change(
                            kind: .changed, subject: subject(b), before: text(differing.map { before[$0] }),
                            after: text(
                                differing.filter { $0 < after.count }.map { after[$0] } + after.dropFirst(before.count))
                        ))
                }
            default: break
            }
        }
        return result
    }

    /// Fields as one line: "flags rdwr offset 42" (a field with no label is its value alone).
    public static func text(_ fields: [(String, String)]) -> String {
        fields.map { $0.0.isEmpty ? $0.1 : "\($0.0) \($0.1)" }.joined(separator: " ")
    }

    public static func describe(_ d: ProcessImage.Descriptor) -> [(String, String)] {
        [
            ("", "\(d.kind.rawValue) \(d.target)"), ("flags", OpenFlags.describe(d.flags)), ("offset", "\(d.offset)"),
            ("size", d.size.map { "\($0)" } ?? "-"),
        ] + (d.socket.map { [("socket", $0.summary)] } ?? [])
            + (d.inet.map { [("socket", $0.summary)] } ?? [])
    }

    /// A thread: where it is, its mask, what is pending, its alternate stack.
    public static func describe(_ t: ProcessImage.ThreadImage) -> [(String, String)] {
        let r = t.registers
        return [
            ("rip", Format.address(r.rip)), ("rsp", Format.address(r.rsp)), ("fs_base", Format.address(r.fsBase)),
            ("blocked", SignalNames.describe(mask: t.signalMask)),
            ("pending", SignalNames.describe(siginfo: t.pendingSignals.map(\.bytes))),
            ("altstack", t.signalStack.map { "\(Format.address($0.address))+\($0.size)" } ?? "-"),
        ] + (t.scheduling.map { [("scheduling", $0.summary)] } ?? [])
    }

    public static func describe(_ a: ProcessImage.SignalAction) -> [(String, String)] {
        [
            ("handler", SignalNames.handler(a.handler)), ("flags", SignalNames.describe(actionFlags: a.flags)),
            ("mask", SignalNames.describe(mask: a.mask)),
        ]
    }

    public static func describe(_ t: ProcessImage.IntervalTimer) -> [(String, String)] {
        [("interval", "\(t.intervalMicroseconds) µs"), ("left", "\(t.valueMicroseconds) µs")]
    }

    public static func describe(_ c: ProcessImage.Credentials) -> String {
        let user = c.user.all.map(String.init).joined(separator: "/")
        let group = c.group.all.map(String.init).joined(separator: "/")
        return "uid \(user) gid \(group)"
            + " groups \(c.groups.isEmpty ? "-" : c.groups.map(String.init).joined(separator: ","))"
    }

    public static func describe(_ l: ProcessImage.ResourceLimit) -> [(String, String)] {
        [("soft", Format.limit(l.soft)), ("hard", Format.limit(l.hard))]
    }

    public static func octal(_ value: UInt32) -> String {
        let digits = String(value, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    public static func timerName(_ which: Int32) -> String {
        switch which {
        case 0: return "ITIMER_REAL"
        case 1: return "ITIMER_VIRTUAL"
        case 2: return "ITIMER_PROF"
        default: return "itimer \(which)"
        }
    }
}
