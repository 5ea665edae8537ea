#if canImport(Glibc)
import Glibc
#endif

/// Which process of a tree makes each pseudo-terminal pair, decided from the images alone: the
/// first of the tree (parents first) that holds a descriptor of it or leads the session it is
/// the controlling terminal of. It keeps the master and a slave open for the others, which take
/// the master (pidfd_getfd: a master has one open file) and open their slaves from its in their
/// own `PseudoTerminalPhase`, run after this one's; it lets them go in `SharedDescriptorPhase`.
public struct PseudoTerminalLayout: Sendable {
    public struct Pair: Sendable, Equatable {
        public var index: Int32
        /// The pair's state (a master's record); nil for slaves whose master was closed.
        public var state: ProcessImage.Descriptor.PseudoTerminal.State?
        /// The process that makes it.
        public var creator: Int32

        /// Made only to hang its slaves up: its master is closed once they are open.
        public var hungUp: Bool { state == nil }
    }

    public var pairs: [Int32: Pair] = [:]
    /// Every pair's number, in the order the tree's processes name them.
    public var order: [Int32] = []

    public init(_ processes: [ProcessImage]) {
        var states: [Int32: ProcessImage.Descriptor.PseudoTerminal.State] = [:]
        for process in processes {
            for descriptor in process.descriptors where descriptor.kind == .ptyMaster {
                if let pty = descriptor.pty, let state = pty.state { states[pty.index] = state }
            }
        }
        let leaders = Dictionary(
            states.compactMap { index, state in state.session.map { ($0, index) } }, uniquingKeysWith: { a, _ in a })
        for process in processes {
            var named = process.descriptors.compactMap { descriptor -> Int32? in
                guard descriptor.kind == .ptyMaster || descriptor.kind == .ptySlave, descriptor.inherited == nil
                else { return nil }
                return descriptor.pty?.index
            }
            if let index = leaders[process.pid] { named.append(index) }
            for index in named where pairs[index] == nil {
                pairs[index] = Pair(index: index, state: states[index], creator: process.pid)
                order.append(index)
            }
        }
    }

    /// The pairs process `pid` makes, in order.
    func made(by pid: Int32) -> [Pair] {
        order.compactMap { pairs[$0]?.creator == pid ? pairs[$0] : nil }
    }
}
