import Foundation

/// The documents of docs/json-schemas.md as Decodable types, for the tests that read what the
/// commands print. A field the schema marks optional is an optional here; every other field
/// must be present with the documented type, or decoding fails and names it. (Whether the
/// document has fields the doc does not list is `JSONSchemaCheck`'s business.)
public enum JSONDocument {
    /// One document, as the commands print it with `--json`.
    public static func decode<Document: Decodable>(_ type: Document.Type, _ text: String) throws -> Document {
        try JSONDecoder().decode(type, from: Data(text.utf8))
    }

    /// A stream: one document a line (`cpx --json`, `cpx track --json`). `growing`: the text
    /// is a log still being written, whose last line may be unfinished: it is left out.
    public static func lines<Document: Decodable>(
        _ type: Document.Type, _ text: String, growing: Bool = false
    ) throws -> [Document] {
        let complete = growing ? String(text[..<(text.lastIndex(of: "\n") ?? text.startIndex)]) : text
        return try complete.split(separator: "\n").map { try decode(type, String($0)) }
    }

    /// A hex address or mask as the documents print them (`"0x7ffd1c2a3000"`).
    public static func hex(_ text: String) -> UInt64? {
        text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : nil
    }
}

/// chpox.chain/1: `dumpinfo --chain --json`.
public struct ChainDocument: Decodable {
    public struct Generation: Decodable {
        public var chain: String
        public var generation: Int
        public var id: String
        public var created: String
        public var createdNanoseconds: Int
        public var kind: String
        public var parent: String?
        public var pagesWritten: Int
        public var zeroPages: Int
        public var unmappedPages: Int
        public var newChunks: Int
        public var storedBytes: Int
        public var newLogicalBytes: Int
        public var dedupRatio: Double?
        public var tracker: String?
        public var pauseMicroseconds: Int?
        public var unsupported: [String]?
    }
    public var schema: String
    public var store: String
    public var generations: [Generation]
}

/// chpox.generation/1: `dumpinfo --generation N --json` (the process image's fields the tests read).
public struct GenerationDocument: Decodable {
    public struct Process: Decodable {
        public struct Mapping: Decodable {
            public var start: String
            public var end: String
            public var size: Int
            public var protection: String
            public var backing: String
            public var path: String
            public var offset: Int
            public var flags: [String]
            public var residentPages: Int?
            public var storedPages: Int
        }
        public var pid: Int
        public var command: [String]
        public var executable: String
        public var workingDirectory: String
        public var umask: String
        public var mappings: [Mapping]
    }
    public var schema: String
    public var store: String
    public var chain: String
    public var generation: Int
    public var id: String
    public var created: String
    public var createdNanoseconds: Int
    public var kind: String
    public var parent: String?
    public var pagesWritten: Int
    public var zeroPages: Int
    public var newChunks: Int
    public var storedBytes: Int
    public var storedPages: Int
    public var process: Process?
}

/// chpox.diff/1: `dumpinfo --diff A B --json`.
public struct DiffDocument: Decodable {
    public struct Range: Decodable {
        public var start: String
        public var pages: Int
    }
    public struct Extent: Decodable {
        public var start: String
        public var end: String
        public var protection: String
        public var backing: String
        public var path: String
    }
    public struct Mapping: Decodable {
        public var change: String
        public var start: String
        public var end: String
        public var protection: String
        public var backing: String
        public var path: String
        public var before: Extent?
        public var changedPages: Int
        public var ranges: [Range]
    }
    /// A descriptor, thread, signal or process attribute that changed.
    public struct Change: Decodable {
        public var change: String
        public var subject: String
        public var before: String?
        public var after: String?
    }
    public var schema: String
    public var store: String
    public var chain: String
    public var from: Int
    public var to: Int
    public var changedPages: Int
    public var mappings: [Mapping]
    public var unattributedRanges: [Range]
    public var descriptors: [Change]
    public var threads: [Change]
    public var signals: [Change]
    public var process: [Change]
}

/// chpox.verify/1: `dumpinfo --verify --json`.
public struct VerifyDocument: Decodable {
    public struct Problem: Decodable {
        public var file: String
        public var message: String
        public var chunks: [String]?
        public var generations: [Ref]?
    }
    public struct Ref: Decodable {
        public var chain: String
        public var generation: Int
    }
    public struct Damaged: Decodable {
        public var chain: String
        public var generation: Int
        public var reason: String
    }
    public struct Dependent: Decodable {
        public var chain: String
        public var generation: Int
        public var dependsOn: Int
    }
    public var schema: String
    public var store: String
    public var deep: Bool
    public var clean: Bool
    public var chains: Int
    public var generations: Int
    public var packs: Int
    public var indexEntries: Int
    public var chunksRehashed: Int
    public var garbagePacks: Int
    public var deadChunks: Int
    public var problems: [Problem]
    public var damaged: [Damaged]
    public var dependents: [Dependent]
}

