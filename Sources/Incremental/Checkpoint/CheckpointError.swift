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
        case .notOurs(let chain, let pid, let reason):
            return "chain '\(chain)' cannot continue with pid \(pid): \(reason); use another --name"
        }
    }
}
