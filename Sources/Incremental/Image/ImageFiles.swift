import Foundation
import Store

extension ProcessImage {
    /// The format of an image that records written files (`files`): a chpox that does not know
    /// them refuses the image ("format ... is none of ...") rather than restart it without them.
    public static let filesFormat = "chpox.image/3"
    /// The format of an image with a UNIX socket whose peer was outside the tree
    /// (`UnixSocket.external`), written files or not: a chpox that does not know it refuses the
    /// image rather than restart the socket paired with a closed end.
    public static let externalFormat = "chpox.image/4"
    /// The format of an image with a written file kept in 4 KiB blocks
    /// (`FileChunks.Chunking.blocks`), external UNIX sockets or not: a chpox that does not know
    /// blocks refuses the image rather than read the blocks as content chunks.
    public static let blockFilesFormat = "chpox.image/5"

    /// Each external UNIX socket of `processes` once (`cpx --external-unix`): the process and
    /// descriptor first holding it, the socket and what a restart does with it.
    static func externalUnix(
        _ processes: [ProcessImage]
    ) -> [(pid: Int32, fd: Int32, socket: UnixSocket, external: UnixSocket.External)] {
        var seen: Set<UInt64> = []
        return processes.flatMap { process in
            process.descriptors.compactMap { descriptor in
                guard let socket = descriptor.socket, let external = socket.external,
                    seen.insert(socket.inode).inserted
                else { return nil }
                return (process.pid, descriptor.fd, socket, external)
            }
        }
    }

    /// A line for each external UNIX socket of `processes`, as cpx reports it: "process PID fd N:
    /// UNIX stream socket INODE to PATH: reconnect".
    public static func externalUnixSockets(_ processes: [ProcessImage]) -> [String] {
        externalUnix(processes).map { pid, fd, socket, external in
            "process \(pid) fd \(fd): UNIX \(socket.type.rawValue) socket \(socket.inode) "
                + "to \(external.path ?? "an unnamed socket"): \(external.action.rawValue)"
        }
    }

    /// A line for each external UNIX socket of `processes` (`cpx --external-unix`), as a restart
    /// reports it: connected again, or with its peer closed.
    public static func externalUnixNotices(_ processes: [ProcessImage]) -> [String] {
        externalUnix(processes).map { pid, fd, socket, external in
            let at = "process \(pid) fd \(fd), UNIX \(socket.type.rawValue) socket"
            switch external.action {
            case .reconnect:
                return "reconnected (--external-unix): \(at), connected again to \(external.path ?? "?") (what "
                    + "the peer knew of the old connection is gone)"
            case .close:
                let peer = external.path ?? "an unnamed socket outside the tree"
                return "closed (--external-unix): \(at), its peer \(peer) gone: its next read returns end of "
                    + "file, its next write fails with EPIPE"
            }
        }
    }

    /// Whether a process of the image (`tree` included) holds an external UNIX socket.
    public var hasExternalSockets: Bool {
        ([self] + (tree ?? [])).contains { process in process.descriptors.contains { $0.socket?.external != nil } }
    }

    /// A regular file the tree held open for writing, or mapped shared and writable, at the
    /// generation: its contents are the pages of slot `slot` of the generation's page map, one
    /// chunk a page (`FileChunks`), and a restart puts it back exactly as it was.
    public struct RecordedFile: Codable, Sendable, Equatable {
        public enum State: String, Codable, Sendable {
            /// Its contents are in the store.
            case recorded
            /// Left out by `cpx --exclude-file`: a restart uses the file as it is then.
            case excluded
            /// Larger than `cpx --file-limit`: a restart uses the file as it is then.
            case tooLarge = "too-large"
        }

        /// Its path when it was read.
        public var path: String
        public var state: State
        public var device: UInt64
        public var inode: UInt64
        public var size: Int64
        /// Permission bits, set-id and sticky bits included.
        public var permissions: UInt32
        public var owner: UInt32
        public var group: UInt32
        /// Modification and status change times, seconds and nanoseconds.
        public var modified: [Int64]
        public var changed: [Int64]
        /// The slot of the page map holding its chunks (`FileChunks.range(ofSlot:)`); nil unless
        /// recorded.
        public var slot: UInt64?
        /// How many chunks (pages) it is.
        public var chunks: Int?
        /// XXH3-128 of its bytes, hex: what a restart checks the rebuilt file against.
        public var digest: String?
        /// Why it was not recorded (the glob that excluded it, the limit it exceeds).
        public var reason: String?
        /// Who held it: "process PID fd N" or "process PID mapping 0x...".
        public var heldBy: [String]
        /// How it is cut into the pages of its slot; nil: content-defined chunks (images before
        /// blocks). An image with a file in blocks has format `blockFilesFormat`.
        public var chunking: FileChunks.Chunking?

        enum CodingKeys: String, CodingKey {
            case path, state, device, inode, size, permissions, owner, group, modified, changed, slot, chunks,
                digest, reason, heldBy, chunking
        }

        public init(
            path: String, state: State, device: UInt64, inode: UInt64, size: Int64, permissions: UInt32,
            owner: UInt32, group: UInt32, modified: [Int64], changed: [Int64], heldBy: [String]
        ) {
            (self.path, self.state, self.device, self.inode, self.size) = (path, state, device, inode, size)
            (self.permissions, self.owner, self.group) = (permissions, owner, group)
            (self.modified, self.changed, self.heldBy) = (modified, changed, heldBy)
        }
    }
}
