import CXXHash
import Syscall

/// The size of a chunk: one page, `Page.size`. Kept for the Store's clients that do not import
/// Syscall (the benchmarks); the package's own code says `Page.size`.
public let pageSize = Page.size

/// A chunk's identity: XXH3-128 of its 4 KiB of bytes. Compared and stored big-endian
/// (XXH128's canonical form), so the byte order of the index is the numeric order.
public struct ChunkID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The id of `bytes` (any length; chunks are one page).
    public init(hashing bytes: UnsafeRawBufferPointer) {
        let hash = XXH3_128bits(bytes.baseAddress, bytes.count)
        self.init(high: hash.high64, low: hash.low64)
    }

    /// The all-zero page: implicit, never stored, always readable.
    public static let zeroPage: ChunkID = {
        let zeros = [UInt8](repeating: 0, count: Page.size)
        return zeros.withUnsafeBytes { ChunkID(hashing: $0) }
    }()

    /// All 128 bits zero; used as "no parent" in manifests.
    public static let none = ChunkID(high: 0, low: 0)

    public static func < (a: ChunkID, b: ChunkID) -> Bool {
        a.high != b.high ? a.high < b.high : a.low < b.low
    }

    /// 32 lowercase hex digits.
    public var hex: String {
        func digits(_ value: UInt64) -> String {
            let s = String(value, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
        return digits(high) + digits(low)
    }

    /// The first 12 hex digits, for people.
    public var short: String { String(hex.prefix(12)) }

    public var description: String { hex }

    /// Parses 32 hex digits; nil for anything else.
    public init?(hex: some StringProtocol) {
        guard hex.count == 32, hex.allSatisfy(\.isHexDigit),
            let high = UInt64(hex.prefix(16), radix: 16), let low = UInt64(hex.suffix(16), radix: 16)
        else { return nil }
        self.init(high: high, low: low)
    }
}

/// XXH3-64, the checksum that closes every store file.
func checksum64(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    XXH3_64bits(bytes.baseAddress, bytes.count)
}

/// Incremental XXH3-128 over a stream (a pack file's name is the hash of its bytes).
final class StreamingHash {
    private let state: OpaquePointer

    init() {
        state = XXH3_createState()
        XXH3_128bits_reset(state)
    }

    deinit { XXH3_freeState(state) }

    func update(_ bytes: UnsafeRawBufferPointer) {
        XXH3_128bits_update(state, bytes.baseAddress, bytes.count)
    }

    func digest() -> ChunkID {
        let hash = XXH3_128bits_digest(state)
        return ChunkID(high: hash.high64, low: hash.low64)
    }
}
