import Foundation
import Store
import StoreTestSupport

/// A store built in the test with two generations of a made-up process whose every value is
/// fixed (times, addresses, registers, descriptors, handlers), so that dumpinfo's text can be
/// compared with golden files and every change between the two is known:
///
/// - anonymous 0x10000000, 16 pages: generation 0 holds pages 0-11; generation 1 rewrites pages
///   2, 3, 4 and 9 and writes page 12 for the first time.
/// - heap 0x20000000, 4 pages (2 held): gone in generation 1.
/// - anonymous 0x30000000, 2 pages: new in generation 1, both written.
/// - the private file mapping's written page stays; the stack's last page is rewritten.
/// - fd 1's offset moves, fd 3 (a pipe) closes, fd 4 opens; thread 1002 exits, thread 1001 moves
///   on; SIGUSR1's handler gains SA_RESTART, SIGINT gets a handler; the umask changes.
enum InspectFixture {
    static let chain = "fixture"
    static let created: Int64 = 1_795_000_000_000_000_000  // 2026-11-18 11:06:40 UTC

    /// Expected `dumpinfo --diff 0 1`, mapping by mapping: (change, start, changed pages).
    static let expectedMappings: [(String, UInt64, UInt64)] = [
        ("pages", 0x1000_0000, 5), ("removed", 0x2000_0000, 2), ("added", 0x3000_0000, 2),
        ("pages", 0x7fff_f000_0000, 1),
    ]
    static let expectedChangedPages: UInt64 = 10

    static func build(_ store: Store) throws {
        let first = try store.beginGeneration(chain: chain)
        try put(first, address: 0x1000_0000, pages: 0..<12, salt: 0)
        try put(first, address: 0x2000_0000, pages: 0..<2, salt: 0)
        try put(first, address: 0x40_1000, pages: 0..<1, salt: 0)
        try put(first, address: 0x7fff_f000_0000, pages: 6..<8, salt: 0)
        try first.commit(metadata: image(generation: 0), createdNanoseconds: created)

        let second = try store.beginGeneration(chain: chain)
        for page in [2, 3, 4, 9] { try put(second, address: 0x1000_0000, pages: page..<(page + 1), salt: 1) }
        try put(second, address: 0x1000_0000, pages: 12..<13, salt: 0)
        second.unmap(PageRange(first: 0x2000_0000 / 4096, count: 4))
        try put(second, address: 0x3000_0000, pages: 0..<2, salt: 0)
        try put(second, address: 0x7fff_f000_0000, pages: 7..<8, salt: 1)
        try second.commit(metadata: image(generation: 1), createdNanoseconds: created + 60_000_000_000)
    }

    /// Pages whose bytes say where they are and which version they hold.
    static func put(_ writer: GenerationWriter, address: UInt64, pages: Range<Int>, salt: UInt8) throws {
        for page in pages {
            var bytes = [UInt8](repeating: 0, count: 4096)
            for i in 0..<4096 {
                bytes[i] = UInt8(truncatingIfNeeded: Int(address >> 12) &+ page &* 31 &+ i &* 7) ^ salt &* 0x5A
            }
            try bytes.withUnsafeBytes { try writer.put(firstPage: address / 4096 + UInt64(page), contents: $0) }
        }
    }

    static func mapping(
        _ start: UInt64, _ end: UInt64, _ protection: String, _ backing: String, path: String = "",
        resident: UInt64
    ) -> [String: Any] {
        [
            "start": start, "end": end, "protection": protection, "backing": backing, "offset": 0,
            "device": path.isEmpty ? "00:00" : "fe:01",
            "inode": path.hasPrefix("/") ? 1234 : 0, "path": path, "flags": ["rd", "wr", "mr", "mw", "me", "ac"],
            "residentPages": resident,
        ]
    }

    static func thread(_ tid: Int32, rip: UInt64, rsp: UInt64) -> [String: Any] {
        var registers = (0..<27).map { UInt64($0) * 0x1111 }
        registers[16] = rip
        registers[19] = rsp
        registers[21] = 0x7f00_0000_1000 + UInt64(tid - 1001) * 0x10000
        return [
            "state": [
                "tid": tid, "registers": registers, "xstate": [UInt8](repeating: 0, count: 64),
                "signalMask": UInt64(1) << 9,
                "pendingSignals": [[UInt8]](),
            ],
            "clearAddress": 0x7f00_0000_1010,
            "alternateStack": [0x7f00_0010_0000, 0, 65536],
        ]
    }

