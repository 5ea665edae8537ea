import Syscall
import Tracee

/// Watches how fast a live process dirties its memory, with any tracker: what `cpx track`
/// prints, and a way to see what a checkpoint interval will cost before taking one.
public struct DirtyRate {
    public struct Sample: Sendable, Codable {
        public var schema = "chpox.track/1"
        public var event = "sample"
        public var index: Int
        public var tracker: String
        /// Pages reported written since the previous sample (everything on sample 0).
        public var dirtyPages: UInt64
        /// Of those, pages reported whole because the tracker could not vouch for them.
        public var wholesalePages: UInt64
        public var unmappedPages: UInt64
        public var mappedPages: UInt64
        public var regions: Int
        /// How long every thread was stopped for the collect, in microseconds.
        public var freezeMicroseconds: Int64
    }

    public let pid: Int32
    public let tracker: any DirtyTracker

    /// Starts `kind` (nil: the best this kernel supports) on process `pid`.
    public init(pid: Int32, tracker kind: TrackerKind?) throws(TraceeError) {
        self.pid = pid
        tracker = try TrackerSelection.start(kind, pid: pid)
    }

    /// Freezes the process, collects, thaws it; returns the figures.
    public func sample(_ index: Int) throws(TraceeError) -> Sample {
        let started = ClockTime.monotonic()
        let frozen = try FrozenProcess(pid: pid)
        let report: DirtyReport
        do { report = try tracker.collect(frozen) } catch {
            frozen.thaw()
            throw error
        }
        frozen.thaw()
        let elapsed = ClockTime.monotonic() - started
        return Sample(
            index: index, tracker: tracker.kind.rawValue, dirtyPages: report.dirty.pageCount,
            wholesalePages: report.wholesale.pageCount, unmappedPages: report.unmapped.pageCount,
            mappedPages: report.regions.reduce(0) { $0 + $1.pageCount }, regions: report.regions.count,
            freezeMicroseconds: elapsed / 1000)
    }
}
