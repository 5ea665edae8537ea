import Foundation
import Testing

@testable import ObjectStore

/// The signer against the worked examples of AWS's S3 API reference ("Signature Calculations
/// for the Authorization Header: Transferring Payload in a Single Chunk"): their keys, their
/// requests, their canonical request, string to sign and signatures. No server involved.
@Suite struct SigV4Tests {
    static let signer = SigV4Signer(
        credentials: S3Credentials(
            accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        region: "us-east-1")
    static let timestamp = "20130524T000000Z"
    static let host = "examplebucket.s3.amazonaws.com"

    @Test func getObjectExample() {
        let request = SigV4Signer.Request(
            method: "GET", path: "/test.txt",
            headers: [
                ("Host", Self.host), ("Range", "bytes=0-9"), ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash),
                ("x-amz-date", Self.timestamp),
            ], payloadHash: SigV4Signer.emptyPayloadHash)
        #expect(
            Self.signer.canonicalRequest(request) == """
                GET
                /test.txt

                host:examplebucket.s3.amazonaws.com
                range:bytes=0-9
                x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                x-amz-date:20130524T000000Z

                host;range;x-amz-content-sha256;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """)
        #expect(
            Self.signer.stringToSign(request, timestamp: Self.timestamp) == """
                AWS4-HMAC-SHA256
                20130524T000000Z
                20130524/us-east-1/s3/aws4_request
                7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972
                """)
        #expect(
            Self.signer.authorization(request, timestamp: Self.timestamp)
                == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    /// A signed payload, a key with a `$` (encoded as it is sent), and headers beyond S3's own.
    @Test func putObjectExample() {
        let body = Array("Welcome to Amazon S3.".utf8)
        let payloadHash = Digests.hex(Digests.sha256(body))
        #expect(payloadHash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let request = SigV4Signer.Request(
            method: "PUT", path: "/" + SigV4Signer.uriEncode("test$file.text", encodeSlash: false),
            headers: [
                ("Host", Self.host), ("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-date", Self.timestamp),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"), ("x-amz-content-sha256", payloadHash),
            ], payloadHash: payloadHash)
        #expect(request.path == "/test%24file.text")
        #expect(
            Self.signer.signature(request, timestamp: Self.timestamp)
                == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    /// The query sorted (given unsorted here), as ListObjects sends it.
    @Test func listObjectsExample() {
        let request = SigV4Signer.Request(
            method: "GET", path: "/", query: [("prefix", "J"), ("max-keys", "2")],
            headers: [
                ("Host", Self.host), ("x-amz-date", Self.timestamp),
                ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash),
            ], payloadHash: SigV4Signer.emptyPayloadHash)
        #expect(SigV4Signer.canonicalQuery(request.query) == "max-keys=2&prefix=J")
        #expect(
            Self.signer.signature(request, timestamp: Self.timestamp)
                == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test func uriEncoding() {
        #expect(SigV4Signer.uriEncode("a-b_c.d~e09", encodeSlash: true) == "a-b_c.d~e09")
        #expect(SigV4Signer.uriEncode("chains/a b+c=é", encodeSlash: false) == "chains/a%20b%2Bc%3D%C3%A9")
        #expect(SigV4Signer.uriEncode("a/b", encodeSlash: true) == "a%2Fb")
    }
}

/// Credentials and endpoint from the environment and the AWS tools' files.
@Suite struct S3ConfigurationTests {
    @Test func environmentWins() throws {
        let configuration = try S3Configuration.fromEnvironment([
            "AWS_ENDPOINT_URL": "http://127.0.0.1:7480", "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK",
            "AWS_REGION": "eu-west-3", "HOME": "/nonexistent",
        ])
        #expect(configuration.credentials == S3Credentials(accessKeyID: "AK", secretAccessKey: "SK"))
        #expect(configuration.region == "eu-west-3")
        #expect(configuration.endpoint == "http://127.0.0.1:7480")
        #expect(configuration.hostHeader == "127.0.0.1:7480")
    }

    @Test func profileFromTheFiles() throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("chpox-aws-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        try FileManager.default.createDirectory(
            at: home.appendingPathComponent(".aws"), withIntermediateDirectories: true)
        try """
        [default]
        aws_access_key_id = DEFAULTKEY
        aws_secret_access_key = defaultsecret
        # a comment
        [ceph]
        aws_access_key_id = CEPHKEY
        aws_secret_access_key = cephsecret
        """.write(to: home.appendingPathComponent(".aws/credentials"), atomically: true, encoding: .utf8)
        try """
        [default]
        region = us-west-2
        [profile ceph]
        region = local
        endpoint_url = https://rgw.example:8443
        s3 =
          addressing_style = path
        """.write(to: home.appendingPathComponent(".aws/config"), atomically: true, encoding: .utf8)

        let byDefault = try S3Configuration.fromEnvironment(["HOME": home.path])
        #expect(byDefault.credentials.accessKeyID == "DEFAULTKEY")
        #expect(byDefault.region == "us-west-2")
        #expect(byDefault.endpoint == "https://s3.us-west-2.amazonaws.com")

        let ceph = try S3Configuration.fromEnvironment(["HOME": home.path, "AWS_PROFILE": "ceph"])
        #expect(ceph.credentials == S3Credentials(accessKeyID: "CEPHKEY", secretAccessKey: "cephsecret"))
        #expect(ceph.region == "local")
        #expect(ceph.hostHeader == "rgw.example:8443")
        #expect(ceph.scheme == "https")
    }

    @Test func missingCredentialsSayWhere() throws {
        let error = try #require(throws: S3Error.self) {
            try S3Configuration.fromEnvironment(["HOME": "/nonexistent", "AWS_PROFILE": "nobody"])
        }
        #expect(error.kind == .configuration)
        #expect(error.description.contains("AWS_ACCESS_KEY_ID"))
        #expect(error.description.contains("profile \"nobody\""))
        #expect(error.description.contains("/nonexistent/.aws/credentials"))
    }

    @Test func badEndpointIsRefused() {
        #expect(throws: S3Error.self) {
            try S3Configuration(
                endpoint: "ftp://host", region: "us-east-1",
                credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "b"))
        }
    }
}
