import Foundation

/// The image's process-wide facts: who it runs as, its limits, its descriptors, and how the
/// generation was taken.
extension ProcessImage {
    public struct Credentials: Codable, Sendable, Equatable {
        /// One kind of id as the kernel keeps four of them (/proc/PID/status Uid: and Gid:).
        public struct IDs: Codable, Sendable, Equatable {
            public var real: UInt32
            public var effective: UInt32
            public var saved: UInt32
            public var filesystem: UInt32

            enum CodingKeys: String, CodingKey { case real, effective, saved, filesystem }

            public init(real: UInt32, effective: UInt32, saved: UInt32, filesystem: UInt32) {
                (self.real, self.effective, self.saved, self.filesystem) = (real, effective, saved, filesystem)
            }

            /// The four in the order /proc/PID/status lists them; nil unless there are four.
            public init?(_ list: [UInt32]) {
                guard list.count == 4 else { return nil }
                self.init(real: list[0], effective: list[1], saved: list[2], filesystem: list[3])
            }

            /// The four, in the order /proc/PID/status lists them.
            public var all: [UInt32] { [real, effective, saved, filesystem] }
        }

        public var user: IDs
        public var group: IDs
        /// Supplementary groups.
        public var groups: [UInt32]
        /// Its capability sets (every thread's the same; a process whose threads differ is
        /// refused at checkpoint); nil in images from before they were kept.
        public var capabilities: Capabilities? = nil

        enum CodingKeys: String, CodingKey { case user, group, groups, capabilities }

        public init(user: IDs, group: IDs, groups: [UInt32], capabilities: Capabilities? = nil) {
            (self.user, self.group, self.groups, self.capabilities) = (user, group, groups, capabilities)
        }
    }

    /// capabilities(7): the five sets of a thread, bit n for capability n, as /proc/PID/status
    /// shows them (CapInh, CapPrm, CapEff, CapBnd, CapAmb).
    public struct Capabilities: Codable, Sendable, Equatable {
        public var inheritable: UInt64
        public var permitted: UInt64
        public var effective: UInt64
        public var bounding: UInt64
        public var ambient: UInt64

        enum CodingKeys: String, CodingKey { case inheritable, permitted, effective, bounding, ambient }

        public init(inheritable: UInt64, permitted: UInt64, effective: UInt64, bounding: UInt64, ambient: UInt64) {
            (self.inheritable, self.permitted, self.effective) = (inheritable, permitted, effective)
            (self.bounding, self.ambient) = (bounding, ambient)
        }

        /// One line for people: "permitted 0x..., effective 0x..., ...", each set in hex.
        public var summary: String {
            [
                ("inheritable", inheritable), ("permitted", permitted), ("effective", effective),
                ("bounding", bounding), ("ambient", ambient),
            ].map { "\($0) 0x\(String($1, radix: 16))" }.joined(separator: ", ")
        }
    }

    public struct ResourceLimit: Codable, Sendable, Equatable {
        /// RLIMIT_* number.
        public var resource: Int32
        public var name: String
        public var soft: UInt64
        public var hard: UInt64

        enum CodingKeys: String, CodingKey { case resource, name, soft, hard }

        public init(resource: Int32, name: String, soft: UInt64, hard: UInt64) {
            (self.resource, self.name, self.soft, self.hard) = (resource, name, soft, hard)
        }
    }

    /// The owner of an open file's I/O signals: F_OWNER_TID 0, F_OWNER_PID 1 or F_OWNER_PGRP
    /// 2 and its pid; the signal (0: SIGIO); the real and effective uid recorded with it, which
    /// decide whether the signal may be sent.
    public struct SignalOwner: Codable, Sendable, Equatable {
        public var type: Int32
        public var pid: Int32
        public var signal: Int32
        public var uid: UInt32
        public var euid: UInt32
        public init(type: Int32, pid: Int32, signal: Int32, uid: UInt32, euid: UInt32) {
            (self.type, self.pid, self.signal, self.uid, self.euid) = (type, pid, signal, uid, euid)
        }
    }

    public struct Descriptor: Codable, Sendable, Equatable {
        public enum Kind: String, Codable, Sendable {
            case file, deletedFile = "deleted-file", directory, null, terminal, pipe, event, unsupported
            case socket
            /// A memfd or shared anonymous memory (`memoryFile`).
            case memoryFile = "memory-file"
            /// One of the process's own namespaces (/proc/PID/ns/TYPE; `target` "net:[4026531833]").
            case namespace
            /// A directory deleted while it was open (`deletedDirectory`).
            case deletedDirectory = "deleted-directory"
            case inetSocket = "inet-socket"
            /// A pseudo-terminal's master or slave (`pty`: an older restart refuses the kinds).
            case ptyMaster = "pty-master"
            case ptySlave = "pty-slave"
            /// A deleted regular file with holes: `contents` holds the bytes of its data ranges
            /// one after another, `deletedAttributes` its size and those ranges (an older restart,
            /// which would take `contents` for the whole file, refuses the kind). One without
            /// holes is a `deletedFile`, whose `contents` are the whole file.
            case sparseDeletedFile = "sparse-deleted-file"
            /// A deleted device node or symbolic link (`deletedNode`: an older restart refuses
            /// the kind).
            case deletedNode = "deleted-node"

