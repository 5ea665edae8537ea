import Foundation
@testable import Incremental
import Syscall
import Testing

/// How an inotify watch's or a fanotify mark's file is found from fdinfo: device numbers in the
/// kernel's encoding matched with stat(2)'s and mountinfo's, handles and mount points read.
@Suite struct WatchedFileTests {
    /// The root directory's device, from stat(2), is the device mountinfo gives the mount at "/",
    /// and a file handle of it (as fdinfo would show it) opens as "/" on that mount.
    @Test func theRootIsFoundOnItsMount() throws {
        let status = try FileDescriptor.currentDirectory.status(of: "/")
        let root = WatchedFile.Inode(status: status)
        let mounts = WatchedFile.Mount.all()
        let mount = try #require(mounts.last(where: { $0.point == "/" }))
        #expect(root.major == mount.major)
        #expect(root.minor == mount.minor)
        #expect(root.inode == status.inode)
    }

    @Test func handleBytesAreHexadecimalPairs() {
        #expect(WatchedFile.bytes("0aff10") == [0x0a, 0xff, 0x10])
        #expect(WatchedFile.bytes("0af") == nil)
        #expect(WatchedFile.bytes("0g") == nil)
        #expect(WatchedFile.bytes(Substring(String(repeating: "00", count: 129))) == nil)
    }

    @Test func mountinfoEscapesAreRead() {
        #expect(WatchedFile.Mount.unescaped("/a\\040b\\134c") == "/a b\\c")
        #expect(WatchedFile.Mount.unescaped("/plain") == "/plain")
    }

    /// A mount with another mounted over its point is not marked by that path: refused.
    @Test func aHiddenMountIsRefused() {
        let mounts = [
            WatchedFile.Mount(id: 20, major: 0, minor: 30, root: "/", point: "/mnt"),
            WatchedFile.Mount(id: 21, major: 0, minor: 31, root: "/", point: "/mnt"),
        ]
        #expect((try? FanotifyCapture.mountPoint(21, mounts).get()) == "/mnt")
        #expect((try? FanotifyCapture.mountPoint(20, mounts).get()) == nil)
        #expect((try? FanotifyCapture.fileSystem(31, mounts).get()) == "/mnt")
        #expect((try? FanotifyCapture.fileSystem(30, mounts).get()) == nil)
    }
}
