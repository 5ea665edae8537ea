import Foundation
import Incremental
import Testing

/// `cpx --external-unix SPEC` as it reads, and an external UNIX socket in the image: it round
/// trips, it marks the image `chpox.image/4`, and an action this chpox does not know is refused.
@Suite struct ExternalUnixSpecTests {
    @Test func specsReadByPathOrInode() throws {
        #expect(
            try ExternalUnix.parse("/run/x.sock=reconnect").get()
                == .init(target: .peerPath("/run/x.sock"), action: .reconnect))
        #expect(try ExternalUnix.parse("unix:12345=close").get() == .init(target: .inode(12345), action: .close))
        #expect(try ExternalUnix.parse("/a=b=close").get().target == .peerPath("/a=b"))
        #expect(try ExternalUnix.parse("*=reconnect").get() == .init(target: .any, action: .reconnect))
        for bad in ["/run/x.sock", "/run/x.sock=keep", "x.sock=close", "unix:abc=close", "=close", "/=close"] {
            #expect(throws: ExternalUnix.ParseError.self, "\(bad)") { try ExternalUnix.parse(bad).get() }
        }
        #expect(try ExternalUnix.parse("unix:7=reconnect").get().description == "unix:7=reconnect")
    }

    @Test func anExternalSocketRoundTripsAndMarksItsImage() throws {
        var image = try ProcessImageTests.version1()
        #expect(!image.hasExternalSockets)
        var socket = ProcessImage.UnixSocket(inode: 42, type: .stream, peer: 0)
        socket.external = .init(action: .reconnect, path: "/run/x.sock", peerPid: 77)
        var descriptor = ProcessImage.Descriptor(
            fd: 5, kind: .socket, target: "socket:[42]", flags: 2, offset: 0, contents: nil)
        descriptor.socket = socket
        image.descriptors.append(descriptor)
        #expect(image.hasExternalSockets)
        image.format = ProcessImage.externalFormat
        let decoded = try ProcessImage(decoding: try image.encoded(), generation: 0)
        #expect(decoded == image)
        #expect(socket.summary.contains("external: connected again to /run/x.sock at the restart"))
        #expect(
            ProcessImage.externalUnixNotices([decoded]).first?.hasPrefix(
                "reconnected (--external-unix): process \(image.pid) fd 5") == true)
        let unknown = Data(#"{"action": "forward", "path": "/run/x.sock"}"#.utf8)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(ProcessImage.UnixSocket.External.self, from: unknown)
        }
    }
}