/// chpox.stats/1: `dumpinfo --stats --json`.
public struct StatsDocument: Decodable {
    public var schema: String
    public var store: String
    public var chains: Int
    public var generations: Int
    public var uniqueChunks: Int
    public var packs: Int
    public var packBytes: Int
    public var logicalBytes: Int
    public var dedupRatio: Double?
    public var referencedChunks: Int?
    public var dedupAcrossChains: Double?
    public var deadChunks: Int?
    public var reclaimableBytes: Int?
}

/// chpox.gc/1: `cpx gc --json`.
public struct GarbageCollectionDocument: Decodable {
    public struct Dropped: Decodable {
        public var chain: String
        public var generation: Int
    }
    public var schema: String
    public var store: String
    public var dryRun: Bool
    public var dropped: [Dropped]
    public var keptGenerations: Int
    public var rewrittenManifests: Int
    public var liveChunks: Int
    public var deadChunks: Int
    public var packsDeleted: Int
    public var packsRepacked: Int
    public var packsWritten: Int
    public var packBytesBefore: Int
    public var packBytesAfter: Int
    public var bytesFreed: Int
    public var seconds: Double
}

/// chpox.restart/1: `ld-chpox --json`.
public struct RestartDocument: Decodable {
    public var schema: String
    public var chain: String
    public var generation: Int
    public var pid: Int
    public var originalPid: Int
    public var samePid: Bool
    public var mappings: Int
    public var pagesWritten: Int
    /// Of those, the pages put in through a userfaultfd of the process (UFFDIO_COPY).
    public var pagesCopied: Int
    public var notices: [String]
    /// `--lazy`: the page server's figures.
    public var lazy: LazyFigures?

    public struct LazyFigures: Decodable {
        public var faults: Int
        public var zeroFaults: Int
        public var faultPages: Int
        public var streamedPages: Int
        public var hintedPages: Int
        public var forks: Int
        public var layoutEvents: Int
        public var milliseconds: Double
        public var pagesOfEndedProcesses: Int
        public var failure: String?
    }
}

/// chpox.check/1: `ld-chpox --check --json`.
public struct CheckDocument: Decodable {
    public var schema: String
    public var store: String
    public var chain: String
    public var generation: Int
    public var pages: Int
    public var bytes: Int
    public var processImage: Bool
    public var notRestored: [String]?
}

/// chpox.core/1: `ld-chpox --core FILE --json`.
public struct CoreDocument: Decodable {
    public var schema: String
    public var chain: String
    public var generation: Int
    public var file: String
    public var executable: String
    public var threads: Int
    public var segments: Int
    public var storedPages: Int
    public var filePages: Int
    public var bytes: Int
}

/// chpox.checkpoint/1: one line of `cpx --json`, a `generation` event or the event ending the
/// stream (`completed`, `exited`, `stopped`). The fields of the other kind of event are nil.
public struct CheckpointEvent: Decodable {
    public struct Generation: Decodable {
        public var chain: String
        public var generation: Int
        public var manifest: String
        public var pid: Int
        public var kind: String
        public var tracker: String
        public var dirtyPages: Int
        public var copiedPages: Int
        public var zeroPages: Int
        public var revertedPages: Int
        public var unmappedPages: Int
        public var newChunks: Int
        public var storedBytes: Int
        public var pauseMicroseconds: Int
        public var totalPauseMicroseconds: Int
        public var preCopyRounds: Int
        public var milliseconds: Int
    }
    public struct Ending: Decodable {
        public var generations: Int
        public var pid: Int
    }
    public var schema: String
    public var event: String
    /// The generation event's fields; nil for an ending.
    public var generation: Generation?
    /// The ending's fields; nil for a generation event.
    public var ending: Ending?

    private enum Keys: String, CodingKey { case schema, event }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        schema = try container.decode(String.self, forKey: .schema)
        event = try container.decode(String.self, forKey: .event)
        if event == "generation" {
            generation = try Generation(from: decoder)
        } else {
            ending = try Ending(from: decoder)
        }
    }
}

/// chpox.probe/1: `cpx --probe --json`.
public struct ProbeDocument: Decodable {
    public struct Tracker: Decodable {
        public var name: String
        public var supported: Bool
        public var detail: String
    }
    public var schema: String
    public var trackers: [Tracker]
    public var auto: String
}

/// chpox.track/1: one line of `cpx track --json`, a `sample` or the ending `exited` event.
public struct TrackEvent: Decodable {
    public struct Sample: Decodable {
        public var index: Int
        public var tracker: String
        public var dirtyPages: Int
        public var wholesalePages: Int
        public var unmappedPages: Int
        public var mappedPages: Int
        public var regions: Int
        public var freezeMicroseconds: Int
    }
    public struct Ending: Decodable {
        public var pid: Int
    }
    public var schema: String
    public var event: String
    public var sample: Sample?
    public var ending: Ending?

    private enum Keys: String, CodingKey { case schema, event }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        schema = try container.decode(String.self, forKey: .schema)
        event = try container.decode(String.self, forKey: .event)
        if event == "sample" {
            sample = try Sample(from: decoder)
        } else {
            ending = try Ending(from: decoder)
        }
    }
}
