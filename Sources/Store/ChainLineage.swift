import Syscall

/// One process, told apart from every other process this machine ever ran: the boot it ran in
/// (/proc/sys/kernel/random/boot_id), its pid, and when it started (clock ticks after boot,
/// /proc/PID/stat field 22). A pid alone is reused; the three together never are.
public struct ProcessIdentity: Sendable, Equatable, Hashable {
    public var bootID: String
    public var pid: Int32
    public var startTicks: UInt64

    public init(bootID: String, pid: Int32, startTicks: UInt64) {
        (self.bootID, self.pid, self.startTicks) = (bootID, pid, startTicks)
    }
}

/// The processes that may extend a chain: the process whose first generation began it, and the
/// processes restarted from it (`ld-chpox` adds each one when it hands it over) or that took it
/// over on purpose (`cpx --adopt`). A chain belongs to one process lineage, so two processes
/// never interleave their generations in one chain.
///
/// It lives beside the chain, in `chains/<name>.lineage`, replaced atomically (a file of its own:
/// chain files keep their format, so a store stays readable by an older chpox). A chain without
/// one (written before chpox kept lineages, or through the library without a process) has no
/// recorded lineage; a lineage of a chain that does not exist (its first generation failed) is
/// void.
///
///     "CHPXLIN1" u32 version, name (u16 length, UTF-8), u64 count,
///     count x (boot id (u16 length, UTF-8), i32 pid, u32 0, u64 startTicks, i64 recordedNanoseconds,
///              u8 how, u8[7] 0, u64 generation, command (u16 length, UTF-8)), u64 XXH3-64
public struct Lineage: Sendable, Equatable {
    public struct Member: Sendable, Equatable {
        /// How a process joined the lineage.
        public enum How: UInt8, Sendable {
            /// It began the chain (its first generation).
            case began = 0
            /// `ld-chpox` restarted it from generation `generation`.
            case restarted = 1
            /// `cpx --adopt` made it the chain's process from generation `generation` on.
            case adopted = 2
            /// It continued a chain written before lineages were kept, as the process that
            /// chain's newest generation recorded.
            case continued = 3
        }

        public var process: ProcessIdentity
        /// The process's command name (/proc/PID/comm), for messages.
        public var command: String
        public var how: How
        /// The generation it joined at: the first it wrote, or the one it was restarted from.
        public var generation: UInt64
        public var recordedNanoseconds: Int64

        public init(
            process: ProcessIdentity, command: String, how: How, generation: UInt64,
            recordedNanoseconds: Int64 = ClockTime.realtime()
        ) {
            self.process = process
            self.command = command
            self.how = how
            self.generation = generation
            self.recordedNanoseconds = recordedNanoseconds
        }
    }

    public var chain: String
    /// Oldest first.
    public var members: [Member]

    public init(chain: String, members: [Member]) {
        self.chain = chain
        self.members = members
    }

    public func includes(_ process: ProcessIdentity) -> Bool { members.contains { $0.process == process } }

    /// The member that joined last: the process the chain belongs to now, for messages.
    public var newest: Member? { members.last }

    static let version: UInt32 = 1
    static let maxSize = 1 << 20
    /// Each restart adds a member; the oldest are dropped past this many (only live processes
    /// can match, and a lineage this long has long outlived its first processes).
    static let maxMembers = 256
    /// Fixed bytes of one member, besides its two strings' bytes.
    static let memberFixedSize = 2 + 4 + 4 + 8 + 8 + 1 + 7 + 8 + 2

    static func fileName(_ chain: String) -> String { "\(chain).lineage" }

    /// This lineage with `member` added (replacing any older entry for the same process).
    func adding(_ member: Member) -> Lineage {
        var members = self.members.filter { $0.process != member.process }
        members.append(member)
        return Lineage(chain: chain, members: Array(members.suffix(Self.maxMembers)))
    }

