import Syscall

/// What is wrong with one chunk the index or a generation names.
public enum ChunkFault: Hashable, Sendable {
    /// No index entry names the chunk (a lost or removed index segment).
    case notIndexed
    /// The index places it in a pack file that does not exist.
    case packMissing
    /// Its frame ends past the end of its pack: the pack was cut short.
    case pastEnd
    /// Its pack's header, footer or trailer does not parse.
    case unreadablePack(String)
    /// Its frame does not decode to bytes that hash to its id (deep verify, or a copy by GC).
    case corrupt

    /// What can be done about it.
    var repair: String {
        switch self {
        case .notIndexed:
            "run `cpx rebuild-index` to index them again from the packs that hold them"
        case .packMissing, .pastEnd, .unreadablePack, .corrupt:
            "they cannot be rebuilt from this store: restore the pack from a backup; "
                + "`dumpinfo --verify` lists the generations that cannot be rebuilt"
        }
    }
}

/// Damaged chunks summarized per file and cause: one line per pack naming how many chunks it
/// loses and which generations use them, not one line per chunk (a lost pack can hold tens of
/// thousands). `dumpinfo --verify` and GC's refusal print it; each entry keeps every chunk.
public struct ChunkDamage: Sendable, Equatable {
    public struct Entry: Sendable, Equatable, CustomStringConvertible {
        /// `packs/<id>.pack`, or `index` for chunks no index entry names; relative to the store.
        public var file: String
        public var fault: ChunkFault
        /// Sorted.
        public var chunks: [ChunkID]
        /// The generations whose own deltas reference these chunks, sorted (those GC or verify
        /// looked at).
        public var generations: [GenerationRef]
        /// The pack's size, for `pastEnd`.
        public var packSize: Int64?

        /// "missing: 4096 chunks the index places in it are lost (used by generations 0-3 of
        /// chain x)", without the file or what to do.
        public var message: String {
            let users = generations.isEmpty ? "no generation uses them" : "used by " + Self.describe(generations)
            let counted = chunks.count == 1 ? "1 chunk" : "\(chunks.count) chunks"
            switch fault {
            case .notIndexed:
                return "\(counted) have no index entry (\(users))"
            case .packMissing:
                return "missing: \(counted) the index places in it are lost (\(users))"
            case .pastEnd:
                let size = packSize.map { "\($0) bytes" } ?? "cut short"
                return "truncated (\(size)): the frames of \(counted) end past it (\(users))"
            case .unreadablePack(let reason):
                return "\(reason): \(counted) the index places in it cannot be checked (\(users))"
            case .corrupt:
                return "\(counted) do not decode to their ids (\(users))"
            }
        }

        /// What can be done about it.
        public var repair: String { fault.repair }

        public var description: String { "\(file): \(message); \(repair)" }

        /// "generations 0-3, 7 of chain x and generation 2 of chain y".
        static func describe(_ refs: [GenerationRef]) -> String {
            var parts: [String] = []
            var chains: [String] = []
            var byChain: [String: [UInt64]] = [:]
            for ref in refs {
                if byChain[ref.chain] == nil { chains.append(ref.chain) }
                byChain[ref.chain, default: []].append(ref.generation)
            }
            for chain in chains {
                let numbers = Array(Set(byChain[chain]!)).sorted()
                var runs: [String] = []
                var start = numbers[0], end = numbers[0]
                for n in numbers.dropFirst() {
                    if n == end + 1 { end = n; continue }
                    runs.append(start == end ? "\(start)" : "\(start)-\(end)")
                    start = n
                    end = n
                }
                runs.append(start == end ? "\(start)" : "\(start)-\(end)")
                let noun = numbers.count == 1 ? "generation" : "generations"
                parts.append("\(noun) \(runs.joined(separator: ", ")) of chain \(chain)")
            }
            return parts.joined(separator: " and ")
        }
    }

    /// One per file and cause, in the order first found.
    public private(set) var entries: [Entry] = []
    private var entryOfChunk: [ChunkID: Int] = [:]
    private var entryOfKey: [String: Int] = [:]

    public init() {}

    public var isEmpty: Bool { entries.isEmpty }

