import Foundation
import Incremental
import Testing

/// The image format is ours: `chpox.image/2` is pinned by a golden file (a renamed field or
/// key shows as a diff), `/1` images read into today's types, and what cannot be read is
/// refused with the generation and the reason.
@Suite struct ProcessImageTests {
    static let golden = InspectTests.golden.appendingPathComponent("image-v2.json")

    /// InspectFixture writes its images in the first format, as cpx did until 2026-12.
    static func version1(_ generation: Int = 0) throws -> ProcessImage {
        try ProcessImage(decoding: InspectFixture.image(generation: generation), generation: UInt64(generation))
    }

    @Test func aVersion1ImageReadsIntoTodaysTypes() throws {
        let image = try Self.version1()
        #expect(image.format == "chpox.image/2")
        #expect(image.credentials.user == .init(real: 1000, effective: 1000, saved: 1000, filesystem: 1000))
        #expect(image.credentials.groups == [1000, 27])
        #expect(
            image.mappings.map(\.protection) == [
                [.read, .execute], [.read, .write], [.read, .write], [.read, .write], [.read, .write],
            ])
        #expect(image.mappings.map(\.protection.description) == ["r-xp", "rw-p", "rw-p", "rw-p", "rw-p"])
        let thread = try #require(image.threads.first)
        #expect(thread.tid == 1001)
        #expect(thread.registers.rip == 0x40_0100)
        #expect(thread.registers.rsp == 0x7fff_f000_7f00)
        #expect(thread.registers.fsBase == 0x7f00_0000_1000)
        #expect(thread.registers.r14 == 0x1111)
        #expect(thread.signalStack == .init(address: 0x7f00_0010_0000, flags: 0, size: 65536))
        #expect(thread.xstate.count == 64)
        #expect(image.sharedPendingSignals.map(\.signal) == [12])
        #expect(image.intervalTimers == [.init(which: 0, intervalMicroseconds: 5000, valueMicroseconds: 3400)])
        #expect(image.signalActions.map(\.signal) == [10, 15])
    }

    @Test func todaysFormatRoundTripsAndIsPinnedByItsGoldenFile() throws {
        let image = try Self.version1(1)
        let bytes = try image.encoded()
        #expect(try ProcessImage(decoding: bytes, generation: 1) == image)
        let text = String(decoding: bytes, as: UTF8.self)
        if ProcessInfo.processInfo.environment["CHPOX_UPDATE_GOLDEN"] == "1" {
            try text.write(to: Self.golden, atomically: true, encoding: .utf8)
            return
        }
        #expect(
            text == (try String(contentsOf: Self.golden, encoding: .utf8)),
            "CHPOX_UPDATE_GOLDEN=1 rewrites \(Self.golden.path)")
    }

    /// Images from before the process controls were kept read without them (a restart leaves
    /// ld-chpox's); today's carry them by name.
    @Test func processControlsRoundTripAndAreAbsentFromOlderImages() throws {
        var image = try Self.version1(1)
        #expect(image.controls == nil)
        image.controls = .init(
            oomScoreAdjust: 400, loginUID: 3, dumpable: 0, transparentHugePagesDisabled: true, childSubreaper: true,
            membarrierRegistrations: 16)
        let bytes = try image.encoded()
        #expect(try ProcessImage(decoding: bytes, generation: 1) == image)
        let json = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        #expect(
            (json?["controls"] as? [String: Any]).map { Set($0.keys) } == [
                "oomScoreAdjust", "loginUID", "dumpable", "transparentHugePagesDisabled", "childSubreaper",
                "membarrierRegistrations",
            ])
    }

    /// Deleted files saved for mappings (2026-12) are optional fields: the golden image, written
    /// before them, still reads (above); an image with them keeps the links by index.
    @Test func deletedFilesOfMappingsAndTheirDescriptorsRoundTrip() throws {
        var image = try Self.version1()
        image.deletedFiles = [.init(path: "/tmp/gone (deleted)", contents: Data([1, 2, 3]))]
        image.mappings[1].deletedFile = 0
        image.descriptors.append(
            .init(fd: 9, kind: .deletedFile, target: "/tmp/gone (deleted)", flags: 2, offset: 1))
        image.descriptors[image.descriptors.count - 1].deletedFile = 0
        let decoded = try ProcessImage(decoding: try image.encoded(), generation: 0)
        #expect(decoded == image)
        #expect(decoded.deletedFiles?.first?.contents == Data([1, 2, 3]))
        #expect(decoded.mappings[1].deletedFile == 0)
        #expect(try Self.version1().deletedFiles == nil)
    }

    @Test func everyFieldHasAName() throws {
        let json = try JSONSerialization.jsonObject(with: Data(try Self.version1().encoded())) as? [String: Any]
        let thread = try #require((json?["threads"] as? [[String: Any]])?.first)
        let registers = try #require(thread["registers"] as? [String: Any])
        #expect(Set(registers.keys) == Set(ProcessImage.Registers.names))
        #expect((thread["signalStack"] as? [String: Any]).map { Set($0.keys) } == ["address", "flags", "size"])
        let credentials = try #require(json?["credentials"] as? [String: Any])
        #expect(
            (credentials["user"] as? [String: Any]).map { Set($0.keys) } == [
                "real", "effective", "saved", "filesystem",
            ])
        let mapping = try #require((json?["mappings"] as? [[String: Any]])?.first)
        #expect(mapping["protection"] as? String == "r-xp")
    }

    static func refusal(_ edit: (inout [String: Any]) -> Void) throws -> String {
        var json = try #require(
            try JSONSerialization.jsonObject(with: Data(InspectFixture.image(generation: 0))) as? [String: Any])
        edit(&json)
        let bytes = Array(try JSONSerialization.data(withJSONObject: json))
        do {
            _ = try ProcessImage(decoding: bytes, generation: 7)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test func whatCannotBeReadIsRefusedWithTheReason() throws {
        let unknown = try Self.refusal { $0["format"] = "chpox.image/9" }
        #expect(
            unknown.hasPrefix(
                "generation 7: unreadable process image: format 'chpox.image/9' is none of chpox.image/2, "
                    + "chpox.image/3, chpox.image/4, chpox.image/5, chpox.image/1"
            ))
        // A file record of a state this chpox does not know is refused, not ignored.
        let record = Data(
            """
            {"path": "/tmp/x", "state": "somewhere-else", "device": 1, "inode": 2, "size": 3, "permissions": 420,
             "owner": 0, "group": 0, "modified": [0, 0], "changed": [0, 0], "heldBy": []}
            """.utf8)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(ProcessImage.RecordedFile.self, from: record) }
        let protection = try Self.refusal { json in
            var mappings = json["mappings"] as? [[String: Any]] ?? []
            mappings[0]["protection"] = "rwz"
            json["mappings"] = mappings
        }
        #expect(protection.contains("protection 'rwz' is not like r-xp"), "\(protection)")
        let ids = try Self.refusal { $0["credentials"] = ["uid": [0, 0], "gid": [0, 0, 0, 0], "groups": [Int]()] }
        #expect(ids.contains("user ids [0, 0] are not four"), "\(ids)")
        let registers = try Self.refusal { json in
            var threads = json["threads"] as? [[String: Any]] ?? []
            var state = threads[0]["state"] as? [String: Any] ?? [:]
            state["registers"] = [1, 2, 3]
            threads[0]["state"] = state
            json["threads"] = threads
        }
        #expect(registers.contains("3 registers, not 27"), "\(registers)")
    }
}