    func encoded() -> [UInt8] {
        var writer = BinaryWriter(capacity: 64 + members.count * (Self.memberFixedSize + 64))
        writer.append(magic: "CHPXLIN1")
        writer.append(Self.version)
        writer.append(string: chain)
        writer.append(UInt64(members.count))
        for member in members {
            writer.append(string: member.process.bootID)
            writer.append(member.process.pid)
            writer.append(UInt32(0))
            writer.append(member.process.startTicks)
            writer.append(member.recordedNanoseconds)
            writer.append(member.how.rawValue)
            writer.append(bytes: [UInt8](repeating: 0, count: 7))
            writer.append(member.generation)
            writer.append(string: member.command)
        }
        writer.appendChecksum()
        return writer.bytes
    }

    init(decoding bytes: UnsafeRawBufferPointer, file: String) throws(StoreError) {
        var reader = BinaryReader(bytes, file: file)
        try reader.expect(magic: "CHPXLIN1")
        let version: UInt32 = try reader.read()
        guard version == Self.version else {
            throw .malformed(file: file, reason: "lineage format \(version) is unknown")
        }
        chain = try reader.readString()
        let count: UInt64 = try reader.read()
        try reader.check(count: count, recordSize: Self.memberFixedSize, "member")
        members = []
        for _ in 0..<count {
            let bootID = try reader.readString()
            let pid: Int32 = try reader.read()
            try reader.skip(4)
            let startTicks: UInt64 = try reader.read()
            let recorded: Int64 = try reader.read()
            guard let how = Member.How(rawValue: try reader.read()) else { throw reader.fail("unknown member kind") }
            try reader.skip(7)
            let generation: UInt64 = try reader.read()
            let command = try reader.readString()
            members.append(
                Member(
                    process: ProcessIdentity(bootID: bootID, pid: pid, startTicks: startTicks), command: command,
                    how: how, generation: generation, recordedNanoseconds: recorded))
        }
        try reader.verifyChecksum()
    }
}

extension Store {
    /// The lineage recorded for chain `name`; nil when none is (the chain does not exist, or was
    /// written before lineages were kept).
    public func lineage(of name: String) throws(StoreError) -> Lineage? {
        guard Chain.isValidName(name) else { throw .invalidChainName(name) }
        guard !(try chainOrEmpty(name).entries.isEmpty) else { return nil }
        try remote?.refresh(.lineage, chain: name, in: self)
        let bytes: [UInt8]
        do {
            bytes = try directory.readFile(
                Lineage.fileName(name), in: directory.chains, dirName: "chains", limit: Lineage.maxSize)
        } catch .system(let errno, _, _) where errno == .noSuchFile {
            return nil
        }
        let file = "\(path)/chains/\(Lineage.fileName(name))"
        let lineage = try bytes.withRawBytes { (raw) throws(StoreError) in try Lineage(decoding: raw, file: file) }
        guard lineage.chain == name else { throw .malformed(file: file, reason: "it names chain '\(lineage.chain)'") }
        return lineage
    }

    /// Replaces chain `name`'s lineage. The caller holds the chain's lock.
    func publish(_ lineage: Lineage) throws(StoreError) {
        // Under the shared store lock, as a writer: no reclaim of abandoned writes removes the
        // file from tmp/ while it is being written.
        try StoreLock.withLock(.store, .shared, in: directory) { () throws(StoreError) in
            try directory.publish(
                lineage.encoded(), as: Lineage.fileName(lineage.chain), in: directory.chains, dirName: "chains")
            try remote?.publishLineage(chain: lineage.chain, in: self)
        }
    }

    /// Adds `member` to chain `name`'s lineage, as `ld-chpox` does for the process it restarted.
    /// Takes the chain's lock (briefly, not waiting for a writer that holds it: then it throws
    /// `chainBusy`). Starts a lineage for a chain that had none (it began before lineages were
    /// kept): the restarted process is then the only one recorded.
    public func addToLineage(chain name: String, _ member: Lineage.Member) throws(StoreError) {
        let claim = try ChainClaim(store: self, chain: name)
        try withExtendedLifetime(claim) { () throws(StoreError) in
            let current = try lineage(of: name) ?? Lineage(chain: name, members: [])
            try publish(current.adding(member))
        }
    }
}
