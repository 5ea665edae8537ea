import Incremental
import SoftDirty
import Syscall

/// What `cpx track` prints for each sample: a line for people; the sample itself, one JSON
/// object per line (schema chpox.track/1), for scripts.
extension DirtyRate.Sample {
    /// One line for people.
    public var text: String {
        let dirty = "\(dirtyPages) pages dirty (\(Format.bytes(Page.bytes(Int64(dirtyPages)))))"
        let mapped = "of \(mappedPages) mapped in \(regions) regions"
        let frozen = "frozen " + Format.decimal(Double(freezeMicroseconds) / 1000) + " ms"
        return "[\(index)] \(tracker): \(dirty) \(mapped); \(wholesalePages) reported whole; \(frozen)"
    }
}

/// What `cpx --probe` prints: each tracker's verdict on this kernel and the automatic choice,
/// as lines for people or a JSON document (schema chpox.probe/1).
public enum ProbeReports {
    public static func text(_ probe: TrackerProbe) -> String {
        (probe.results.map { "\($0.kind.rawValue): \($0.detail)" } + ["auto: \(probe.best.rawValue)"]).joined(
            separator: "\n")
    }

    public static func json(_ probe: TrackerProbe) -> String {
        struct Document: Codable {
            var schema = "chpox.probe/1"
            var trackers: [Entry]
            var auto: String
            struct Entry: Codable { var name: String; var supported: Bool; var detail: String }
        }
        return StoreReports.json(
            Document(
                trackers: probe.results.map {
                    .init(name: $0.kind.rawValue, supported: $0.supported, detail: $0.detail)
                },
                auto: probe.best.rawValue))
    }
}
