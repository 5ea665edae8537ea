import Foundation
import Synchronization

/// An object's entity tag, as S3 gives it in `ETag` (a hex MD5 for a plain put), kept
/// without the quotes. See `S3Client.ETagConditionForm` for how it is sent back.
public struct ETag: Hashable, Sendable, CustomStringConvertible {
    public var value: String

    /// `"abc"` or `abc` (and a weak `W/"abc"`'s tag).
    public init(_ text: String) {
        var value = Substring(text)
        if value.hasPrefix("W/") { value = value.dropFirst(2) }
        if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = value.dropFirst().dropLast() }
        self.value = String(value)
    }

    public var quoted: String { "\"\(value)\"" }
    public var description: String { value }
}

/// What `head` and `list` say of an object.
public struct ObjectInfo: Hashable, Sendable {
    public var key: String
    public var size: UInt64
    public var etag: ETag
    /// When the server stored it, in seconds since the epoch by the server's clock (a
    /// listing's `LastModified`; nil from `head`, and where a server leaves it out).
    public var lastModified: Int64?

    public init(key: String, size: UInt64, etag: ETag, lastModified: Int64? = nil) {
        (self.key, self.size, self.etag, self.lastModified) = (key, size, etag, lastModified)
    }

    /// `2026-12-02T16:00:00.000Z` (ISO 8601 in UTC, as S3 lists it) in seconds since the epoch.
    static func seconds(iso8601 text: String) -> Int64? {
        let digits = text.split(whereSeparator: { !$0.isNumber }).compactMap { Int64($0) }
        guard digits.count >= 6, text.hasSuffix("Z") else { return nil }
        let (year, month, day) = (digits[0], digits[1], digits[2])
        guard (1...12).contains(month), (1...31).contains(day) else { return nil }
        // Days from the civil date (Howard Hinnant's algorithm, in proleptic Gregorian terms).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return days * 86_400 + digits[3] * 3_600 + digits[4] * 60 + digits[5]
    }
}

/// One page of a listing, and the token for the next (nil on the last page).
public struct ListPage: Sendable {
    public var objects: [ObjectInfo]
    public var continuationToken: String?
}

/// Retries of transient failures (`S3Error.isTransient`: connection errors, timeouts, 500,
/// 502, 503, 504, SlowDown): `attempts` in all, waits doubling from `firstDelay` up to
/// `maxDelay`, each a random part of that (jitter, so writers that failed together do not
/// come back together).
public struct RetryPolicy: Sendable {
    public var attempts: Int
    public var firstDelay: Duration
    public var maxDelay: Duration

    public init(attempts: Int = 5, firstDelay: Duration = .milliseconds(100), maxDelay: Duration = .seconds(5)) {
        self.attempts = max(1, attempts)
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
    }

    func delay(before attempt: Int) -> Duration {
        let ceiling = min(maxDelay, firstDelay * (1 << min(attempt - 2, 20)))
        return ceiling / 2 + (ceiling / 2) * Double.random(in: 0...1)
    }
}

/// A small S3 client for one bucket: path-style addressing (`http://host:port/bucket/key`, which
/// RGW on 127.0.0.1 needs and every S3 server takes), SigV4 with the payload's SHA-256 signed,
/// HTTP through libcurl. Safe to share between threads.
///
/// Writes are whole objects, in one PUT (S3 takes up to 5 GiB so; the store's packs are 32 MiB):
/// - `put(_:_:condition: .ifAbsent)` writes once (`If-None-Match: *`): a second writer gets
///   `.alreadyExists`;
/// - `put(_:_:condition: .ifMatch(etag))` replaces only what was read (`If-Match`): a stale
///   ETag gets `.etagMismatch` (compare-and-swap).
///
/// A conditional put sent again after a failure that may have reached the server (the answer
/// was lost), by this client's retry or by curl itself (it resends, unasked, on a new connection
/// when a kept one closes before the answer), can be refused by its own first write: when the
/// object there has the MD5 of this body, that put succeeded, and is reported so. (Another
/// writer's identical bytes read the same: the state is the one this put asked for.)
public final class S3Client: Sendable {
    /// How an ETag is written in `If-Match`. RFC 9110 and AWS quote it; Ceph RGW 16.2
    /// compares the header's text with its unquoted ETag, so it refuses (412) the quoted form
    /// even for the current ETag, and takes only the bare one.
    public enum ETagConditionForm: Sendable {
        case unquoted, quoted
    }

    public enum WriteCondition: Sendable, Equatable {
        case none
        /// Only if no object has the key: `If-None-Match: *`.
        case ifAbsent
        /// Only if the object has this ETag: `If-Match`.
        case ifMatch(ETag)
    }

