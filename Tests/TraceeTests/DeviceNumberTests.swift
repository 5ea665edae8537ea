#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Syscall
import Testing

/// `DeviceNumber` against the kernel: a node made with the mknod(2) form of a number stats
/// back (st_rdev, in glibc's encoding) as that number.
@Suite struct DeviceNumberTests {
    @Test(
        .enabled(if: getuid() == 0, "mknod of a device node needs root"),
        arguments: [(UInt32(1), UInt32(3)), (8, 17), (4095, 255), (259, 0x12345), (136, 0xfffff)])
    func aNodeMadeWithTheMknodFormStatsBackAsItsNumber(major: UInt32, minor: UInt32) throws {
        let device = DeviceNumber(major: major, minor: minor)
        let argument = try #require(device.mknodArgument)
        let path = NSTemporaryDirectory() + "chpox-device-\(getpid())-\(major)-\(minor)"
        unlink(path)
        defer { unlink(path) }
        try #require(mknod(path, S_IFCHR | 0o600, dev_t(argument)) == 0, "mknod: \(errno)")
        let status = try FileDescriptor.currentDirectory.status(of: path)
        #expect(status.isCharacterDevice)
        #expect(status.specialDevice == device)
    }

    @Test func theMknodFormHoldsTwelveBitMajorsAndTwentyBitMinorsOnly() {
        #expect(DeviceNumber(major: 4095, minor: (1 << 20) - 1).mknodArgument != nil)
        #expect(DeviceNumber(major: 4096, minor: 0).mknodArgument == nil)
        #expect(DeviceNumber(major: 0, minor: 1 << 20).mknodArgument == nil)
    }

    @Test func devNullIsOneThree() throws {
        let status = try FileDescriptor.currentDirectory.status(of: "/dev/null", followingSymlinks: true)
        #expect(status.isCharacterDevice)
        #expect(status.specialDevice == DeviceNumber(major: 1, minor: 3))
    }
}
