#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall
import Tracee

/// Signal-driven I/O given back to each open file that had it: its owner (F_SETOWN_EX), its
/// signal (F_SETSIG) and O_ASYNC. The kernel records the caller's real and effective uid with
/// the owner, and they decide whether the signal may be sent: the stub takes those ids for the
/// call (setresuid, its saved uid kept root) and is root again after. Run once every descriptor
/// is in place and before the credentials; an owner in the tree by its saved pid, which a tree
/// keeps (a lone process that took a new pid gives its own new one).
public struct SignalOwnerPhase: RestartPhase {
    public struct Owner: Sendable, Equatable {
        public var fd: Int32
        public var owner: ProcessImage.SignalOwner
        public var async: Bool
    }

    public var owners: [Owner]
    let pid: Int32

    public var name: String { "I/O signal owners" }
    public var steps: [String] {
        owners.map {
            let whom = $0.owner.type == 2 ? "process group" : $0.owner.type == 0 ? "thread" : "pid"
            return "fd \($0.fd): I/O signals to \(whom) \($0.owner.pid)"
                + ($0.owner.signal != 0 ? " as signal \($0.owner.signal)" : "")
                + " (uid \($0.owner.uid), euid \($0.owner.euid))" + ($0.async ? ", O_ASYNC" : "")
        }
    }

    public init(image: ProcessImage) {
        pid = image.pid
        owners = image.descriptors.compactMap { descriptor in
            guard let owner = descriptor.signalOwner, descriptor.duplicateOf == nil else { return nil }
            return Owner(fd: descriptor.fd, owner: owner, async: descriptor.flags & CHPOX_O_ASYNC != 0)
        }
    }

    public func run(in session: RestartSession) throws {
        let calls = session.calls
        for owner in owners {
            var target = owner.owner.pid
            if target == pid { target = session.innerPid }  // a lone process under a new pid
            let what = "give descriptor \(owner.fd)'s I/O signals to \(target)"
            // Root takes the recorded ids for the call; anyone else has them already (`Preflight`).
            let asRoot = CurrentProcess.effectiveUserID == 0
            if asRoot { try calls.call(.setresuid, owner.owner.uid, owner.owner.euid, 0, to: what) }
            let result = try calls.withFrame { () throws(TraceeError) -> Int in
                let argument = try calls.bytes(withUnsafeBytes(of: (owner.owner.type, target)) { Array($0) })
                return try calls.result(of: .fcntl, owner.fd, CHPOX_F_SETOWN_EX, argument)
            }
            if asRoot { try calls.call(.setresuid, 0, 0, 0, to: "be root again after: \(what)") }
            try calls.check(result, what)
            if owner.owner.signal != 0 {
                try calls.call(
                    .fcntl, owner.fd, CHPOX_F_SETSIG, owner.owner.signal, to: "set descriptor \(owner.fd)'s I/O signal")
            }
            if owner.async {
                // Off, then on: only F_SETFL turning O_ASYNC on enters the file in its object's
                // list of who to signal (an open with O_ASYNC sets the flag alone).
                let flags = try calls.call(.fcntl, owner.fd, F_GETFL, to: "read descriptor \(owner.fd)'s flags")
                let async = Int(CHPOX_O_ASYNC)
                try calls.call(.fcntl, owner.fd, F_SETFL, flags & ~async, to: "set descriptor \(owner.fd)'s flags")
                try calls.call(.fcntl, owner.fd, F_SETFL, flags | async, to: "set O_ASYNC on descriptor \(owner.fd)")
            }
        }
    }
}
