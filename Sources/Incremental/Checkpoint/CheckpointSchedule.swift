import Store
import Tracee

/// `cpx --interval`: a generation every interval until a count is reached, the process exits
/// or the caller asks to stop; optional retention after each generation.
public struct CheckpointSchedule: Sendable {
    /// Seconds between generations; nil: one generation.
    public var interval: Double?
    /// Generations to take in all; nil: until stopped (one without an interval).
    public var count: Int?
    /// After each generation, keep only the newest N of the chain (GC).
    public var keepLast: Int?
    /// What happens to the process after the last generation.
    public var finish: Checkpointer.Finish

    public init(interval: Double? = nil, count: Int? = nil, keepLast: Int? = nil, finish: Checkpointer.Finish = .resume)
    {
        self.interval = interval
        self.count = count
        self.keepLast = keepLast
        self.finish = finish
    }

    public enum Ending: Sendable, Equatable {
        case completed(generations: Int)
        case exited(generations: Int)
        case stopped(generations: Int)
    }

    /// Runs the schedule. `wait(seconds)` sleeps and returns true when the caller wants to
    /// stop (a signal): the generation in flight is always finished first; with a finish
    /// action, a last generation is taken then. `report` sees every generation and GC.
    public func run(
        _ checkpointer: Checkpointer, wait: (Double) -> Bool,
        report: (Checkpointer.Generation, GCReport?) -> Void
    ) throws(CheckpointError) -> Ending {
        var taken = 0
        let total = count ?? (interval == nil ? 1 : nil)
        while true {
            let last = total.map { taken + 1 >= $0 } ?? false
            let generation: Checkpointer.Generation
            do {
                generation = try checkpointer.checkpoint(finish: last ? finish : .resume)
            } catch {
                // The process ending between generations ends the schedule, not in error.
                if taken > 0, case .process(let inner) = error,
                    inner == .noSuchProcess(pid: checkpointer.pid) || inner == .zombie(pid: checkpointer.pid)
                {
                    return .exited(generations: taken)
                }
                throw error
            }
            taken += 1
            var collected: GCReport?
            if let keepLast {
                do {
                    collected = try checkpointer.store.collectGarbage(
                        RetentionPolicy(keepLast: keepLast, chains: [checkpointer.options.chain]))
                } catch {
                    throw .store(error)
                }
            }
            report(generation, collected)
            if last { return .completed(generations: taken) }
            guard let interval else { return .completed(generations: taken) }
            if wait(interval) {
                guard finish != .resume else { return .stopped(generations: taken) }
                let final = try checkpointer.checkpoint(finish: finish)
                report(final, nil)
                return .stopped(generations: taken + 1)
            }
        }
    }
}
