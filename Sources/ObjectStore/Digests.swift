import CCrypto

/// The digests S3 needs, from OpenSSL's libcrypto: SHA-256 of payloads and canonical requests,
/// HMAC-SHA256 for the SigV4 signing key, MD5 for comparing a body with a plain ETag.
enum Digests {
    static func sha256(_ bytes: UnsafeRawBufferPointer) -> [UInt8] { digest(bytes, EVP_sha256(), length: 32) }
    static func sha256(_ bytes: [UInt8]) -> [UInt8] { bytes.withUnsafeBytes { sha256($0) } }
    static func sha256(_ text: String) -> [UInt8] { sha256(Array(text.utf8)) }

    static func md5(_ bytes: [UInt8]) -> [UInt8] { bytes.withUnsafeBytes { digest($0, EVP_md5(), length: 16) } }

    static func hmacSHA256(key: [UInt8], _ message: String) -> [UInt8] {
        let message = Array(message.utf8)
        var length: UInt32 = 32
        let mac = [UInt8](unsafeUninitializedCapacity: 32) { buffer, count in
            key.withUnsafeBytes { key in
                message.withUnsafeBufferPointer { message in
                    // HMAC reads no key byte when the length is 0: an empty key's pointer may be nil.
                    _ = HMAC(
                        EVP_sha256(), key.baseAddress, Int32(key.count), message.baseAddress, message.count,
                        buffer.baseAddress, &length)
                }
            }
            count = Int(length)
        }
        precondition(mac.count == 32, "HMAC-SHA256 gave \(mac.count) bytes")
        return mac
    }

    /// Lower-case hex, as SigV4 writes hashes and signatures.
    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 15)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    private static func digest(_ bytes: UnsafeRawBufferPointer, _ type: OpaquePointer?, length: Int) -> [UInt8] {
        var written: UInt32 = 0
        let result = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            // EVP_Digest reads no byte of an empty input: its pointer may be nil.
            let ok = EVP_Digest(bytes.baseAddress, bytes.count, buffer.baseAddress, &written, type, nil)
            precondition(ok == 1, "libcrypto's EVP_Digest failed")
            count = Int(written)
        }
        precondition(result.count == length, "digest of \(result.count) bytes, expected \(length)")
        return result
    }
}
