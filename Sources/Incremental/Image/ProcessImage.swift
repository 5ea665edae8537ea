import Foundation
import Store
import Tracee

/// Everything about a process at one generation except its page contents, which the store's
/// page map holds: the metadata blob of a generation manifest, encoded as JSON
/// (`chpox.image/1`) so that it stays readable by people and by other tools.
///
/// The page map and the mappings together say what every page holds: a page in the map has
/// the chunk's bytes; a page of a mapping that is not in the map has its backing's bytes (zero
/// for anonymous memory, the file's for a file mapping).
public struct ProcessImage: Codable, Sendable, Equatable {
    public static let currentFormat = "chpox.image/1"
    public var format = ProcessImage.currentFormat
    public var pid: Int32
    /// argv, as /proc/<pid>/cmdline shows it.
    public var command: [String]
    public var executable: String
    public var workingDirectory: String
    public var umask: UInt32
    public var credentials: Credentials
    public var limits: [ResourceLimit]
    public var addressSpace: AddressSpace
    public var mappings: [Mapping]
    public var threads: [ThreadImage]
    /// Every signal whose action is not the default.
    public var signalActions: [InjectedState.SignalAction]
    /// Armed interval timers (setitimer).
    public var intervalTimers: [InjectedState.IntervalTimer]? = nil
    /// Signals queued for the whole process (128-byte siginfo records).
    public var sharedPendingSignals: [[UInt8]]
    public var descriptors: [Descriptor]
    /// What the process uses that a restart cannot recreate, recorded under --skip-unsupported.
    public var unsupported: [String]
    public var capture: CaptureFacts

    public struct Credentials: Codable, Sendable, Equatable {
        /// real, effective, saved, filesystem
        public var uid: [UInt32]
        public var gid: [UInt32]
        public var groups: [UInt32]
    }

    public struct ResourceLimit: Codable, Sendable, Equatable {
        public var resource: Int32
        public var name: String
        public var soft: UInt64
        public var hard: UInt64
    }

    /// The mm fields `prctl(PR_SET_MM_MAP)` sets at restart.
    public struct AddressSpace: Codable, Sendable, Equatable {
        public var startCode: UInt64
        public var endCode: UInt64
        public var startData: UInt64
        public var endData: UInt64
        public var startBrk: UInt64
        public var brk: UInt64
        public var startStack: UInt64
        public var argStart: UInt64
        public var argEnd: UInt64
        public var envStart: UInt64
        public var envEnd: UInt64
        /// The auxiliary vector as (type, value) words, AT_NULL included.
        public var auxv: [UInt64]
    }

    public struct Mapping: Codable, Sendable, Equatable {
        public enum Backing: String, Codable, Sendable {
            case anonymous, heap, stack
            /// MAP_PRIVATE of a file: clean pages come from the file, written ones are stored.
            case privateFile = "private-file"
            /// MAP_SHARED of a file: the file holds the data; nothing is stored.
            case sharedFile = "shared-file"
            /// MAP_SHARED anonymous memory, memfd or SysV shm: stored.
            case sharedAnonymous = "shared-anonymous"
            case vdso, vvar, vsyscall
        }
        public var start: UInt64
        public var end: UInt64
        /// rwxp / rwxs, as /proc/<pid>/maps prints it.
        public var protection: String
        public var backing: Backing
        public var offset: UInt64
        public var device: String
        public var inode: UInt64
        public var path: String
        /// VmFlags from smaps (gd grows down, dd don't dump...).
        public var flags: [String]
        /// Pages resident in memory (smaps Rss) just before the final stop; nil in images
        /// written before it was recorded.
        public var residentPages: UInt64? = nil

        /// Whether pages of this mapping are held in the store's page map.
        public var storesContents: Bool { backing != .sharedFile && !backing.isKernel }
        public var pageCount: UInt64 { (end - start) / 4096 }
    }

    public struct ThreadImage: Codable, Sendable, Equatable {
        public var state: ThreadState
        /// set_tid_address's pointer (nil if the thread appeared after it was read).
        public var clearAddress: UInt64?
        /// sigaltstack: address, flags, size (nil: none).
        public var alternateStack: [UInt64]? = nil

        /// `alternateStack` by name (nil: none, or a malformed record).
        public var signalStack: (address: UInt64, flags: UInt64, size: UInt64)? {
            guard let words = alternateStack, words.count >= 3 else { return nil }
            return (words[0], words[1], words[2])
        }
    }

    public struct Descriptor: Codable, Sendable, Equatable {
        public enum Kind: String, Codable, Sendable {
            case file, deletedFile = "deleted-file", directory, null, terminal, pipe, unsupported
        }
        public var fd: Int32
        public var kind: Kind
        /// What /proc/<pid>/fd/<fd> points to.
        public var target: String
        /// open(2) flags, O_CLOEXEC included.
        public var flags: Int32
        public var offset: Int64
        /// A deleted regular file's contents (it can be recreated only from here).
        public var contents: Data?
        /// A regular file open for writing: its size then. A restart from this generation
        /// cuts back what the process wrote after it.
        public var size: Int64? = nil
    }

    /// How the generation was taken.
    public struct CaptureFacts: Codable, Sendable, Equatable {
        public var tracker: String
        /// The final freeze (stop-and-copy), in nanoseconds.
        public var pauseNanoseconds: Int64
        /// Every stop of the process for this generation: pre-copy collects, the injector's
        /// and the final freeze.
        public var totalPauseNanoseconds: Int64
        public var preCopyRounds: Int
        public var pagesCopiedWhileRunning: UInt64
        public var pagesCopiedFrozen: UInt64
        public var kernel: String
    }

    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(self)) ?? Data())
    }

    public init(decoding bytes: [UInt8], generation: UInt64) throws(CheckpointError) {
        do {
            self = try JSONDecoder().decode(ProcessImage.self, from: Data(bytes))
        } catch {
            throw .badImage(generation: generation, reason: "\(error)")
        }
        guard format == Self.currentFormat else {
            throw .badImage(generation: generation, reason: "format '\(format)' is not \(Self.currentFormat); use the chpox that wrote it")
        }
    }

    public init(pid: Int32, command: [String], executable: String, workingDirectory: String, umask: UInt32, credentials: Credentials,
                limits: [ResourceLimit], addressSpace: AddressSpace, mappings: [Mapping], threads: [ThreadImage],
                signalActions: [InjectedState.SignalAction], sharedPendingSignals: [[UInt8]], descriptors: [Descriptor],
                unsupported: [String], capture: CaptureFacts, intervalTimers: [InjectedState.IntervalTimer]? = nil) {
        self.intervalTimers = intervalTimers
        self.pid = pid
        self.command = command
        self.executable = executable
        self.workingDirectory = workingDirectory
        self.umask = umask
        self.credentials = credentials
        self.limits = limits
        self.addressSpace = addressSpace
        self.mappings = mappings
        self.threads = threads
        self.signalActions = signalActions
        self.sharedPendingSignals = sharedPendingSignals
        self.descriptors = descriptors
        self.unsupported = unsupported
        self.capture = capture
    }
}

extension ProcessImage.Mapping.Backing {
    var isKernel: Bool { self == .vdso || self == .vvar || self == .vsyscall }
}
