import Syscall

/// Everything the store can report. Each case names the thing and, in its description, what
/// the user can do about it.
public enum StoreError: Error, Sendable, CustomStringConvertible, Equatable {
    /// A system call on `path` failed.
    case system(Errno, operation: String, path: String)
    /// A file's bytes do not parse: truncated, bad magic, bad checksum, impossible counts.
    case malformed(file: String, reason: String)
    /// The directory exists but is not a chpox store.
    case notAStore(path: String, reason: String)
    /// The store (or a file in it) is owned by someone else or is too open.
    case unsafe(path: String, reason: String)
    /// Another process holds the chain's writer lock (`holder`: its pid, when it wrote one).
    case chainBusy(chain: String, holder: Int32?)
    case noSuchChain(String)
    case noSuchGeneration(chain: String, generation: UInt64)
    case invalidChainName(String)
    /// A chunk a manifest references cannot be found or does not hash to its id.
    case missingChunk(ChunkID, context: String)
    case corruptChunk(ChunkID, pack: String, reason: String)
    /// A manifest's bytes do not hash to the id its chain records.
    case brokenChain(chain: String, generation: UInt64, reason: String)
    case invalidArgument(String)
    /// `operation` (gc) refused to change anything: chunks of generations it would drop, merge
    /// or rewrite are damaged.
    case damaged(operation: String, ChunkDamage)
    /// The remote holding the store (S3) failed or refused: `reason` says what and what to do.
    case remote(location: String, reason: String)

    public var description: String {
        switch self {
        case .system(let errno, let operation, let path):
            var text = "\(operation) \(path): \(errno)"
            if errno == .noSpace { text += " (free space on that file system and run the command again)" }
            if errno == .tooManySymlinks { text += " (a symlink inside the store; chpox never follows them)" }
            return text
        case .malformed(let file, let reason):
            return "\(file) is damaged: \(reason) (run `dumpinfo --verify --deep` to see what it affects)"
        case .notAStore(let path, let reason):
            return "\(path) is not a chpox store: \(reason) (choose another directory with --store)"
        case .unsafe(let path, let reason):
            return "refusing store \(path): \(reason)"
        case .chainBusy(let chain, let holder):
            return "chain '\(chain)' is being written by another process\(holder.map { " (pid \($0))" } ?? "") "
                + "(wait for it to end or pick another --name)"
        case .noSuchChain(let chain):
            return "no chain named '\(chain)' in this store (see `dumpinfo --chain`)"
        case .noSuchGeneration(let chain, let generation):
            return "chain '\(chain)' has no generation \(generation) (see `dumpinfo --chain --name \(chain)`)"
        case .invalidChainName(let name):
            return "invalid chain name '\(name)': use 1-64 letters, digits, '.', '_' or '-', not starting with '.'"
        case .missingChunk(let id, let context):
            return
                "chunk \(id.short) needed by \(context) is missing from the store "
                + "(run `dumpinfo --verify --deep`; `cpx rebuild-index` if the index was damaged)"
        case .corruptChunk(let id, let pack, let reason):
            return "chunk \(id.short) in pack \(pack) is corrupt: \(reason)"
        case .brokenChain(let chain, let generation, let reason):
            return "chain '\(chain)' generation \(generation) does not verify: \(reason)"
        case .invalidArgument(let text):
            return text
        case .remote(let location, let reason):
            return "store \(location): \(reason)"
        case .damaged(let operation, let damage):
            return
                "refusing to \(operation): generations it would drop, merge or rewrite use damaged chunks; "
                + "nothing was changed" + damage.entries.map { "\n  \($0)" }.joined()
        }
    }
}

extension Errno {
    /// Wraps an errno with what was being done to which file.
    func store(_ operation: String, _ path: String) -> StoreError {
        .system(self, operation: operation, path: path)
    }
}
