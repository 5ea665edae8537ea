import Foundation

/// What a descriptor's open file held beyond its path and offset: a pipe's buffer, a deleted
/// file's attributes, a deleted device node or symbolic link.
extension ProcessImage.Descriptor {
    /// A pipe (or a FIFO) one or more descriptors of the process have open.
    public struct Pipe: Codable, Sendable, Equatable {
        /// Its inode: descriptors with the same one are ends of the same pipe.
        public var inode: UInt64
        /// F_GETPIPE_SZ.
        public var capacity: Int
        /// A FIFO's path (reopened at restart); nil for a pipe.
        public var path: String?
        /// The bytes queued in it, on the lowest descriptor of the pipe only.
        public var contents: Data?

        enum CodingKeys: String, CodingKey { case inode, capacity, path, contents }

        public init(inode: UInt64, capacity: Int, path: String? = nil, contents: Data? = nil) {
            (self.inode, self.capacity, self.path, self.contents) = (inode, capacity, path, contents)
        }
    }

    /// A directory deleted while the process held it (its cwd, or open): made again under its
    /// name for the restart to open, and removed again.
    public struct DeletedDirectory: Codable, Sendable, Equatable {
        /// Its path, without " (deleted)".
        public var path: String
        public var permissions: UInt32
        public var owner: UInt32
        public var group: UInt32

        public init(path: String, permissions: UInt32, owner: UInt32, group: UInt32) {
            (self.path, self.permissions, self.owner, self.group) = (path, permissions, owner, group)
        }
    }

    /// A deleted regular file: what its recreation must have besides its bytes.
    public struct DeletedFile: Codable, Sendable, Equatable {
        /// Permission bits, set-id and sticky bits included.
        public var permissions: UInt32
        public var owner: UInt32
        public var group: UInt32
        /// Modification time, seconds and nanoseconds.
        public var modified: [Int64]
        /// The byte ranges holding data, [start, end) each; the rest of the file is holes.
        public var dataRanges: [[Int64]]
        /// A lower descriptor open on the same deleted file (a hard link of it, or the file
        /// opened twice): restored by reopening that one, so both see one file again.
        public var sameFileAs: Int32?
        /// Its size; nil in images from before it was kept, whose `deletedFile` descriptors
        /// hold the whole file (its size is theirs).
        public var size: Int64?

        enum CodingKeys: String, CodingKey { case permissions, owner, group, modified, dataRanges, sameFileAs, size }

        public init(
            permissions: UInt32, owner: UInt32, group: UInt32, modified: [Int64], dataRanges: [[Int64]],
            sameFileAs: Int32? = nil, size: Int64? = nil
        ) {
            (self.permissions, self.owner, self.group, self.modified) = (permissions, owner, group, modified)
            (self.dataRanges, self.sameFileAs, self.size) = (dataRanges, sameFileAs, size)
        }

        /// Whether `ranges` of a file of `size` bytes leave no hole: then the bytes of its data
        /// ranges one after another are the whole file.
        public static func isWhole(_ ranges: [Range<Int64>], size: Int64) -> Bool {
            size == 0 || ranges == [0..<size]
        }
    }

    /// A device node or symbolic link deleted while the process held it open: made again
    /// beside where it was, opened with the recorded flags, and removed again.
    public struct DeletedNode: Codable, Sendable, Equatable {
        /// What it is; a restart refuses a type it does not know (the decoding fails).
        public enum NodeType: String, Codable, Sendable {
            /// A character device node (S_IFCHR), of a device whose open file holds no state.
            case characterDevice = "character-device"
            /// A symbolic link, held open with O_PATH | O_NOFOLLOW.
            case symlink
        }

        /// Its path when it was deleted, without " (deleted)".
        public var path: String
        public var type: NodeType
        /// Permission bits, set-id and sticky bits included (0777 for a symbolic link).
        public var permissions: UInt32
        public var owner: UInt32
        public var group: UInt32
        /// A device node's device: [major, minor].
        public var device: [UInt32]?
        /// A symbolic link's target.
        public var linkTarget: String?

        enum CodingKeys: String, CodingKey { case path, type, permissions, owner, group, device, linkTarget }

        public init(
            path: String, type: NodeType, permissions: UInt32, owner: UInt32, group: UInt32, device: [UInt32]? = nil,
            linkTarget: String? = nil
        ) {
            (self.path, self.type, self.permissions, self.owner, self.group) = (path, type, permissions, owner, group)
            (self.device, self.linkTarget) = (device, linkTarget)
        }

        /// What it is, for people: "character device 1:3 /tmp/x, mode 0620".
        public var summary: String {
            switch type {
            case .characterDevice:
                "character device \(device.map { $0.map(String.init).joined(separator: ":") } ?? "?") \(path), "
                    + "mode 0\(String(permissions, radix: 8))"
            case .symlink: "symbolic link \(path) to \(linkTarget ?? "?")"
            }
        }
    }
}
