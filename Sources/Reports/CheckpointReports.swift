import Foundation
import Incremental
import Store

/// What `cpx` prints for each generation: a line for people, a JSON object per line
/// (`"event": "generation"`, schema chpox.checkpoint/1) for scripts.
extension Checkpointer.Generation {
    public var text: String {
        let pause = Format.decimal(Double(pauseMicroseconds) / 1000)
        let total = Format.decimal(Double(totalPauseMicroseconds) / 1000)
        let rounds = preCopyRounds > 0 ? ", \(preCopyRounds) pre-copy round\(preCopyRounds == 1 ? "" : "s")" : ""
        return
            "\(chain) generation \(generation) (\(kind), \(tracker)"
            + (processes > 1 ? ", \(processes) processes" : "") + "): "
            + "\(dirtyPages) pages dirty, \(copiedPages) copied, "
            + "\(newChunks) new chunks, \(Format.bytes(storedBytes)) stored; "
            + "paused \(pause) ms (\(total) ms in all\(rounds)); "
            + "\(milliseconds) ms"
            + (filesRecorded > 0
                ? "\n  files: \(filesRecorded) kept, \(filesRead) read again (changed, \(filesReadEarly) of them while it ran)"
                : "")
            + filesNotKept.map { "\n  warning: file not kept, a restart uses it as it is then: \($0)" }.joined()
            + heldConnections.map { "\n  held for the restart: the connection \($0)" }.joined()
            + closedConnections.map { "\n  closed at the restart (--tcp-close): the connection \($0)" }.joined()
            + externalUnixSockets.map { "\n  external (--external-unix): \($0)" }.joined()
            + warnings.map { "\n  warning: \($0)" }.joined()
    }
}

public enum CheckpointReports {
    public static let schema = "chpox.checkpoint/1"

    public static func json(_ generation: Checkpointer.Generation) -> String {
        struct Line: Encodable {
            var schema = CheckpointReports.schema
            var generation: Checkpointer.Generation
            func encode(to encoder: Encoder) throws {
                try generation.encode(to: encoder)
                var container = encoder.container(keyedBy: Key.self)
                try container.encode(schema, forKey: .schema)
            }
            enum Key: String, CodingKey { case schema }
        }
        return StoreReports.jsonLine(Line(generation: generation))
    }

    public static func ending(_ ending: CheckpointSchedule.Ending, pid: Int32, json: Bool) -> String {
        let (event, count, words): (String, Int, String)
        switch ending {
        case .completed(let n): (event, count, words) = ("completed", n, "done")
        case .exited(let n): (event, count, words) = ("exited", n, "pid \(pid) exited")
        case .stopped(let n): (event, count, words) = ("stopped", n, "stopped on request")
        }
        if json { return "{\"event\":\"\(event)\",\"generations\":\(count),\"pid\":\(pid),\"schema\":\"\(schema)\"}" }
        return "\(words): \(count) generation\(count == 1 ? "" : "s") taken"
    }
}
