/// Why an S3 request failed: one message naming the operation, the object (`s3://bucket/key`),
/// the endpoint, the HTTP status and S3's error code, and what to do.
public struct S3Error: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// A write-once put found the key taken (412 on `If-None-Match: *`).
        case alreadyExists
        /// A compare-and-swap put found another ETag (412 on `If-Match`), or no object.
        case etagMismatch
        case noSuchKey
        case noSuchBucket
        case accessDenied
        /// InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed...
        case badCredentials
        /// 416: the range starts past the object's end.
        case invalidRange
        /// Any other answer the server gave (its status and code are in the error).
        case server
        /// No connection: refused, no route, a name that does not resolve.
        case unreachable
        /// Connected, but the answer stalled past the client's limit.
        case timedOut
        /// A connection cut mid-request, a TLS failure...
        case transport
        /// An answer the client cannot read (an S3 listing that is not one).
        case badResponse
        /// The client's own settings: endpoint, credentials, bucket or key.
        case configuration
    }

    public var kind: Kind
    /// `put`, `get`, `head`, `delete`, `list`, `create bucket`...
    public var operation: String
    public var bucket: String?
    public var key: String?
    public var endpoint: String?
    public var status: Int?
    /// S3's `<Code>` (`AccessDenied`, `NoSuchBucket`, `PreconditionFailed`...).
    public var code: String?
    /// S3's `<Message>`, or curl's words for a transport failure.
    public var message: String?
    /// How many times the request was sent (retries of transient failures included).
    public var attempts = 1

    public init(
        _ kind: Kind, operation: String, bucket: String? = nil, key: String? = nil, endpoint: String? = nil,
        status: Int? = nil, code: String? = nil, message: String? = nil
    ) {
        self.kind = kind
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.message = message
    }

    /// Worth sending again: the server or the network may do better in a moment. Never a 4xx:
    /// the same request gets the same refusal.
    public var isTransient: Bool {
        switch kind {
        case .unreachable, .timedOut, .transport: return true
        case .server: return [500, 502, 503, 504].contains(status ?? 0) || code == "SlowDown"
        default: return false
        }
    }

    public var description: String {
        var object = ""
        if let bucket { object = key.map { " s3://\(bucket)/\($0)" } ?? " s3://\(bucket)" }
        var text = "cannot \(operation)\(object)"
        if let endpoint { text += " at \(endpoint)" }
        var answer: [String] = []
        if let status { answer.append("HTTP \(status)") }
        if let code, !code.isEmpty { answer.append(code) }
        if !answer.isEmpty { text += ": " + answer.joined(separator: " ") }
        text += ": " + explanation
        if let message, !message.isEmpty, message != explanation { text += " (\(message))" }
        if attempts > 1 { text += " [after \(attempts) attempts]" }
        return text
    }

    /// What happened, and what to do.
    private var explanation: String {
        switch kind {
        case .alreadyExists:
            return "the object already exists (objects are written once; another writer got there first)"
        case .etagMismatch: return "the object changed since its ETag was read (or is gone): read it again and retry"
        case .noSuchKey: return "no such object"
        case .noSuchBucket: return "no such bucket: create it first, or check the bucket's name and the endpoint"
        case .accessDenied: return "access denied: the credentials are valid but not allowed this"
        case .badCredentials:
            return "the server refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or"
                + " the profile in ~/.aws/credentials), and the clock"
        case .invalidRange: return "the range is outside the object"
        case .server: return "the server refused the request"
        case .unreachable: return "cannot connect: is the S3 server running there? (AWS_ENDPOINT_URL)"
        case .timedOut: return "the server did not answer in time"
        case .transport: return "the connection failed"
        case .badResponse: return "the server's answer cannot be read"
        case .configuration: return message ?? "bad S3 settings"
        }
    }

    /// The kind an S3 error answer stands for.
    static func kind(status: Int, code: String?) -> Kind {
        switch (status, code ?? "") {
        case (_, "NoSuchBucket"): return .noSuchBucket
        case (_, "NoSuchKey"): return .noSuchKey
        case (_, "AccessDenied"): return .accessDenied
        case (_, "InvalidAccessKeyId"), (_, "SignatureDoesNotMatch"), (_, "RequestTimeTooSkewed"),
            (_, "InvalidToken"), (_, "ExpiredToken"), (_, "AuthorizationHeaderMalformed"):
            return .badCredentials
        case (416, _), (_, "InvalidRange"): return .invalidRange
        case (404, _): return .noSuchKey
        case (403, _): return .accessDenied
        default: return .server
        }
    }
}
