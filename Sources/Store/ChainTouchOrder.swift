import Syscall

/// The pages a lazy restart of a chain saw its process touch first, in order (`ld-chpox
/// --lazy`): the next lazy restart of any generation of the chain streams those pages first,
/// so that what the program needs soon after it starts is in before it asks (REAP, ASPLOS'21,
/// measured that a restored function's working set repeats from run to run). A hint only: a
/// missing or damaged file means no order, never a failed restart.
///
///     "CHPXTCH1"  magic
///     u32         version (1)
///     string      the chain's name
///     u64         count, then count u64 page numbers
///     u64         checksum of everything before it
///
/// Kept as STORE/chains/<name>.touched beside the chain, 0600 like every store file.
public struct TouchOrder: Sendable, Equatable {
    public var chain: String
    public var pages: [UInt64]

    public init(chain: String, pages: [UInt64]) {
        self.chain = chain
        self.pages = pages
    }

    static let version: UInt32 = 1
    /// The most pages kept (256 MiB of memory).
    public static let maxPages = 65536
    static let maxSize = 64 + maxPages * 8 + 4096

    static func fileName(_ chain: String) -> String { "\(chain).touched" }

    func encoded() -> [UInt8] {
        var writer = BinaryWriter(capacity: 64 + pages.count * 8)
        writer.append(magic: "CHPXTCH1")
        writer.append(Self.version)
        writer.append(string: chain)
        writer.append(UInt64(pages.count))
        for page in pages { writer.append(page) }
        writer.appendChecksum()
        return writer.bytes
    }

    init(decoding bytes: UnsafeRawBufferPointer, file: String) throws(StoreError) {
        var reader = BinaryReader(bytes, file: file)
        try reader.expect(magic: "CHPXTCH1")
        let version: UInt32 = try reader.read()
        guard version == Self.version else { throw .malformed(file: file, reason: "touch order format \(version)") }
        chain = try reader.readString()
        let count: UInt64 = try reader.read()
        try reader.check(count: count, recordSize: 8, "page")
        pages = []
        pages.reserveCapacity(Int(count))
        for _ in 0..<count { pages.append(try reader.read()) }
        try reader.verifyChecksum()
    }
}

extension Store {
    /// The touch order recorded for chain `name`, or nil when there is none (or it cannot be
    /// read: it is only a hint).
    public func touchOrder(of name: String) -> TouchOrder? {
        guard Chain.isValidName(name),
            let bytes = try? directory.readFile(
                TouchOrder.fileName(name), in: directory.chains, dirName: "chains", limit: TouchOrder.maxSize)
        else { return nil }
        let file = "\(path)/chains/\(TouchOrder.fileName(name))"
        func decode(_ raw: UnsafeRawBufferPointer) throws(StoreError) -> TouchOrder {
            try TouchOrder(decoding: raw, file: file)
        }
        guard let order = try? bytes.withRawBytes(decode), order.chain == name else { return nil }
        return order
    }

    /// Replaces chain `name`'s touch order with `pages` (the first `TouchOrder.maxPages`).
    /// Fails on a store this process may only read (root restarting a user's image).
    public func recordTouchOrder(chain name: String, pages: [UInt64]) throws(StoreError) {
        guard Chain.isValidName(name) else { throw .invalidChainName(name) }
        try directory.requireWritable("record the touch order of chain \(name)")
        let order = TouchOrder(chain: name, pages: Array(pages.prefix(TouchOrder.maxPages)))
        try StoreLock.withLock(.store, .shared, in: directory) { () throws(StoreError) in
            try directory.publish(
                order.encoded(), as: TouchOrder.fileName(name), in: directory.chains, dirName: "chains")
        }
    }
}
