#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// What a name deleted while the process held it open leaves a restart to make again: a
/// regular file's data, its holes kept as holes (`ImageCapture.captureDeletedFile` records it);
/// a device node's device; a symbolic link's target. Anything else is refused with a reason.
enum DeletedFileCapture {
    /// What descriptor `fd`'s deleted file is.
    enum Found {
        /// A regular file: its data is read by `ImageCapture.captureDeletedFile`.
        case regularFile
        case node(ProcessImage.Descriptor.DeletedNode)
        case refused(String)
    }

    /// Devices whose open file holds nothing but its flags (and an offset nothing reads): a new
    /// open of the same device is the same open file. The memory devices null (1:3), zero
    /// (1:5), full (1:7), random (1:8) and urandom (1:9); another device's open file may hold
    /// state a new open would not have (a terminal's settings, a tun device's interface, a new
    /// pty from ptmx).
    static let statelessDevices: Set<DeviceNumber> = [
        .init(major: 1, minor: 3), .init(major: 1, minor: 5), .init(major: 1, minor: 7), .init(major: 1, minor: 8),
        .init(major: 1, minor: 9),
    ]

    static func find(_ pid: Int32, _ fd: Int32, target: String, flags: Int32) -> Found {
        let path = String(target.dropLast(" (deleted)".count))
        guard let status = ImageCapture.openFileStatus(pid, fd) else { return .refused("closed while it was read") }
        if status.isRegularFile { return .regularFile }
        if status.isCharacterDevice {
            let device = status.specialDevice
            guard statelessDevices.contains(device) else {
                return .refused(
                    "a deleted node of character device \(device): only the stateless memory devices (null, zero, "
                        + "full, random, urandom) are made again; another device's open file may hold state a new "
                        + "open would not have")
            }
            return .node(
                .init(
                    path: path, type: .characterDevice, permissions: status.permissions, owner: status.owner,
                    group: status.group, device: [device.major, device.minor]))
        }
        if status.isSymlink {
            // Only O_PATH opens a symbolic link itself; /proc's link leads to it (not through it).
            guard flags & CHPOX_O_PATH != 0 else { return .refused("a deleted symbolic link open without O_PATH") }
            do throws(Errno) {
                let link = try FileDescriptor.open("/proc/\(pid)/fd/\(fd)", [.pathOnly])
                defer { link.close() }
                guard try link.status().isSymlink else { return .refused("no longer a symbolic link") }
                return .node(
                    .init(
                        path: path, type: .symlink, permissions: status.permissions, owner: status.owner,
                        group: status.group, linkTarget: try link.linkTarget(of: "")))
            } catch {
                return .refused("cannot read the deleted symbolic link (\(error))")
            }
        }
        let type = status.isBlockDevice ? "block device node" : status.isSocket ? "socket file" : "file of its type"
        return .refused("a deleted \(type): not restored")
    }

    /// A file's data ranges (SEEK_DATA, SEEK_HOLE) and their bytes one after another.
    struct Extents {
        var ranges: [Range<Int64>]
        var bytes: Data
    }

    /// Why a file's data is not saved.
    struct Refusal: Error, CustomStringConvertible {
        var description: String
    }

    /// The data of `file` (of `size` bytes), its holes left out; refused when it holds more than
    /// `ImageCapture.deletedFileLimit` bytes of data, however large its holes make it.
    static func data(of file: FileDescriptor, size: Int64) throws(Errno) -> Result<Extents, Refusal> {
        let ranges = try file.dataRanges(size: size)
        let count = ranges.reduce(Int64(0)) { $0 + Int64($1.count) }
        guard count <= ImageCapture.deletedFileLimit else {
            return .failure(
                Refusal(
                    description: "it holds \(Format.bytes(count)) of data, more than "
                        + "\(Format.bytes(ImageCapture.deletedFileLimit)) a checkpoint copies"))
        }
        var bytes = Data(capacity: Int(count))
        for range in ranges {
            var chunk = [UInt8](repeating: 0, count: range.count)
            let n = try chunk.withUnsafeMutableBufferPointer { (buffer) throws(Errno) -> Int in
                try file.readFully(into: UnsafeMutableRawBufferPointer(buffer), at: range.lowerBound)
            }
            guard n == range.count else { return .failure(Refusal(description: "it changed size while it was read")) }
            bytes.append(contentsOf: chunk)
        }
        return .success(Extents(ranges: ranges, bytes: bytes))
    }
}