            /// A deleted regular file, with holes or without.
            public var isDeletedFile: Bool { self == .deletedFile || self == .sparseDeletedFile }
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
        /// An eventfd, timerfd, signalfd or epoll descriptor's object (`kind` event).
        public var event: EventObject? = nil
        /// A deleted file that mappings of the process share: its index in `deletedFiles`,
        /// which holds its contents (then `contents` is nil).
        public var deletedFile: Int? = nil
        /// Kind `deletedDirectory`: its index in the image's `deletedDirectories`.
        public var deletedDirectory: Int? = nil
        /// Who gets the open file's I/O signals (F_SETOWN_EX, F_SETSIG); nil when nobody does.
        public var signalOwner: SignalOwner? = nil
        /// The lower descriptor this one is a duplicate of (one open file description: dup,
        /// fork); restored by dup3, sharing offset and status flags again.
        public var duplicateOf: Int32? = nil
        /// A pipe or FIFO: which one, its capacity and the bytes queued in it.
        public var pipe: Pipe? = nil
        /// A deleted file's permissions, owner, time and holes (and the descriptor it shares
        /// the file with).
        public var deletedAttributes: DeletedFile? = nil
        /// An flock(2) lock held through this open file: "shared" or "exclusive".
        public var flock: String? = nil
        /// The open-file-description locks (fcntl F_OFD_SETLK) held through this open file.
        public var ofdLocks: [RangeLock]? = nil
        /// The process's POSIX record locks (fcntl F_SETLK) on this descriptor's file, as fdinfo
        /// lists them under the open file they were taken through (the process owns them, not
        /// the open file: any descriptor of the file takes them again).
        public var posixLocks: [RangeLock]? = nil
        /// A lease (fcntl F_SETLEASE) held by this open file, not being broken: "read" or "write".
        public var lease: String? = nil
        /// The open file description of a descriptor of an earlier process of the tree (one
        /// shared offset and status flags, as fork left it): restored by taking that one.
        public var inherited: Inherited? = nil
        /// A deleted file an earlier process of the tree has open too (its own open file of it):
        /// restored by opening that process's, so both see one file again (`contents` is nil).
        public var deletedFileOf: Inherited? = nil
        /// A UNIX socket of a pair (`kind` socket).
        public var socket: UnixSocket? = nil
        /// Kind `memoryFile`: its index in the image's `memoryFiles`.
        public var memoryFile: Int? = nil
        /// An IPv4 or IPv6 socket (`kind` inet-socket: an older restart refuses the kind).
        public var inet: InetSocket? = nil
        /// A pseudo-terminal's master or slave (`kind` pty-master, pty-slave).
        public var pty: PseudoTerminal? = nil
        /// A deleted device node or symbolic link (`kind` deleted-node).
        public var deletedNode: DeletedNode? = nil

        /// A byte-range lock (struct flock): read (shared) or write (exclusive), from `start`
        /// for `length` bytes, 0: to the end of the file however long it grows.
        public struct RangeLock: Codable, Sendable, Equatable {
            public var exclusive: Bool
            public var start: Int64
            public var length: Int64

            enum CodingKeys: String, CodingKey { case exclusive, start, length }

            public init(exclusive: Bool, start: Int64, length: Int64) {
                (self.exclusive, self.start, self.length) = (exclusive, start, length)
            }
        }

        enum CodingKeys: String, CodingKey {
            case fd, kind, target, flags, offset, contents, size, event, deletedFile, duplicateOf, pipe,
                deletedAttributes, flock, inherited, deletedFileOf
            case socket, memoryFile, signalOwner, deletedDirectory, ofdLocks, posixLocks, lease
            case inet, pty, deletedNode
        }

        public init(
            fd: Int32, kind: Kind, target: String, flags: Int32, offset: Int64, contents: Data? = nil,
            size: Int64? = nil
        ) {
            (self.fd, self.kind, self.target, self.flags, self.offset) = (fd, kind, target, flags, offset)
            (self.contents, self.size) = (contents, size)
        }
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
        /// uname's release of the kernel it ran on.
        public var kernel: String

        enum CodingKeys: String, CodingKey {
            case tracker, pauseNanoseconds, totalPauseNanoseconds, preCopyRounds, pagesCopiedWhileRunning,
                pagesCopiedFrozen, kernel
        }

        public init(
            tracker: String, pauseNanoseconds: Int64, totalPauseNanoseconds: Int64, preCopyRounds: Int,
            pagesCopiedWhileRunning: UInt64, pagesCopiedFrozen: UInt64, kernel: String
        ) {
            (self.tracker, self.pauseNanoseconds, self.totalPauseNanoseconds) = (
                tracker, pauseNanoseconds, totalPauseNanoseconds
            )
            (self.preCopyRounds, self.pagesCopiedWhileRunning, self.pagesCopiedFrozen) = (
                preCopyRounds, pagesCopiedWhileRunning, pagesCopiedFrozen
            )
            self.kernel = kernel
        }
    }
}
