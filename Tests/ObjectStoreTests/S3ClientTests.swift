import Foundation
import S3TestSupport
import Testing

@testable import ObjectStore

/// The client against a real Ceph RGW (scripts/ceph.sh starts it; the suite fails with the
/// script's words when it cannot). Each test has a bucket of its own.
@Suite(.timeLimit(.minutes(3))) struct S3ClientTests {
    /// Bytes that differ from page to page, so an offset mistake cannot go unseen.
    static func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed | 1
        return (0..<count).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }

    @Test(arguments: [0, 13, 5 << 20 + 4321])
    func roundTrip(size: Int) throws {
        let client = try CephCluster.freshBucket("roundtrip")
        let body = Self.pattern(size, seed: UInt64(size))
        let etag = try client.put("objects/\(size)", body)
        #expect(etag.value == Digests.hex(Digests.md5(body)))
        let info = try #require(try client.head("objects/\(size)"))
        #expect(info.size == UInt64(size))
        #expect(info.etag == etag)
        #expect(try client.get("objects/\(size)") == body)
        let listed = try client.list(prefix: "objects/")
        #expect(listed.map { [$0.key, "\($0.size)", $0.etag.value] } == [["objects/\(size)", "\(size)", etag.value]])
        // Stored just now, by the server's clock (this machine's, here).
        let stored = try #require(listed.first?.lastModified)
        #expect(abs(stored - Int64(Date().timeIntervalSince1970)) < 120)
    }

    /// Keys as they are: spaces, `+`, `$`, non-ASCII, and dot segments curl must not squash.
    @Test func oddKeys() throws {
        let client = try CephCluster.freshBucket("keys")
        let keys = ["a b+c=d$e.bin", "chains/é/ü", "x/../y", "x/./z", "tilde~and%percent"]
        for (index, key) in keys.enumerated() { try client.put(key, Self.pattern(100, seed: UInt64(index))) }
        for (index, key) in keys.enumerated() { #expect(try client.get(key) == Self.pattern(100, seed: UInt64(index))) }
        #expect(
            try client.list().map(\.key) == keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
    }

    @Test func ranges() throws {
        let client = try CephCluster.freshBucket("ranges")
        let body = Self.pattern(3 << 20, seed: 7)
        try client.put("big", body)
        #expect(try client.get("big", range: 0..<1) == Array(body[0..<1]))
        #expect(try client.get("big", range: 1_000_000..<2_500_001) == Array(body[1_000_000..<2_500_001]))
        // The end clipped to the object's.
        #expect(
            try client.get("big", range: UInt64(body.count - 10)..<UInt64(body.count + 100)) == Array(body.suffix(10)))
        let error = try #require(throws: S3Error.self) {
            try client.get("big", range: UInt64(body.count + 1)..<UInt64(body.count + 5))
        }
        #expect(error.kind == .invalidRange)
        #expect(error.status == 416)
    }

    /// A conditional put whose answer was lost (the connection cut after the server wrote it)
    /// is sent again, by the client's retry or by curl itself on a kept connection, and refused
    /// as a precondition failure; the object holds this very body, so the put was ours: it
    /// succeeds, for write-once and for compare-and-swap.
    @Test func conditionalPutWhoseAnswerWasLost() throws {
        let direct = try CephCluster.freshBucket("lost")
        let proxy = try FaultProxy(upstreamPort: UInt16(try #require(direct.configuration.port)), cuts: 1)
        defer { proxy.stop() }
        var configuration = direct.configuration
        configuration.port = Int(proxy.port)
        let client = try S3Client(
            configuration: configuration, bucket: direct.bucket, retry: RetryPolicy(firstDelay: .milliseconds(10)))

        let first = Array("generation 1".utf8)
        let written = try client.put("head", first, condition: .ifAbsent)
        #expect(proxy.cut.withLock { $0 } == 1)
        #expect(written.value == Digests.hex(Digests.md5(first)))
        #expect(try direct.get("head") == first)

        proxy.cutNext()
        let second = Array("generation 2".utf8)
        let swapped = try client.put("head", second, condition: .ifMatch(written))
        #expect(proxy.cut.withLock { $0 } == 2)
        #expect(swapped.value == Digests.hex(Digests.md5(second)))
        #expect(try direct.get("head") == second)

        // Another writer's body under the key is still a refusal after a lost answer.
        proxy.cutNext()
        let refused = try #require(throws: S3Error.self) {
            try client.put("head", Array("generation 3".utf8), condition: .ifMatch(written))
        }
        #expect(proxy.cut.withLock { $0 } == 3)
        #expect(refused.kind == .etagMismatch)
        #expect(try direct.get("head") == second)
    }

    /// 503 SlowDown is transient: retried with backoff, up to the policy's attempts.
    @Test func slowDownIsRetried() throws {
        let direct = try CephCluster.freshBucket("slow")
        try direct.put("k", [1, 2, 3])
        let proxy = try FaultProxy(upstreamPort: UInt16(try #require(direct.configuration.port)), slowDowns: 2)
        defer { proxy.stop() }
        var configuration = direct.configuration
        configuration.port = Int(proxy.port)
        let retry = RetryPolicy(attempts: 3, firstDelay: .milliseconds(10))
        let client = try S3Client(configuration: configuration, bucket: direct.bucket, retry: retry)
        #expect(try client.get("k") == [1, 2, 3])
        #expect(proxy.slowedDown.withLock { $0 } == 2)

        proxy.slowDownNext(3)
        let error = try #require(throws: S3Error.self) { try client.get("k") }
        #expect(error.kind == .server)
        #expect(error.status == 503)
        #expect(error.code == "SlowDown")
        #expect(error.attempts == 3)
        #expect(error.description.contains("[after 3 attempts]"))
        #expect(proxy.slowedDown.withLock { $0 } == 5)
    }

    /// The signed payload hash is what keeps a body damaged on the way out of the store: RGW
    /// recomputes it and refuses a body that does not match (this client always signs it).
    @Test func serverChecksTheSignedPayloadHash() throws {
        let client = try CephCluster.freshBucket("sha")
        let configuration = client.configuration
        let signed = Array("the body that was signed".utf8)
        let sent = Array("the body that arrived...".utf8)
        let payloadHash = Digests.hex(Digests.sha256(signed))
        let timestamp = "\(ISO8601DateFormatter().string(from: Date()).filter { $0 != "-" && $0 != ":" })"
        let path = "/\(client.bucket)/damaged"
        var headers: [(name: String, value: String)] = [
            ("Host", configuration.hostHeader), ("x-amz-content-sha256", payloadHash), ("x-amz-date", timestamp),
        ]
        let signer = SigV4Signer(credentials: configuration.credentials, region: configuration.region)
        headers.append(
            (
                "Authorization",
                signer.authorization(
                    SigV4Signer.Request(method: "PUT", path: path, headers: headers, payloadHash: payloadHash),
                    timestamp: timestamp)
            ))
        let transport = CurlTransport(timeouts: S3Timeouts())
        let response = try transport.perform(
            HTTPRequest(method: "PUT", url: configuration.endpoint + path, headers: headers, body: sent))
        #expect(response.status == 400)
        #expect(try S3XML.parse(response.body)["Code"] == "XAmzContentSHA256Mismatch")
        #expect(try client.head("damaged") == nil)
    }

    @Test func writeOnce() throws {
        let client = try CephCluster.freshBucket("once")
        let first = Self.pattern(1000, seed: 1)
        try client.put("packs/p1", first, condition: .ifAbsent)
        let error = try #require(throws: S3Error.self) {
            try client.put("packs/p1", Self.pattern(1000, seed: 2), condition: .ifAbsent)
        }
        #expect(error.kind == .alreadyExists)
        #expect(error.status == 412)
        #expect(error.code == "PreconditionFailed")
        #expect(error.attempts == 1)
        #expect(error.description.contains("s3://\(client.bucket)/packs/p1"))
        #expect(error.description.contains("already exists"))
        #expect(try client.get("packs/p1") == first)
    }

    @Test func compareAndSwap() throws {
        let client = try CephCluster.freshBucket("cas")
        let first = try client.put("head", Array("generation 1".utf8), condition: .ifAbsent)
        let second = try client.put("head", Array("generation 2".utf8), condition: .ifMatch(first))
        #expect(second != first)
        // A writer that read generation 1 is refused, and changes nothing.
        let stale = try #require(throws: S3Error.self) {
            try client.put("head", Array("generation 2 from another writer".utf8), condition: .ifMatch(first))
        }
        #expect(stale.kind == .etagMismatch)
        #expect(stale.description.contains("s3://\(client.bucket)/head"))
        #expect(try client.get("head") == Array("generation 2".utf8))
        // No object to swap.
        let missing = try #require(throws: S3Error.self) {
            try client.put("no-head", Array("x".utf8), condition: .ifMatch(second))
        }
        #expect(missing.kind == .etagMismatch)
        #expect(try client.head("no-head") == nil)
    }

    /// What Ceph RGW 16.2 does with `If-Match`: it compares the header's text with its ETag
    /// unquoted, so the quoted form (RFC 9110's, AWS's) is refused even for the current ETag.
    /// A client that starts with the quoted form finds out and keeps the bare one.
    @Test func rgwTakesOnlyTheUnquotedETag() throws {
        let configuration = try CephCluster.configuration.get()
        let setup = try CephCluster.freshBucket("etag-form")
        let client = try S3Client(configuration: configuration, bucket: setup.bucket, etagConditionForm: .quoted)
        let first = try client.put("head", Array("1".utf8))
        let second = try client.put("head", Array("2".utf8), condition: .ifMatch(first))
        #expect(client.etagConditionForm == .unquoted)
        try client.put("head", Array("3".utf8), condition: .ifMatch(second))
        #expect(try client.get("head") == Array("3".utf8))
    }

    @Test func listPages() throws {
        let client = try CephCluster.freshBucket("list")
        let keys = (0..<23).map { String(format: "index/%04d", $0 * 7) }
        for key in keys { try client.put(key, Array(key.utf8)) }
        try client.put("other/x", [1])
        let page = try client.listPage(prefix: "index/", maxKeys: 5)
        #expect(page.objects.map(\.key) == Array(keys.prefix(5)))
        #expect(page.continuationToken != nil)
        let all = try client.list(prefix: "index/", pageSize: 5)
        #expect(all.map(\.key) == keys)
        #expect(all.map(\.size) == keys.map { UInt64($0.utf8.count) })
        #expect(try client.list(prefix: "nothing/").isEmpty)
        #expect(try client.list().count == keys.count + 1)
    }

    @Test func delete() throws {
        let client = try CephCluster.freshBucket("delete")
        try client.put("gone", [1, 2, 3])
        try client.delete("gone")
        #expect(try client.head("gone") == nil)
        let error = try #require(throws: S3Error.self) { try client.get("gone") }
        #expect(error.kind == .noSuchKey)
        #expect(error.status == 404)
        try client.delete("gone")  // again: S3 says nothing of what is not there
        #expect(try client.list().isEmpty)
    }

    @Test func wrongSecret() throws {
        let configuration = try CephCluster.configuration.get()
        let bucket = try CephCluster.freshBucket("secret").bucket
        var wrong = configuration
        wrong.credentials.secretAccessKey += "x"
        let client = try S3Client(configuration: wrong, bucket: bucket)
        let error = try #require(throws: S3Error.self) { try client.put("k", [1]) }
        #expect(error.kind == .badCredentials)
        #expect(error.status == 403)
        #expect(error.code == "SignatureDoesNotMatch")
        #expect(error.attempts == 1)
        #expect(error.description.contains("s3://\(bucket)/k"))
        #expect(error.description.contains("AWS_SECRET_ACCESS_KEY"))
    }

    @Test func unknownAccessKey() throws {
        var configuration = try CephCluster.configuration.get()
        configuration.credentials.accessKeyID = "NOSUCHKEY0000000000"
        let client = try S3Client(configuration: configuration, bucket: "chpox-any")
        let error = try #require(throws: S3Error.self) { try client.list() }
        #expect(error.kind == .badCredentials)
        #expect(error.code == "InvalidAccessKeyId")
    }

    @Test func missingBucket() throws {
        let configuration = try CephCluster.configuration.get()
        let client = try S3Client(
            configuration: configuration, bucket: "chpox-missing-\(UInt32.random(in: 0...UInt32.max))")
        #expect(try !client.bucketExists())
        let error = try #require(throws: S3Error.self) { try client.get("k") }
        #expect(error.kind == .noSuchBucket)
        #expect(error.code == "NoSuchBucket")
        #expect(error.description.contains("s3://\(client.bucket)/k"))
        #expect(error.description.contains(configuration.endpoint))
        let head = try #require(throws: S3Error.self) { try client.head("k") }
        #expect(head.kind == .noSuchBucket)
        try client.createBucket()
        try client.createBucket()  // again: it is ours
        #expect(try client.bucketExists())
    }

    /// Nothing listens: connection refused, retried a bounded number of times, then said.
    @Test func endpointDown() throws {
        let port = try LocalSocket.closedPort()
        let configuration = try S3Configuration(
            endpoint: "http://127.0.0.1:\(port)", region: "us-east-1",
            credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "b"))
        let client = try S3Client(
            configuration: configuration, bucket: "chpox-down",
            retry: RetryPolicy(attempts: 3, firstDelay: .milliseconds(10)))
        let error = try #require(throws: S3Error.self) { try client.get("k") }
        #expect(error.kind == .unreachable)
        #expect(error.attempts == 3)
        #expect(error.description.contains("127.0.0.1:\(port)"))
        #expect(error.description.contains("cannot connect"))
    }

    /// A server that takes the connection and never answers: the stall limit ends each attempt.
    @Test func serverThatNeverAnswers() throws {
        let socket = try LocalSocket.listening()
        defer { close(socket.descriptor) }
        let configuration = try S3Configuration(
            endpoint: "http://127.0.0.1:\(socket.port)", region: "us-east-1",
            credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "b"))
        let client = try S3Client(
            configuration: configuration, bucket: "chpox-silent",
            retry: RetryPolicy(attempts: 2, firstDelay: .milliseconds(10)),
            timeouts: S3Timeouts(connect: .seconds(2), stall: .seconds(1)))
        let error = try #require(throws: S3Error.self) { try client.head("k") }
        #expect(error.kind == .timedOut)
        #expect(error.attempts == 2)
    }
}