    static func image(generation: Int) -> [UInt8] {
        let later = generation == 1
        var mappings = [
            mapping(0x40_0000, 0x40_1000, "r-xp", "private-file", path: "/usr/bin/fixture", resident: 1),
            mapping(0x40_1000, 0x40_2000, "rw-p", "private-file", path: "/usr/bin/fixture", resident: 1),
            mapping(0x1000_0000, 0x1001_0000, "rw-p", "anonymous", resident: later ? 13 : 12),
        ]
        if !later { mappings.append(mapping(0x2000_0000, 0x2000_4000, "rw-p", "heap", path: "[heap]", resident: 2)) }
        if later { mappings.append(mapping(0x3000_0000, 0x3000_2000, "rw-p", "anonymous", resident: 2)) }
        mappings.append(mapping(0x7fff_f000_0000, 0x7fff_f000_8000, "rw-p", "stack", path: "[stack]", resident: 2))
        var threads = [thread(1001, rip: later ? 0x40_0180 : 0x40_0100, rsp: 0x7fff_f000_7f00)]
        if !later { threads.append(thread(1002, rip: 0x40_0200, rsp: 0x7f00_0020_0000)) }
        var descriptors: [[String: Any]] = [
            ["fd": 0, "kind": "null", "target": "/dev/null", "flags": 0o100000, "offset": 0],
            [
                "fd": 1, "kind": "file", "target": "/var/log/fixture.log", "flags": 0o102001,
                "offset": later ? 8192 : 4096, "size": later ? 8192 : 4096,
            ],
        ]
        if !later {
            descriptors.append(["fd": 3, "kind": "pipe", "target": "pipe:[4242]", "flags": 0o4001, "offset": 0])
        }
        if later {
            descriptors.append(["fd": 4, "kind": "directory", "target": "/srv/data", "flags": 0o2304000, "offset": 0])
        }
        var actions: [[String: Any]] = [
            [
                "signal": 10, "handler": 0x40_0500, "flags": later ? 0x1400_0004 : 0x0400_0004, "restorer": 0x40_0600,
                "mask": 0,
            ],
            ["signal": 15, "handler": 1, "flags": 0, "restorer": 0, "mask": 0],
        ]
        if later {
            actions.insert(
                [
                    "signal": 2, "handler": 0x40_0700, "flags": 0x0400_0000, "restorer": 0x40_0600,
                    "mask": UInt64(1) << 14,
                ], at: 0)
        }
        let image: [String: Any] = [
            "format": "chpox.image/1", "pid": 1001, "command": ["/usr/bin/fixture", "--rounds", "100", "two words"],
            "executable": "/usr/bin/fixture", "workingDirectory": "/srv", "umask": later ? 0o077 : 0o022,
            "credentials": ["uid": [1000, 1000, 1000, 1000], "gid": [1000, 1000, 1000, 1000], "groups": [1000, 27]],
            "limits": [
                ["resource": 7, "name": "nofile", "soft": 1024, "hard": 4096],
                ["resource": 3, "name": "stack", "soft": 8_388_608, "hard": UInt64.max],
            ],
            "addressSpace": [
                "startCode": 0x40_0000, "endCode": 0x40_1000, "startData": 0x40_1000, "endData": 0x40_2000,
                "startBrk": 0x2000_0000, "brk": 0x2000_4000, "startStack": 0x7fff_f000_7ff0,
                "argStart": 0x7fff_f000_7f00,
                "argEnd": 0x7fff_f000_7f40, "envStart": 0x7fff_f000_7f40, "envEnd": 0x7fff_f000_7f80, "auxv": [0, 0],
            ],
            "mappings": mappings, "threads": threads, "signalActions": actions,
            "intervalTimers": [["which": 0, "intervalMicroseconds": 5000, "valueMicroseconds": later ? 1200 : 3400]],
            "sharedPendingSignals": later ? [[UInt8]]() : [[12, 0, 0, 0] + [UInt8](repeating: 0, count: 124)],
            "descriptors": descriptors, "unsupported": [String](),
            "capture": [
                "tracker": "uffd-wp", "pauseNanoseconds": 1_234_000, "totalPauseNanoseconds": 5_678_000,
                "preCopyRounds": 1,
                "pagesCopiedWhileRunning": 10, "pagesCopiedFrozen": 2, "kernel": "6.18.0-fixture",
            ],
        ]
        return Array(try! JSONSerialization.data(withJSONObject: image, options: [.sortedKeys]))
    }
}
