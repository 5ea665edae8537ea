import Dispatch

/// Work spread over every core, for the write path's pure, CPU-bound steps (hashing pages,
/// compressing frames). Each iteration writes only what it owns (its slot of an output array,
/// its own buffer), so the result does not depend on the number of cores or the order in which
/// iterations run.
public enum Parallel {
    /// Runs `body(0)`, ..., `body(count - 1)` on Dispatch's pool and returns when all are done;
    /// runs it on the caller's thread when there is a single iteration.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        guard count > 1 else {
            if count == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            // The iterations share only what `body` captures, which the caller partitions.
            let shared = Unchecked(body)
            DispatchQueue.concurrentPerform(iterations: count) { shared.value($0) }
        }
    }

    /// Splits `0..<count` into about `step`-sized blocks and runs `body` on each, in parallel.
    public static func forEachBlock(_ count: Int, step: Int, _ body: (Range<Int>) -> Void) {
        let blocks = (count + step - 1) / step
        forEach(blocks) { k in body((k * step)..<min((k + 1) * step, count)) }
    }

    private struct Unchecked<Value>: @unchecked Sendable {
        let value: Value
        init(_ value: Value) { self.value = value }
    }
}