    public let configuration: S3Configuration
    public let bucket: String
    public let retry: RetryPolicy
    private let signer: SigV4Signer
    private let transport: CurlTransport
    private let conditionForm: Mutex<ETagConditionForm>

    /// `etagConditionForm`: the form tried first. When the server refuses it for an ETag that
    /// is the object's, the other form is tried, and kept for the next compare-and-swap.
    public init(
        configuration: S3Configuration, bucket: String, retry: RetryPolicy = RetryPolicy(),
        timeouts: S3Timeouts = S3Timeouts(), etagConditionForm: ETagConditionForm = .unquoted
    ) throws(S3Error) {
        try Self.checkBucketName(bucket, endpoint: configuration.endpoint)
        self.configuration = configuration
        self.bucket = bucket
        self.retry = retry
        self.signer = SigV4Signer(credentials: configuration.credentials, region: configuration.region)
        self.transport = CurlTransport(timeouts: timeouts)
        self.conditionForm = Mutex(etagConditionForm)
    }

    /// The `If-Match` form this client sends now.
    public var etagConditionForm: ETagConditionForm { conditionForm.withLock { $0 } }

    // MARK: Objects

    /// Writes `body` under `key`; returns the new object's ETag.
    @discardableResult
    public func put(_ key: String, _ body: [UInt8], condition: WriteCondition = .none) throws(S3Error) -> ETag {
        try checkKey(key, operation: "put")
        var formUsed = etagConditionForm
        var triedOtherForm = false
        while true {
            var headers: [(name: String, value: String)] = [("Content-Type", "application/octet-stream")]
            switch condition {
            case .none: break
            case .ifAbsent: headers.append(("If-None-Match", "*"))
            case .ifMatch(let etag): headers.append(("If-Match", formUsed == .quoted ? etag.quoted : etag.value))
            }
            var maybeSentTwice = false
            do throws(S3Error) {
                let response = try send(
                    "PUT", key: key, headers: headers, body: body, operation: "put", maybeSentTwice: &maybeSentTwice)
                guard let etag = response.headers["etag"] else {
                    throw failure(.badResponse, "put", key: key, message: "the answer has no ETag")
                }
                if triedOtherForm { conditionForm.withLock { $0 = formUsed } }
                return ETag(etag)
            } catch let error where error.status == 412 {
                if maybeSentTwice, let current = try? head(key), current.etag.value == Digests.hex(Digests.md5(body)) {
                    return current.etag  // our own write, whose answer was lost
                }
                var refusal = error
                switch condition {
                case .none: throw error
                case .ifAbsent: refusal.kind = .alreadyExists
                case .ifMatch(let expected):
                    // Refused for the ETag the object has: the server wants the other form.
                    if !triedOtherForm, let current = try? head(key), current.etag == expected {
                        triedOtherForm = true
                        formUsed = formUsed == .quoted ? .unquoted : .quoted
                        continue
                    }
                    refusal.kind = .etagMismatch
                }
                throw refusal
            } catch let error where error.status == 404 && error.kind == .noSuchKey && condition != .none {
                // AWS answers If-Match on a missing key with 404 NoSuchKey (RGW with 412).
                var refusal = error
                refusal.kind = .etagMismatch
                throw refusal
            }
        }
    }

    /// The object's bytes and its ETag, for a compare-and-swap of what was read; nil when there
    /// is no such object (a missing bucket still throws).
    public func getVersioned(_ key: String) throws(S3Error) -> (body: [UInt8], etag: ETag)? {
        try checkKey(key, operation: "get")
        do throws(S3Error) {
            let response = try send("GET", key: key, operation: "get")
            guard let etag = response.headers["etag"] else {
                throw failure(.badResponse, "get", key: key, message: "the answer lacks an ETag")
            }
            return (response.body, ETag(etag))
        } catch let error where error.kind == .noSuchKey {
            return nil
        }
    }

    /// The object's bytes, or those of `range` (the end clipped to the object's size).
    public func get(_ key: String, range: Range<UInt64>? = nil) throws(S3Error) -> [UInt8] {
        try checkKey(key, operation: "get")
        guard let range else { return try send("GET", key: key, operation: "get").body }
        guard !range.isEmpty else { return [] }
        let response = try send(
            "GET", key: key, headers: [("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")],
            operation: "get")
        if response.status == 200 {
            // A server that ignores Range sends the whole object: cut it here.
            let start = Int(clamping: min(range.lowerBound, UInt64(response.body.count)))
            let end = Int(clamping: min(range.upperBound, UInt64(response.body.count)))
            return Array(response.body[start..<end])
        }
        // "bytes 1000000-2500000/3145728": the part must start where it was asked to.
        let contentRange = response.headers["content-range"] ?? ""
        guard contentRange.hasPrefix("bytes \(range.lowerBound)-"), response.body.count <= range.count else {
            throw failure(
                .badResponse, "get", key: key,
                message: "asked for bytes \(range.lowerBound)..<\(range.upperBound), got \(response.body.count)"
                    + " bytes of \"\(contentRange)\"")
        }
        return response.body
    }