/// `ld-chpox --tcp-close`'s image: every TCP connection, established or half closed, in each
/// process of the tree, becomes a closed socket keeping its addresses; nothing else changes.
@Suite struct ClosingConnectionsTests {
    typealias Socket = ProcessImage.InetSocket

    static func socket(
        _ inode: UInt64, _ transport: Socket.Transport, _ state: Socket.State, peer: UInt16? = nil
    ) -> Socket {
        var socket = Socket(inode: inode, family: .ipv4, transport: transport, state: state)
        socket.local = .init(host: "127.0.0.1", port: UInt16(40000 + inode))
        socket.remote = peer.map { .init(host: "127.0.0.1", port: $0) }
        if state.isConnection {
            socket.connection = .init(
                sendSequence: 7, receiveSequence: 9, sendQueue: Data([1, 2]), unsent: 1, receiveQueue: Data([3]),
                mss: 1460, sack: true, timestamps: true, window: [1, 2, 3, 4, 5])
            socket.readShutdown = state == .closeWait ? true : nil
        }
        return socket
    }

    static func descriptors(_ sockets: [Socket]) -> [ProcessImage.Descriptor] {
        sockets.enumerated().map { k, socket in
            var descriptor = ProcessImage.Descriptor(
                fd: Int32(3 + k), kind: .inetSocket, target: "socket:[\(socket.inode)]", flags: 2, offset: 0)
            descriptor.inet = socket
            return descriptor
        }
    }

    @Test func everyConnectionOfTheTreeAndNothingElseIsClosed() throws {
        var image = try ProcessImageTests.version1(1)
        let first = [
            Self.socket(1, .tcp, .listening), Self.socket(2, .tcp, .established, peer: 80),
            Self.socket(3, .udp, .connected, peer: 53), Self.socket(4, .tcp, .synSent, peer: 81),
        ]
        let second = [Self.socket(5, .tcp, .closeWait, peer: 82), Self.socket(6, .tcp, .unconnected)]
        image.descriptors = Self.descriptors(first)
        var member = image
        member.pid = image.pid + 1
        member.descriptors = Self.descriptors(second)
        image.tree = [member]

        let closed = image.closingConnections()
        let sockets = closed.processes.flatMap { $0.descriptors.compactMap(\.inet) }
        let original = first + second
        for (before, after) in zip(original, sockets) {
            if before.transport == .tcp && before.state.isConnection {
                #expect(after.state == .closed, "\(before.summary)")
                #expect(after.connection == nil && after.readShutdown == nil && after.writeShutdown == nil)
                #expect(after.local == before.local && after.remote == before.remote)
            } else {
                #expect(after == before, "\(before.summary)")
            }
        }
        #expect(
            ProcessImage.closedConnections(closed.processes).map { "\($0.pid) \($0.fd) \($0.connection)" } == [
                "\(image.pid) 4 127.0.0.1:40002 to 127.0.0.1:80", "\(member.pid) 3 127.0.0.1:40005 to 127.0.0.1:82",
            ])
        #expect(ProcessImage.outsideConnections(closed.processes).isEmpty)
        // The state is named in the image: a restart that does not know it refuses the image.
        let bytes = try closed.encoded()
        #expect(String(decoding: bytes, as: UTF8.self).contains("\"state\":\"closed\""))
        #expect(try ProcessImage(decoding: bytes, generation: 1) == closed)
    }
}
