import Foundation

extension ProcessImage {
    /// A shmem object that a restart recreates whole, as one object again for every descriptor
    /// and mapping of it: a memfd (memfd_create; by its descriptors or its mappings), or
    /// shared anonymous memory that a descriptor names (/proc/PID/map_files opened). Its
    /// descriptors (`Descriptor.memoryFile`) and mappings (`Mapping.memoryFile`) index the
    /// image's `memoryFiles`. Shared mappings of it store no pages (the object holds them);
    /// private ones store their written pages only, the rest come from the object.
    public struct MemoryFile: Codable, Sendable, Equatable {
        /// A memfd's name (memfd_create's argument; /proc shows "/memfd:NAME (deleted)");
        /// nil for shared anonymous memory (/proc shows "/dev/zero (deleted)").
        public var memfdName: String?
        /// Its device, as /proc/PID/maps writes it ("00:01"), and inode at the checkpoint: one
        /// object in every process of the tree that has these.
        public var device: String
        public var inode: UInt64
        public var size: Int64
        /// Permission bits, owner and modification time (seconds, nanoseconds).
        public var permissions: UInt32
        public var owner: UInt32
        public var group: UInt32
        public var modified: [Int64]
        /// A memfd's seals (F_GET_SEALS), added at restart once its contents and mappings are
        /// in place; F_SEAL_SEAL alone for one made without MFD_ALLOW_SEALING.
        public var seals: UInt32?
        /// The byte ranges holding data, [start, end) each (the rest is holes), and their
        /// bytes one after the other in `contents`.
        public var dataRanges: [[Int64]]
        public var contents: Data
        /// An earlier process of the tree holds the same object: the restart takes it from
        /// that process (its `memoryFiles` entry `index`), and this one holds no contents.
        public var sameAs: Held?

        /// A memory file of another process of the tree.
        public struct Held: Codable, Sendable, Equatable {
            public var pid: Int32
            public var index: Int

            enum CodingKeys: String, CodingKey { case pid, index }

            public init(pid: Int32, index: Int) { (self.pid, self.index) = (pid, index) }
        }

        enum CodingKeys: String, CodingKey {
            case memfdName, device, inode, size, permissions, owner, group, modified, seals, dataRanges, contents,
                sameAs
        }

        public init(
            memfdName: String?, device: String, inode: UInt64, size: Int64, permissions: UInt32, owner: UInt32,
            group: UInt32, modified: [Int64], seals: UInt32?, dataRanges: [[Int64]], contents: Data
        ) {
            (self.memfdName, self.device, self.inode, self.size) = (memfdName, device, inode, size)
            (self.permissions, self.owner, self.group, self.modified) = (permissions, owner, group, modified)
            (self.seals, self.dataRanges, self.contents) = (seals, dataRanges, contents)
        }

        /// What it is, for people: "memfd somename" or "shared anonymous memory".
        public var what: String { memfdName.map { "memfd \($0)" } ?? "shared anonymous memory" }
    }
}