    /// The object's size and ETag; nil when there is no such object.
    public func head(_ key: String) throws(S3Error) -> ObjectInfo? {
        try checkKey(key, operation: "head")
        do throws(S3Error) {
            let response = try send("HEAD", key: key, operation: "head")
            guard let length = response.headers["content-length"].flatMap(UInt64.init),
                let etag = response.headers["etag"]
            else {
                throw failure(.badResponse, "head", key: key, message: "the answer lacks Content-Length or ETag")
            }
            return ObjectInfo(key: key, size: length, etag: ETag(etag))
        } catch let error where error.status == 404 {
            // A HEAD answer has no body to say whether the key or the bucket is missing.
            if error.code == "NoSuchKey" { return nil }
            if error.code == nil, try bucketExists() { return nil }
            var missing = error
            missing.kind = .noSuchBucket
            missing.code = "NoSuchBucket"
            throw missing
        }
    }

    /// Removes the object; removing one that is not there succeeds, as S3 does.
    public func delete(_ key: String) throws(S3Error) {
        try checkKey(key, operation: "delete")
        _ = try send("DELETE", key: key, operation: "delete")
    }

    /// Every object whose key starts with `prefix`, in key order, page after page.
    public func list(prefix: String = "", pageSize: Int = 1000) throws(S3Error) -> [ObjectInfo] {
        var objects: [ObjectInfo] = []
        var token: String?
        repeat {
            let page = try listPage(prefix: prefix, continuationToken: token, maxKeys: pageSize)
            objects += page.objects
            token = page.continuationToken
        } while token != nil
        return objects
    }

    /// One ListObjectsV2 page: at most `maxKeys` objects (S3 caps it at 1000).
    public func listPage(
        prefix: String = "", continuationToken: String? = nil, maxKeys: Int = 1000
    ) throws(S3Error)
        -> ListPage
    {
        var query: [(name: String, value: String)] = [
            ("list-type", "2"), ("max-keys", String(maxKeys)), ("prefix", prefix),
        ]
        if let continuationToken { query.append(("continuation-token", continuationToken)) }
        let response = try send("GET", key: nil, query: query, operation: "list")
        let root: S3XML.Element
        do {
            root = try S3XML.parse(response.body)
        } catch {
            throw failure(.badResponse, "list", message: "the listing is not XML: \(error.reason)")
        }
        guard root.name == "ListBucketResult" else {
            throw failure(.badResponse, "list", message: "the answer is <\(root.name)>, not <ListBucketResult>")
        }
        var objects: [ObjectInfo] = []
        for entry in root.children("Contents") {
            guard let key = entry["Key"], let size = entry["Size"].flatMap(UInt64.init), let etag = entry["ETag"] else {
                throw failure(.badResponse, "list", message: "a <Contents> without Key, Size or ETag")
            }
            objects.append(
                ObjectInfo(
                    key: key, size: size, etag: ETag(etag),
                    lastModified: entry["LastModified"].flatMap(ObjectInfo.seconds(iso8601:))))
        }
        let truncated = root["IsTruncated"] == "true"
        let next = root["NextContinuationToken"].flatMap { $0.isEmpty ? nil : $0 }
        if truncated && next == nil {
            throw failure(.badResponse, "list", message: "a truncated listing without NextContinuationToken")
        }
        return ListPage(objects: objects, continuationToken: truncated ? next : nil)
    }

    // MARK: The bucket

