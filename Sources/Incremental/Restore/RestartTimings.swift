import Syscall

/// Where a restart's time went, step by step (`ld-chpox --timings`, `timings` in `--json`): each
/// mark closes a step begun at the previous one. A phase run for several processes of a tree is
/// one step, its times added up, in the order it first ran.
public struct RestartTimings: Sendable {
    public struct Step: Sendable, Equatable {
        public var name: String
        public var nanoseconds: Int64
        public var milliseconds: Double { Double(nanoseconds) / 1e6 }
    }

    public private(set) var steps: [Step] = []
    private var last = ClockTime.monotonic()

    public init() {}

    /// Closes the step that began at the previous mark (or at `init`), naming it `name`.
    public mutating func mark(_ name: String) {
        let now = ClockTime.monotonic()
        add(name, nanoseconds: now - last)
        last = now
    }

    /// Adds a step measured elsewhere (ld-chpox's read of the store comes before the restart).
    public mutating func add(_ name: String, nanoseconds: Int64) {
        if let k = steps.firstIndex(where: { $0.name == name }) {
            steps[k].nanoseconds += nanoseconds
        } else {
            steps.append(Step(name: name, nanoseconds: nanoseconds))
        }
    }

    /// Every step's time added up.
    public var totalNanoseconds: Int64 { steps.reduce(0) { $0 + $1.nanoseconds } }
}