    func file(of chunk: ChunkID) -> String? { entryOfChunk[chunk].map { entries[$0].file } }

    /// Records `chunk` as damaged in `pack` (nil: not indexed). A chunk is recorded once.
    mutating func add(_ chunk: ChunkID, pack: ChunkID?, fault: ChunkFault, packSize: Int64? = nil) {
        guard entryOfChunk[chunk] == nil else { return }
        let file = pack.map { "packs/\(PackFormat.fileName($0))" } ?? "index"
        let key = "\(file) \(fault)"
        let position: Int
        if let known = entryOfKey[key] {
            position = known
        } else {
            position = entries.count
            entryOfKey[key] = position
            entries.append(Entry(file: file, fault: fault, chunks: [], generations: [], packSize: packSize))
        }
        entries[position].chunks.append(chunk)
        entryOfChunk[chunk] = position
    }

    /// Notes that `generation`'s own delta references `chunk`, if that chunk is damaged.
    mutating func note(_ chunk: ChunkID, usedBy generation: GenerationRef) {
        guard let position = entryOfChunk[chunk], entries[position].generations.last != generation else { return }
        entries[position].generations.append(generation)
    }

    /// Sorts each entry's chunks and generations (call once everything is added).
    mutating func finish() {
        for k in entries.indices {
            entries[k].chunks.sort()
            entries[k].generations = Array(Set(entries[k].generations)).sorted()
        }
    }
}

/// A structural check of single chunks, without decompressing anything: the index names the
/// chunk, its pack exists, the pack's trailer parses and the chunk's frame lies inside the pack.
/// Each pack is looked at once (a stat and a trailer read), so checking every chunk GC touches
/// costs about a structural verify of the packs they live in.
struct ChunkProbe {
    let store: Store
    /// A pack as found: its size, and why its trailer does not parse (nil when it does).
    private enum PackState { case missing, present(size: Int64, unreadable: String?) }
    private var packs: [ChunkID: PackState] = [:]
    private(set) var damage = ChunkDamage()
    private var checked: Set<ChunkID> = []

    init(store: Store) { self.store = store }

    /// Checks `chunk` (once) and notes that `generation` uses it.
    mutating func check(_ chunk: ChunkID, usedBy generation: GenerationRef? = nil) {
        guard chunk != .zeroPage else { return }
        if checked.insert(chunk).inserted {
            if let location = store.index.lookup(chunk) {
                check(chunk, at: location)
            } else {
                damage.add(chunk, pack: nil, fault: .notIndexed)
            }
        }
        if let generation { damage.note(chunk, usedBy: generation) }
    }

    /// Checks a chunk at a known location.
    mutating func check(_ chunk: ChunkID, at location: ChunkLocation) {
        switch state(of: location.pack) {
        case .missing:
            damage.add(chunk, pack: location.pack, fault: .packMissing)
        case .present(let size, let unreadable):
            if Int64(location.frameOffset) + Int64(location.frameLength) > size {
                damage.add(chunk, pack: location.pack, fault: .pastEnd, packSize: size)
            } else if let unreadable {
                damage.add(chunk, pack: location.pack, fault: .unreadablePack(unreadable))
            }
        }
    }

    private mutating func state(of pack: ChunkID) -> PackState {
        if let known = packs[pack] { return known }
        let name = PackFormat.fileName(pack)
        let state: PackState
        do throws(Errno) {
            let fd = try FileDescriptor.open(name, in: store.directory.packs, [.readOnly, .noFollow])
            defer { fd.close() }
            let size = try fd.status().size
            do throws(StoreError) {
                _ = try PackReader.readTrailer(fd, file: "\(store.path)/packs/\(name)")
                state = .present(size: size, unreadable: nil)
            } catch .malformed(_, let reason) {
                state = .present(size: size, unreadable: reason)
            } catch {
                state = .present(size: size, unreadable: "\(error)")
            }
        } catch .noSuchFile {
            state = .missing
        } catch {
            state = .present(size: .max, unreadable: "\(error.store("open", "\(store.path)/packs/\(name)"))")
        }
        packs[pack] = state
        return state
    }

    /// The damage found, sorted.
    mutating func finish() -> ChunkDamage {
        damage.finish()
        return damage
    }
}
