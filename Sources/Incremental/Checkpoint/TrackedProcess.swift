import SoftDirty
import Store
import Tracee

/// One process of the tree a checkpointer follows: its own dirty-page tracker, and the address
/// space of the page map its pages go to (`AddressSpaces`; the first process's is 0).
final class TrackedProcess {
    let pid: Int32
    let space: UInt64
    let tracker: any DirtyTracker
    /// Pages the last final stop copied of it: whether a delta is pre-copied where its tracker
    /// cannot tell what is written without a collect.
    var lastFrozenCopy: UInt64 = 0
    /// Its state before the final stop froze it: stopped ('T') processes are restarted stopped.
    var stateBeforeStop: Character = "R"
    /// The signal that stopped it then (stat's exit_code field while it is stopped).
    var stopSignal: Int32 = 0

    init(pid: Int32, space: UInt64, tracker: any DirtyTracker) {
        (self.pid, self.space, self.tracker) = (pid, space, tracker)
    }

    /// Page number `page` of this process, in the generation's page map.
    func number(_ page: UInt64) -> UInt64 { AddressSpaces.range(of: space).first + page }

    /// Page range `range` of this process, in the generation's page map.
    func range(_ range: PageRange) -> PageRange { PageRange(first: number(range.first), count: range.count) }
}
