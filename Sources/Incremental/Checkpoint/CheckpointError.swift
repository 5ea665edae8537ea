import Store
import Tracee

/// What stops a checkpoint. Each case says what happened and what to do; the process is
/// running as before in every case.
public enum CheckpointError: Error, Sendable, CustomStringConvertible {
    case process(TraceeError)
    case store(StoreError)
    case unsupportedDescriptors(pid: Int32, [String])
    case badImage(generation: UInt64, reason: String)
    case notOurs(chain: String, pid: Int32, reason: String)
    case output(path: String, reason: String)
    case cannotRestart(generation: UInt64, reason: String)
    case unencodableImage(pid: Int32, reason: String)
    /// `pid` is not of the chain's lineage (`ChainOwnership`); `owner`: the chain's process, when
    /// known.
    case anotherProcessesChain(chain: String, pid: Int32, owner: ChainOwner?)

    /// The process a chain belongs to, for the message that refuses another.
    public struct ChainOwner: Sendable, Equatable {
        public var pid: Int32
        public var command: String
        /// The chain's newest generation and when it was taken.
        public var head: UInt64
        public var at: Int64
    }

    public var description: String {
        switch self {
        case .process(let error): return "\(error)"
        case .store(let error): return "\(error)"
        case .unsupportedDescriptors(let pid, let list):
            return "pid \(pid) holds what a restart cannot recreate yet:\n  " + list.joined(separator: "\n  ")
                + "\ncheckpoint it anyway with --skip-unsupported (they are recorded, `dumpinfo` lists them and a "
                + "restart says what it runs without), or close or end them first"
        case .badImage(let generation, let reason):
            return "generation \(generation): unreadable process image: \(reason)"
        case .unencodableImage(let pid, let reason):
            return "cannot encode the process image of pid \(pid): \(reason); nothing was committed"
        case .cannotRestart(let generation, let reason):
            return "cannot restart generation \(generation): \(reason)"
        case .output(let path, let reason):
            return "cannot write \(path): \(reason)"
        case .anotherProcessesChain(let chain, let pid, let owner):
            let whose =
                owner.map {
                    "pid \($0.pid) (\($0.command)), whose generation \($0.head) was checkpointed "
                        + "\(Format.time(nanoseconds: $0.at)) UTC"
                } ?? "a process it does not record"
            return "chain '\(chain)' belongs to another process: \(whose); pid \(pid) is neither that process nor one "
                + "restarted from the chain. Use --name NEW for a new chain, or --adopt to make pid \(pid) the chain's "
                + "process from now on (recorded; the chain's other processes can then no longer extend it)"
        case .notOurs(let chain, let pid, let reason):
            return "chain '\(chain)' cannot continue with pid \(pid): \(reason); use another --name"
        }
    }
}
