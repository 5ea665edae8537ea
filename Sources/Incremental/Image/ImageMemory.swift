import Foundation
import Store
import Syscall

/// The image's memory: the mm fields and every mapping (their pages are in the page map).
extension ProcessImage {
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

        enum CodingKeys: String, CodingKey {
            case startCode, endCode, startData, endData, startBrk, brk, startStack, argStart, argEnd, envStart, envEnd,
                auxv
        }

        public init(
            startCode: UInt64, endCode: UInt64, startData: UInt64, endData: UInt64, startBrk: UInt64, brk: UInt64,
            startStack: UInt64, argStart: UInt64, argEnd: UInt64, envStart: UInt64, envEnd: UInt64, auxv: [UInt64]
        ) {
            (self.startCode, self.endCode, self.startData, self.endData) = (startCode, endCode, startData, endData)
            (self.startBrk, self.brk, self.startStack) = (startBrk, brk, startStack)
            (self.argStart, self.argEnd, self.envStart, self.envEnd) = (argStart, argEnd, envStart, envEnd)
            self.auxv = auxv
        }
    }

    /// How a mapping may be accessed, and whether it is shared: the `rwxp` / `rwxs` column of
    /// /proc/PID/maps, which is also its form in the file.
    public struct Protection: OptionSet, Codable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// The corresponding C constant is PROT_READ.
        public static let read = Protection(rawValue: 1)
        /// The corresponding C constant is PROT_WRITE.
        public static let write = Protection(rawValue: 2)
        /// The corresponding C constant is PROT_EXEC.
        public static let execute = Protection(rawValue: 4)
        /// MAP_SHARED (`s`); without it the mapping is private (`p`).
        public static let shared = Protection(rawValue: 8)

        /// The maps column (`r-xp`); nil unless it is four such letters.
        public init?(maps text: String) {
            let letters = Array(text.utf8)
            guard letters.count == 4 else { return nil }
            var protection: Protection = []
            let columns: [(UInt8, Protection)] = [
                (UInt8(ascii: "r"), .read), (UInt8(ascii: "w"), .write), (UInt8(ascii: "x"), .execute),
            ]
            for (k, (letter, flag)) in columns.enumerated() {
                switch letters[k] {
                case letter: protection.insert(flag)
                case UInt8(ascii: "-"): break
                default: return nil
                }
            }
            switch letters[3] {
            case UInt8(ascii: "s"): protection.insert(.shared)
            case UInt8(ascii: "p"): break
            default: return nil
            }
            self = protection
        }

        public var description: String {
            (contains(.read) ? "r" : "-") + (contains(.write) ? "w" : "-") + (contains(.execute) ? "x" : "-")
                + (contains(.shared) ? "s" : "p")
        }

        public init(from decoder: any Decoder) throws {
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let protection = Protection(maps: text) else {
                throw DecodingError.dataCorrupted(
                    .init(codingPath: decoder.codingPath, debugDescription: "protection '\(text)' is not like r-xp"))
            }
            self = protection
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(description)
        }
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
            /// A mapping, shared or private, of one of the image's `memoryFiles` (`memoryFile`):
            /// a shared one stores nothing, a private one its written pages.
            case memoryFile = "memory-file"
            /// The ring of an AIO context (io_setup): the image's `aioContexts` entry of the same
            /// start holds its state; a restart makes the context again and moves its ring here.
            case aioRing = "aio-ring"
            case vdso, vvar, vsyscall

            var isKernel: Bool { self == .vdso || self == .vvar || self == .vsyscall }
        }
        public var start: UInt64
        public var end: UInt64
        public var protection: Protection
        public var backing: Backing
        public var offset: UInt64
        public var device: String
        public var inode: UInt64
        public var path: String
        /// VmFlags from smaps, the kernel's two-letter names (gd grows down, dd don't dump...).
        public var flags: [String]
        /// Pages resident in memory (smaps Rss) just before the final stop; nil in images
        /// written before it was recorded.
        public var residentPages: UInt64? = nil
        /// A private mapping of a deleted file: its index in the image's `deletedFiles`, which
        /// holds the file's contents (clean pages come from the file recreated from them).
        public var deletedFile: Int? = nil
        /// Backing `memoryFile`: its index in the image's `memoryFiles`.
        public var memoryFile: Int? = nil

        enum CodingKeys: String, CodingKey {
            case start, end, protection, backing, offset, device, inode, path, flags, residentPages, deletedFile,
                memoryFile
        }

        public init(
            start: UInt64, end: UInt64, protection: Protection, backing: Backing, offset: UInt64, device: String,
            inode: UInt64, path: String, flags: [String], residentPages: UInt64? = nil
        ) {
            (self.start, self.end, self.protection, self.backing) = (start, end, protection, backing)
            (self.offset, self.device, self.inode, self.path) = (offset, device, inode, path)
            self.flags = flags
            self.residentPages = residentPages
        }

        /// Whether pages of this mapping are held in the store's page map.
        public var storesContents: Bool {
            backing != .sharedFile && backing != .aioRing && !backing.isKernel
                && !(backing == .memoryFile && protection.contains(.shared))
        }
        /// Whether its clean pages come from a file (or memory file) rather than being zero.
        public var isFileBacked: Bool {
            backing == .privateFile || backing == .sharedFile || backing == .memoryFile
        }
        public var pageCount: UInt64 { Page.count(of: end - start) }
        /// VmFlags `gd`: the mapping grows down (a stack).
        public var growsDown: Bool { flags.contains("gd") }

        /// Whether a fork of a process that has `parent` leaves this mapping in the child as it
        /// is: private memory of the same kind (anonymous, or the same file at the same offsets),
        /// within `parent`, and copied by fork (no MADV_DONTFORK, MADV_WIPEONFORK: VmFlags `dc`,
        /// `wf`; neither hugetlb nor droppable; not locked, as fork does not lock it; reserved alike). Such a mapping may keep the pages the child shares copy-on-write with its parent.
        public func isForkCopy(of parent: Mapping) -> Bool {
            guard parent.start <= start, end <= parent.end, growsDown == parent.growsDown,
                !parent.flags.contains("dc"), !parent.flags.contains("wf"), !flags.contains("dp"),
                !flags.contains("ht"),
                !flags.contains("lo"), flags.contains("nr") == parent.flags.contains("nr"),
                deletedFile == nil, parent.deletedFile == nil, memoryFile == nil, parent.memoryFile == nil
            else { return false }
            let anonymous: Set<Backing> = [.anonymous, .heap, .stack]
            if anonymous.contains(backing) { return anonymous.contains(parent.backing) }
            return backing == .privateFile && parent.backing == .privateFile && path == parent.path
                && device == parent.device && inode == parent.inode && !path.hasSuffix(" (deleted)")
                && offset == parent.offset + (start - parent.start)
        }
    }

    /// An AIO context (io_setup): its ring, a mapping of the kernel's "[aio]" file whose address
    /// is the context's id, read whole while the process was stopped. The ring starts with
    /// struct aio_ring (id, nr, head, tail, magic, compat and incompat features, header length:
    /// 32 bytes) and holds `nr` io_events after it; the completed events a program has not
    /// taken are those from `head` to `tail`.
    public struct AioContext: Codable, Sendable, Equatable {
        /// The ring's mapping, [start, end): start is the context id.
        public var start: UInt64
        public var end: UInt64
        /// Slots of the ring (aio_ring.nr): the kernel's nr_events.
        public var events: UInt32
        public var head: UInt32
        public var tail: UInt32
        /// The ring's bytes, header included.
        public var ring: Data

        enum CodingKeys: String, CodingKey { case start, end, events, head, tail, ring }

        public init(start: UInt64, end: UInt64, events: UInt32, head: UInt32, tail: UInt32, ring: Data) {
            (self.start, self.end, self.events, self.head, self.tail, self.ring) = (
                start, end, events, head, tail, ring
            )
        }

        /// The size of struct aio_ring, and of struct io_event.
        public static let headerSize = 32
        public static let eventSize = 32
        /// AIO_RING_MAGIC, AIO_RING_COMPAT_FEATURES, AIO_RING_INCOMPAT_FEATURES.
        public static let magic: UInt32 = 0xa10a_10a1
        public static let compatFeatures: UInt32 = 1
        public static let incompatFeatures: UInt32 = 0

        /// The slots a ring of `size` bytes holds (the kernel fills its pages with them).
        public static func slots(inRingOf size: UInt64) -> UInt32 {
            UInt32((size - UInt64(headerSize)) / UInt64(eventSize))
        }

        /// The io_setup(2) argument that makes a ring of `events` slots again on a machine with
        /// as many CPUs: the kernel takes max(n, 4 * CPUs), doubles it, adds 2 and fills the pages
        /// that need; (events - 2) / 2 needs the same pages whichever of the two it took.
        public var setupEvents: UInt32 { events >= 2 ? (events - 2) / 2 : 1 }
    }

    /// A deleted file mapped by the process, saved whole: a restart recreates it once (a file
    /// without a name) and maps it, and gives it to the descriptors of the same file.
    public struct DeletedFile: Codable, Sendable, Equatable {
        /// Its path when it was deleted, as /proc/PID/maps shows it (" (deleted)" included).
        public var path: String
        public var contents: Data

        enum CodingKeys: String, CodingKey { case path, contents }

        public init(path: String, contents: Data) {
            self.path = path
            self.contents = contents
        }
    }
}
