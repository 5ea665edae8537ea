import Syscall

/// Little-endian encoding of the store's file formats: Syscall's `BinaryWriter`, plus what
/// only the store writes (chunk ids, length-prefixed strings, checksums). Every parser goes
/// through `BinaryReader`, which checks each length against the bytes that remain before it
/// allocates, so malformed input ends in a `StoreError.malformed` naming the file, never a crash.
extension BinaryWriter {
    /// A chunk id, big-endian (its canonical, sortable form).
    mutating func append(_ id: ChunkID) {
        append(bigEndian: id.high)
        append(bigEndian: id.low)
    }

    /// A UTF-8 string prefixed by its length as a UInt16.
    mutating func append(string: String) {
        let utf8 = Array(string.utf8)
        append(UInt16(utf8.count))
        append(bytes: utf8)
    }

    /// Appends the XXH3-64 of everything written so far.
    mutating func appendChecksum() {
        let sum = bytes.withUnsafeBytes { checksum64($0) }
        append(sum)
    }
}

struct BinaryReader {
    let bytes: UnsafeRawBufferPointer
    /// The file being parsed, for error messages.
    let file: String
    private(set) var offset: Int = 0

    init(_ bytes: UnsafeRawBufferPointer, file: String) {
        self.bytes = bytes
        self.file = file
    }

    var remaining: Int { bytes.count - offset }

    func fail(_ what: String) -> StoreError {
        .malformed(file: file, reason: "\(what) at byte \(offset)")
    }

    mutating func skip(_ count: Int) throws(StoreError) {
        guard count >= 0, count <= remaining else { throw fail("truncated") }
        offset += count
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type = T.self) throws(StoreError) -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else { throw fail("truncated") }
        let value = T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += size
        return value
    }

    mutating func readID() throws(StoreError) -> ChunkID {
        guard remaining >= 16 else { throw fail("truncated") }
        let id = loadID(bytes, at: offset)
        offset += 16
        return id
    }

    mutating func expect(magic: StaticString) throws(StoreError) {
        let expected = magic.withUTF8Buffer { Array($0) }
        guard remaining >= expected.count,
            expected.indices.allSatisfy({ bytes[offset + $0] == expected[$0] })
        else { throw StoreError.malformed(file: file, reason: "not a chpox file of this kind (bad magic)") }
        offset += expected.count
    }

    mutating func readString() throws(StoreError) -> String {
        let count = Int(try read(UInt16.self))
        guard count <= remaining else { throw fail("string runs past the end") }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
        offset += count
        guard let string = String(validating: slice, as: UTF8.self) else { throw fail("invalid UTF-8") }
        return string
    }

    mutating func readBytes(_ count: Int) throws(StoreError) -> [UInt8] {
        guard count >= 0, count <= remaining else { throw fail("field runs past the end") }
        let result = Array(bytes[offset..<offset + count])
        offset += count
        return result
    }

    /// Checks a count of fixed-size records against the remaining bytes before anything is
    /// allocated for them.
    func check(count: UInt64, recordSize: Int, _ what: String) throws(StoreError) {
        guard count <= UInt64(remaining / max(recordSize, 1)) else {
            throw fail("\(what) count \(count) exceeds the file")
        }
    }

    /// Verifies the trailing XXH3-64 over everything before it and that nothing follows.
    mutating func verifyChecksum() throws(StoreError) {
        let covered = UnsafeRawBufferPointer(rebasing: bytes[0..<offset])
        let expected = checksum64(covered)
        let stored: UInt64 = try read()
        guard stored == expected else { throw StoreError.malformed(file: file, reason: "checksum mismatch") }
        guard remaining == 0 else { throw fail("\(remaining) unexpected trailing bytes") }
    }
}

/// Reads a big-endian chunk id at `offset` (unchecked: callers check bounds).
@inline(__always)
func loadID(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> ChunkID {
    ChunkID(
        high: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
        low: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
}
