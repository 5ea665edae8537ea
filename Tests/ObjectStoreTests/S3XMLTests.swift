import Testing

@testable import ObjectStore

/// The XML reader on what S3 servers send: a listing and an error shaped as RGW writes them
/// (one line, `&quot;` or bare quotes around ETags), entities, CDATA, self-closing elements;
/// and what it refuses.
@Suite struct S3XMLTests {
    @Test func rgwListing() throws {
        let text = """
            <?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">\
            <Name>chpox-list</Name><Prefix>index/</Prefix><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>\
            <Contents><Key>index/a &amp; b &lt;c&gt;</Key><LastModified>2026-12-02T14:10:00.000Z</LastModified>\
            <ETag>&quot;9e107d9d372bb6826bd81d3542a419d6&quot;</ETag><Size>43</Size><StorageClass>STANDARD</StorageClass></Contents>\
            <Contents><Key>index/&#233;&#x20AC;</Key><ETag>"d41d8cd98f00b204e9800998ecf8427e"</ETag><Size>0</Size><Owner/></Contents>\
            <NextContinuationToken>1ZhLcP4-token</NextContinuationToken><KeyCount>2</KeyCount></ListBucketResult>
            """
        let root = try S3XML.parse(Array(text.utf8))
        #expect(root.name == "ListBucketResult")
        #expect(root["IsTruncated"] == "true")
        #expect(root["NextContinuationToken"] == "1ZhLcP4-token")
        let contents = root.children("Contents")
        #expect(contents.map { $0["Key"] } == ["index/a & b <c>", "index/é€"])
        #expect(contents.map { $0["Size"] } == ["43", "0"])
        #expect(ETag(try #require(contents[0]["ETag"])).value == "9e107d9d372bb6826bd81d3542a419d6")
        #expect(contents[1].child("Owner")?.children.isEmpty == true)
    }

    @Test func errorAnswer() throws {
        let text = """
            <?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchBucket</Code><Message><![CDATA[no <such> bucket]]></Message>\
            <BucketName>b</BucketName></Error>
            """
        let root = try S3XML.parse(Array(text.utf8))
        #expect(root["Code"] == "NoSuchBucket")
        #expect(root["Message"] == "no <such> bucket")
    }

    @Test(arguments: ["", "<a><b></a>", "<a>", "<a>&bogus;</a>", "<a>&amp</a>", "plain text"])
    func malformed(_ text: String) {
        #expect(throws: S3XML.Malformed.self) { try S3XML.parse(Array(text.utf8)) }
    }
}
