/// AWS Signature Version 4 for S3, in the Authorization header (the "header-based auth" of
/// the S3 API reference), with the payload's SHA-256 signed: the server recomputes it, so a
/// body damaged on the way is refused instead of stored.
///
///     canonical request  METHOD \n URI \n QUERY \n name:value\n... \n signed;names \n payload SHA-256
///     string to sign     AWS4-HMAC-SHA256 \n 20130524T000000Z \n 20130524/REGION/s3/aws4_request \n SHA-256(canonical request)
///     signing key        HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), "s3"), "aws4_request")
///     signature          hex(HMAC(signing key, string to sign))
public struct SigV4Signer: Sendable {
    public var credentials: S3Credentials
    public var region: String
    public var service = "s3"

    public init(credentials: S3Credentials, region: String) {
        self.credentials = credentials
        self.region = region
    }

    /// A request as it is signed: the path already URI-encoded as it is sent, the query as
    /// name-value pairs (encoded here), the headers that are signed (`host` among them).
    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var query: [(name: String, value: String)]
        public var headers: [(name: String, value: String)]
        public var payloadHash: String

        public init(
            method: String, path: String, query: [(name: String, value: String)] = [],
            headers: [(name: String, value: String)], payloadHash: String
        ) {
            self.method = method
            self.path = path
            self.query = query
            self.headers = headers
            self.payloadHash = payloadHash
        }
    }

    /// The SHA-256 of an empty payload.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// The query string as it is signed and sent: names and values encoded, sorted by name
    /// (then value), a name without a value as `name=`.
    public static func canonicalQuery(_ query: [(name: String, value: String)]) -> String {
        query.map { (uriEncode($0.name, encodeSlash: true), uriEncode($0.value, encodeSlash: true)) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// Header names lower-cased and sorted, values trimmed with inner runs of spaces squeezed.
    static func canonicalHeaders(_ headers: [(name: String, value: String)]) -> [(name: String, value: String)] {
        headers.map { header in
            let value = header.value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            return (header.name.lowercased(), value)
        }
        .sorted { $0.name < $1.name }
    }

    public func canonicalRequest(_ request: Request) -> String {
        let headers = Self.canonicalHeaders(request.headers)
        return [
            request.method,
            request.path.isEmpty ? "/" : request.path,
            Self.canonicalQuery(request.query),
            headers.map { "\($0.name):\($0.value)\n" }.joined(),
            headers.map(\.name).joined(separator: ";"),
            request.payloadHash,
        ].joined(separator: "\n")
    }

    /// `20130524/us-east-1/s3/aws4_request`
    public func scope(date: String) -> String { "\(date.prefix(8))/\(region)/\(service)/aws4_request" }

    /// `timestamp`: the request's `x-amz-date`, `20130524T000000Z`.
    public func stringToSign(_ request: Request, timestamp: String) -> String {
        [
            "AWS4-HMAC-SHA256", timestamp, scope(date: timestamp),
            Digests.hex(Digests.sha256(canonicalRequest(request))),
        ].joined(separator: "\n")
    }

    public func signature(_ request: Request, timestamp: String) -> String {
        var key = Array("AWS4\(credentials.secretAccessKey)".utf8)
        for part in [String(timestamp.prefix(8)), region, service, "aws4_request"] {
            key = Digests.hmacSHA256(key: key, part)
        }
        return Digests.hex(Digests.hmacSHA256(key: key, stringToSign(request, timestamp: timestamp)))
    }

    /// The Authorization header's value.
    public func authorization(_ request: Request, timestamp: String) -> String {
        let signedHeaders = Self.canonicalHeaders(request.headers).map(\.name).joined(separator: ";")
        return "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope(date: timestamp)),"
            + "SignedHeaders=\(signedHeaders),Signature=\(signature(request, timestamp: timestamp))"
    }

    /// S3's URI encoding: every byte but the unreserved `A-Z a-z 0-9 - _ . ~` as `%XX` (upper-case
    /// hex), `/` kept in a path (`encodeSlash: false`). Object keys are encoded once, as sent.
    public static func uriEncode(_ text: String, encodeSlash: Bool) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        var encoded = [UInt8]()
        encoded.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"):
                encoded.append(byte)
            case UInt8(ascii: "/") where !encodeSlash:
                encoded.append(byte)
            default:
                encoded += [UInt8(ascii: "%"), digits[Int(byte >> 4)], digits[Int(byte & 15)]]
            }
        }
        return String(decoding: encoded, as: UTF8.self)
    }
}
