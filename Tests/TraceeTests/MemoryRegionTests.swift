import Testing
@testable import Tracee

/// /proc/<pid>/maps lines as the kernel prints them, each with the region a person reads off
/// the line by hand.
@Suite struct MemoryRegionTests {
    static func region(
        _ start: UInt64, _ end: UInt64, _ perms: String, offset: UInt64 = 0, device: String = "00:00",
        inode: UInt64 = 0, path: String = ""
    ) -> MemoryRegion {
        let p = Array(perms)
        return MemoryRegion(
            start: start, end: end, readable: p[0] == "r", writable: p[1] == "w", executable: p[2] == "x",
            shared: p[3] == "s", offset: offset, device: device, inode: inode, path: path)
    }

    @Test func parsesPathsWithSpacesDeletedFilesPseudoNamesAndNoPath() throws {
        let text = """
            55d0c6a00000-55d0c6a02000 r--p 00000000 fd:01 1048600                    /usr/bin/my program
            55d0c6a02000-55d0c6a03000 rw-p 00002000 fd:01 1048601                    /tmp/two  spaces (deleted)
            7f0000000000-7f0000004000 rw-s 00000000 00:01 2050                       /dev/zero (deleted)
            7f1000000000-7f1000001000 ---p 00000000 00:00 0 
            7f1000001000-7f1000021000 rw-p 00000000 00:00 0
            7ffd1c2a3000-7ffd1c2c4000 rw-p 00000000 00:00 0                          [stack]
            7ffd1c3fe000-7ffd1c400000 r-xp 00000000 00:00 0                          [vdso]
            ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
            """
        let regions = try MemoryRegion.parse(text, file: "maps")
        #expect(
            regions == [
                Self.region(
                    0x55d0_c6a0_0000, 0x55d0_c6a0_2000, "r--p", device: "fd:01", inode: 1_048_600,
                    path: "/usr/bin/my program"),
                Self.region(
                    0x55d0_c6a0_2000, 0x55d0_c6a0_3000, "rw-p", offset: 0x2000, device: "fd:01", inode: 1_048_601,
                    path: "/tmp/two  spaces (deleted)"),
                Self.region(
                    0x7f00_0000_0000, 0x7f00_0000_4000, "rw-s", device: "00:01", inode: 2050,
                    path: "/dev/zero (deleted)"),
                Self.region(0x7f10_0000_0000, 0x7f10_0000_1000, "---p"),
                Self.region(0x7f10_0000_1000, 0x7f10_0002_1000, "rw-p"),
                Self.region(0x7ffd_1c2a_3000, 0x7ffd_1c2c_4000, "rw-p", path: "[stack]"),
                Self.region(0x7ffd_1c3f_e000, 0x7ffd_1c40_0000, "r-xp", path: "[vdso]"),
                Self.region(0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000, "--xp", path: "[vsyscall]"),
            ])
        #expect(regions.map(\.pageCount) == [2, 1, 4, 1, 32, 33, 2, 1])
        #expect(regions.map(\.isAnonymous) == [false, false, false, true, true, true, true, true])
        #expect(regions.map(\.isSpecial) == [false, false, false, false, false, false, true, true])
        #expect(regions.map(\.protection) == ["r--p", "rw-p", "rw-s", "---p", "rw-p", "rw-p", "r-xp", "--xp"])
    }

    @Test func emptyTextIsNoRegions() throws {
        #expect(try MemoryRegion.parse("", file: "maps") == [])
        #expect(try MemoryRegion.parse("\n\n", file: "maps") == [])
    }

    @Test(arguments: [
        "55d0c6a00000-55d0c6a02000 r--p 00000000 fd:01",  // too few fields
        "55d0c6a00000 r--p 00000000 fd:01 0",  // no range
        "55d0c6a0zz00-55d0c6a02000 r--p 00000000 fd:01 0",  // not hex
        "55d0c6a00000-55d0c6a02000 r-p 00000000 fd:01 0",  // three permission letters
        "55d0c6a00000-55d0c6a02000 r--p 0000g000 fd:01 0",  // offset not hex
        "55d0c6a00000-55d0c6a02000 r--p 00000000 fd:01 x12",  // inode not a number
        "1ffffffffffffffff-2ffffffffffffffff rw-p 00000000 00:00 0",  // more than 64 bits
    ])
    func malformedLinesAreRefusedAndNamed(line: String) throws {
        let error = #expect(throws: TraceeError.self) {
            try MemoryRegion.parse("7f00-8000 rw-p 0 00:00 0\n" + line, file: "/proc/42/maps")
        }
        guard case .malformed(let file, let reason) = error else {
            Issue.record("\(String(describing: error)) is not .malformed")
            return
        }
        #expect(file == "/proc/42/maps")
        #expect(reason.contains(line), "\(reason)")
    }
}
