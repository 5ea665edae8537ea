import Foundation
import Store

/// Everything about a process at one generation except its page contents, which the store's
/// page map holds: the metadata blob of a generation manifest, encoded as JSON
/// (`chpox.image/2`) so that it stays readable by people and by other tools.
///
/// The format is this module's own: every type of the image lives in `Image/` with explicit
/// coding keys, so renaming a Swift property cannot change the file. Images written in the
/// first format (`chpox.image/1`, before 2026-12) are read by `ImageFormatV1` and upgraded.
///
/// The page map and the mappings together say what every page holds: a page in the map has
/// the chunk's bytes; a page of a mapping that is not in the map has its backing's bytes (zero
/// for anonymous memory, the file's for a file mapping).
public struct ProcessImage: Codable, Sendable, Equatable {
    public static let currentFormat = "chpox.image/2"
    /// Every format this version reads.
    public static let readableFormats = [
        currentFormat, filesFormat, externalFormat, blockFilesFormat, ImageFormatV1.format,
    ]

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
    public var signalActions: [SignalAction]
    /// Armed interval timers (setitimer).
    public var intervalTimers: [IntervalTimer]
    /// Signals queued for the whole process.
    public var sharedPendingSignals: [SignalInfo]
    public var descriptors: [Descriptor]
    /// What the process uses that a restart cannot recreate, recorded under --skip-unsupported.
    public var unsupported: [String]
    public var capture: CaptureFacts
    /// prctl flags, oom_score_adj, loginuid, membarrier; nil in images from before they were kept.
    public var controls: Controls? = nil
    /// Deleted files that private mappings hold (`Mapping.deletedFile` indexes them); nil in
    /// images written before they were saved.
    public var deletedFiles: [DeletedFile]? = nil
    /// Memfds and shared anonymous memory that descriptors name, recreated whole
    /// (`Descriptor.memoryFile` and `Mapping.memoryFile` index them); nil when there are none
    /// and in images from before they were saved.
    public var memoryFiles: [MemoryFile]? = nil
    /// /proc/PID/cgroup's lines ("4:memory:/a/b", "0::/c"): the control groups it ran in;
    /// nil in images from before they were kept.
    public var cgroups: [String]? = nil
    /// The groups below those, as lines of the same form ("11:name=x:/a/empty"), which a
    /// restart makes where they are gone; nil when none were seen.
    public var cgroupsBelow: [String]? = nil
    /// Its root directory when it ran chrooted (/proc/PID/root as cpx read it); nil when it was
    /// "/" or in images from before chpox restored it.
    public var rootDirectory: String? = nil
    /// Directories deleted while it held them (`Descriptor.deletedDirectory`,
    /// `deletedWorkingDirectory` index them); nil when none.
    public var deletedDirectories: [Descriptor.DeletedDirectory]? = nil
    /// Its working directory when it was deleted: its index in `deletedDirectories`.
    public var deletedWorkingDirectory: Int? = nil
    /// Guard pages (MADV_GUARD_INSTALL) as [start, end) runs; nil when it had none.
    public var guardPages: [[UInt64]]? = nil
    /// Pages it shares copy-on-write with its parent, as fork left them (one physical page at
    /// the same address in both: `TreeCapture.findCopyOnWrite`), as [start, end) runs; a restart
    /// forks it from its parent once the parent's memory is rebuilt and keeps those pages
    /// (`TreeLayout.inheritedMappings`). nil when none were seen (and for the first process).
    public var copyOnWrite: [[UInt64]]? = nil
    /// Where the process sits in its tree: parent, process group, session, address space.
    /// nil in images from before trees were checkpointed (a process alone).
    public var position: TreePosition? = nil
    /// On the first process of a tree only: every other process of it, each after its parent.
    public var tree: [ProcessImage]? = nil
    /// On the first process of a tree only: the zombies among its descendants.
    public var zombies: [Zombie]? = nil
    /// Its POSIX timers (timer_create); nil in images from before they were restored.
    public var posixTimers: [PosixTimer]? = nil
    /// Its AIO contexts (io_setup), each with its ring's `Mapping` (backing `aio-ring`); nil
    /// when it had none.
    public var aioContexts: [AioContext]? = nil
    /// On the first process of a tree only: the regular files the tree was writing, whose
    /// contents the generation holds (`RecordedFile`); nil when none (the image's format is
    /// then `currentFormat`, else `filesFormat`).
    public var files: [RecordedFile]? = nil
    /// The bytes of its vDSO (the `[vdso]` mapping) at the checkpoint: its code, which the
    /// pointers its libc resolved at startup lead into. A restart under a kernel whose vDSO
    /// differs puts them back at their address and sends each entry to the running kernel's
    /// (`VDSOProxy`). nil when it had no vDSO, and in images from before they were kept.
    public var vdso: Data? = nil

    enum CodingKeys: String, CodingKey {
        case format, pid, command, executable, workingDirectory, umask, credentials, limits, addressSpace, mappings,
            threads
        case signalActions, intervalTimers, sharedPendingSignals, descriptors, unsupported, capture, controls,
            deletedFiles, cgroups, cgroupsBelow, position, tree, zombies, rootDirectory, guardPages, memoryFiles,
            posixTimers, deletedDirectories, deletedWorkingDirectory, aioContexts, copyOnWrite, files, vdso
    }

    public init(
        pid: Int32, command: [String], executable: String, workingDirectory: String, umask: UInt32,
        credentials: Credentials,
        limits: [ResourceLimit], addressSpace: AddressSpace, mappings: [Mapping], threads: [ThreadImage],
        signalActions: [SignalAction], intervalTimers: [IntervalTimer], sharedPendingSignals: [SignalInfo],
        descriptors: [Descriptor], unsupported: [String], capture: CaptureFacts, controls: Controls? = nil
    ) {
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
        self.intervalTimers = intervalTimers
        self.sharedPendingSignals = sharedPendingSignals
        self.descriptors = descriptors
        self.unsupported = unsupported
        self.capture = capture
        self.controls = controls
    }

    /// The image as a manifest's metadata: JSON with sorted keys. A failure throws; it never
    /// yields empty metadata.
    public func encoded() throws(CheckpointError) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do { return Array(try encoder.encode(self)) } catch {
            throw .unencodableImage(pid: pid, reason: "\(error)")
        }
    }

    /// Reads an image of any format in `readableFormats`.
    public init(decoding bytes: [UInt8], generation: UInt64) throws(CheckpointError) {
        struct Tag: Decodable { var format: String }
        let data = Data(bytes)
        do {
            let format = try JSONDecoder().decode(Tag.self, from: data).format
            switch format {
            case Self.currentFormat, Self.filesFormat, Self.externalFormat, Self.blockFilesFormat:
                self = try JSONDecoder().decode(ProcessImage.self, from: data)
            case ImageFormatV1.format: self = try JSONDecoder().decode(ImageFormatV1.Image.self, from: data).upgraded()
            default:
                throw CheckpointError.badImage(
                    generation: generation,
                    reason: "format '\(format)' is none of "
                        + "\(Self.readableFormats.joined(separator: ", ")); use the chpox that wrote it")
            }
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw .badImage(generation: generation, reason: "\(error)")
        }
    }
}
