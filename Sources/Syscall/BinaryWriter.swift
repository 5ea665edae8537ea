/// Builds a byte array in a fixed byte order: little-endian integers unless asked otherwise,
/// whatever the host. The one writer for every format chpox emits: the store's files (which
/// add chunk ids, strings and checksums in Store), ELF core files, and the bytes written into
/// a restarted process.
public struct BinaryWriter: Sendable {
    @usableFromInline
    var storage: [UInt8] = []

    /// Everything written so far.
    @inlinable
    public var bytes: [UInt8] { storage }

    @inlinable
    public init(capacity: Int = 256) { storage.reserveCapacity(capacity) }

    /// `value`, little-endian, in exactly `T`'s width.
    @inlinable
    public mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { storage.append(contentsOf: $0) }
    }

    /// `value`, big-endian, in exactly `T`'s width.
    @inlinable
    public mutating func append<T: FixedWidthInteger>(bigEndian value: T) {
        withUnsafeBytes(of: value.bigEndian) { storage.append(contentsOf: $0) }
    }

    /// Bytes as they are.
    @inlinable
    public mutating func append(bytes more: some Sequence<UInt8>) { storage.append(contentsOf: more) }

    /// A magic string's bytes, with no length and no terminator.
    @inlinable
    public mutating func append(magic: StaticString) {
        magic.withUTF8Buffer { storage.append(contentsOf: $0) }
    }

    /// Zero bytes up to the next multiple of `alignment`.
    @inlinable
    public mutating func pad(toMultipleOf alignment: Int) {
        while storage.count % alignment != 0 { storage.append(0) }
    }
}
