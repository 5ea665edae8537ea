import Foundation

/// What a descriptor's open file held beyond its path and offset: a pipe's buffer, a deleted
/// file's attributes.
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

        enum CodingKeys: String, CodingKey { case permissions, owner, group, modified, dataRanges, sameFileAs }

        public init(
            permissions: UInt32, owner: UInt32, group: UInt32, modified: [Int64], dataRanges: [[Int64]],
            sameFileAs: Int32? = nil
        ) {
            (self.permissions, self.owner, self.group, self.modified) = (permissions, owner, group, modified)
            (self.dataRanges, self.sameFileAs) = (dataRanges, sameFileAs)
        }
    }
}
