#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// Microseconds taken by `work`.
public func microseconds<T>(_ work: () throws -> T) rethrows -> (T, Int) {
    let start = ContinuousClock.now
    let result = try work()
    let elapsed = ContinuousClock.now - start
    return (result, Int(elapsed.components.seconds) * 1_000_000 + Int(elapsed.components.attoseconds / 1_000_000_000_000))
}

/// A line for `run-ratios` (which sets CHPOX_BENCH_NOTES; the plugin does not pass on the
/// benchmark's output in its JMH mode), else for stderr.
public func note(_ line: String) {
    if let path = getenv("CHPOX_BENCH_NOTES"), let file = fopen(path, "a") {
        fputs(line + "\n", file)
        fclose(file)
    } else {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