    /// Creates the bucket; one this user owns already is fine.
    public func createBucket() throws(S3Error) {
        // Outside us-east-1, AWS wants the region in the body.
        let body =
            configuration.region == "us-east-1"
            ? []
            : Array(
                ("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                    + "<LocationConstraint>\(configuration.region)</LocationConstraint></CreateBucketConfiguration>")
                    .utf8)
        do throws(S3Error) {
            _ = try send("PUT", key: nil, body: body, operation: "create bucket")
        } catch let error where error.code == "BucketAlreadyOwnedByYou" {
            return
        }
    }

    public func bucketExists() throws(S3Error) -> Bool {
        do throws(S3Error) {
            _ = try send("HEAD", key: nil, operation: "check bucket")
            return true
        } catch let error where error.status == 404 {
            return false
        }
    }

    /// Removes the (empty) bucket.
    public func deleteBucket() throws(S3Error) {
        _ = try send("DELETE", key: nil, operation: "delete bucket")
    }

    // MARK: Requests

    private func send(
        _ method: String, key: String?, query: [(name: String, value: String)] = [],
        headers: [(name: String, value: String)] = [], body: [UInt8] = [], operation: String
    ) throws(S3Error) -> HTTPResponse {
        var ignored = false
        return try send(
            method, key: key, query: query, headers: headers, body: body, operation: operation,
            maybeSentTwice: &ignored)
    }

    /// Signs and sends one request, again while it fails transiently. `maybeSentTwice`: set
    /// when an earlier sending may have been carried out by the server (a failure after the
    /// connection was made, or curl's own resending on a new connection).
    private func send(
        _ method: String, key: String?, query: [(name: String, value: String)] = [],
        headers extra: [(name: String, value: String)] = [], body: [UInt8] = [], operation: String,
        maybeSentTwice: inout Bool
    ) throws(S3Error) -> HTTPResponse {
        var path = "/" + SigV4Signer.uriEncode(bucket, encodeSlash: true)
        if let key { path += "/" + SigV4Signer.uriEncode(key, encodeSlash: false) }
        let canonicalQuery = SigV4Signer.canonicalQuery(query)
        let url = configuration.endpoint + path + (canonicalQuery.isEmpty ? "" : "?" + canonicalQuery)
        let payloadHash = Digests.hex(Digests.sha256(body))
        var attempt = 1
        while true {
            let timestamp = Self.timestamp()
            var headers = extra
            headers.append(("Host", configuration.hostHeader))
            headers.append(("x-amz-content-sha256", payloadHash))
            headers.append(("x-amz-date", timestamp))
            if let token = configuration.credentials.sessionToken { headers.append(("x-amz-security-token", token)) }
            let signed = SigV4Signer.Request(
                method: method, path: path, query: query, headers: headers, payloadHash: payloadHash)
            headers.append(("Authorization", signer.authorization(signed, timestamp: timestamp)))
            var failed: S3Error
            do throws(TransportFailure) {
                let response = try transport.perform(
                    HTTPRequest(method: method, url: url, headers: headers, body: body))
                if response.maybeSentTwice { maybeSentTwice = true }
                if (200..<300).contains(response.status) { return response }
                failed = failure(response, operation, key: key)
            } catch {
                failed = failure(error.kind, operation, key: key, message: error.message)
            }
            failed.attempts = attempt
            guard failed.isTransient, attempt < retry.attempts else { throw failed }
            if failed.kind != .unreachable { maybeSentTwice = true }
            attempt += 1
            Thread.sleep(forTimeInterval: Self.seconds(retry.delay(before: attempt)))
        }
    }

    private func failure(_ response: HTTPResponse, _ operation: String, key: String?) -> S3Error {
        let answer = try? S3XML.parse(response.body)
        let code = answer?["Code"]
        let message = answer?["Message"]
        return S3Error(
            S3Error.kind(status: response.status, code: code), operation: operation, bucket: bucket, key: key,
            endpoint: configuration.endpoint, status: response.status, code: code, message: message)
    }

    private func failure(_ kind: S3Error.Kind, _ operation: String, key: String? = nil, message: String) -> S3Error {
        S3Error(
            kind, operation: operation, bucket: bucket, key: key, endpoint: configuration.endpoint, message: message)
    }

    private func checkKey(_ key: String, operation: String) throws(S3Error) {
        guard !key.isEmpty, key.utf8.count <= 1024 else {
            throw failure(.configuration, operation, key: key, message: "an object key is 1 to 1024 bytes of UTF-8")
        }
    }

    /// S3's rules for new buckets: 3 to 63 of lower-case letters, digits, `.` and `-`, a letter
    /// or digit at each end. (RGW refuses "b1" as InvalidBucketName; better said here.)
    private static func checkBucketName(_ name: String, endpoint: String) throws(S3Error) {
        let allowed = name.utf8.allSatisfy {
            ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
                || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
        }
        guard (3...63).contains(name.utf8.count), allowed, name.first != "-", name.first != ".", name.last != "-",
            name.last != "."
        else {
            throw S3Error(
                .configuration, operation: "use bucket", bucket: name, endpoint: endpoint,
                message: "\"\(name)\" is not a bucket name: 3 to 63 lower-case letters, digits, '.' and '-'")
        }
    }

    /// `x-amz-date`: `20130524T000000Z`, UTC.
    private static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        return String(
            format: "%04d%02d%02dT%02d%02d%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
