#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// The file an inotify watch or a fanotify mark is on, found from what fdinfo shows of it: its
/// inode, its file system's device and a file handle ("ino:f9e3aa sdev:fe00000 fhandle-bytes:8
/// fhandle-type:1 f_handle:aae3f900bcbd69bd"), and the mounts fdinfo names by id.
enum WatchedFile {
    /// An inode as the kernel names it in fdinfo: its file system's device number in the
    /// kernel's own encoding (major << 20 | minor) and its number.
    struct Inode: Equatable {
        var device: UInt64
        var inode: UInt64

        var major: UInt64 { device >> 20 }
        var minor: UInt64 { device & 0xf_ffff }

        /// The same from stat(2)'s st_dev, in glibc's encoding (gnu_dev_major/gnu_dev_minor).
        init(status: FileDescriptor.Status) {
            let major = ((status.device >> 8) & 0xfff) | ((status.device >> 32) & ~0xfff)
            let minor = (status.device & 0xff) | ((status.device >> 12) & ~0xff)
            self.init(device: major << 20 | minor, inode: status.inode)
        }

        init(device: UInt64, inode: UInt64) { (self.device, self.inode) = (device, inode) }
    }

    struct Refusal: Error { var reason: String }

    /// The path, in this process's view of the file system, of the file handle `handle` names:
    /// opened on each mount of its file system in turn (those of the whole file system first),
    /// kept when the path the descriptor shows names that same inode.
    static func path(of inode: Inode, type: Int32, handle: [UInt8], mounts: [Mount]) -> Result<String, Refusal> {
        let candidates = mounts.filter { $0.major == inode.major && $0.minor == inode.minor }
            .sorted { ($0.root == "/" ? 0 : 1) < ($1.root == "/" ? 0 : 1) }
        guard !candidates.isEmpty else {
            return .failure(
                .init(reason: "its file system (device \(inode.major):\(inode.minor)) is not mounted where cpx runs"))
        }
        var seen: String?
        var failure: Errno?
        for mount in candidates {
            // A mount hidden under another mounted over its point is not reached by that path.
            guard let directory = try? FileDescriptor.open(mount.point, [.pathOnly, .directory]),
                let status = try? directory.status()
            else { continue }
            defer { directory.close() }
            guard Inode(status: status).device == inode.device else { continue }
            let file: FileDescriptor
            do { file = try directory.openFile(handle: handle, type: type) } catch {
                failure = error
                continue
            }
            defer { file.close() }
            guard let path = try? FileDescriptor.currentDirectory.linkTarget(of: "/proc/self/fd/\(file.rawValue)")
            else { continue }
            if let status = try? FileDescriptor.currentDirectory.status(of: path), Inode(status: status) == inode {
                return .success(path)
            }
            seen = path
        }
        if seen == nil, let failure {
            if failure.rawValue == ESTALE { return .failure(.init(reason: "its file no longer exists")) }
            return .failure(.init(reason: "its file handle cannot be opened (\(failure))"))
        }
        if let seen, seen.hasSuffix(" (deleted)") {
            return .failure(
                .init(
                    reason: "it watches \(seen): a file no longer linked anywhere, which a restart cannot watch again"))
        }
        return .failure(
            .init(
                reason: "its file (inode \(inode.inode) on device \(inode.major):\(inode.minor)) is not found by a "
                    + "path here" + (seen.map { " (its handle opens as \($0))" } ?? "")))
    }

    /// "aae3f900bcbd69bd" as bytes; nil if it is not hexadecimal pairs.
    static func bytes(_ text: Substring) -> [UInt8]? {
        guard text.count.isMultiple(of: 2), text.count / 2 <= FileDescriptor.maximumHandleSize else { return nil }
        var bytes: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            guard let byte = UInt8(text[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }

    /// A line of /proc/self/mountinfo: "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw".
    struct Mount {
        /// Its mount id (mnt_id).
        var id: UInt64
        var major: UInt64
        var minor: UInt64
        /// The directory of its file system it shows.
        var root: String
        var point: String

        static func all() -> [Mount] {
            guard let bytes = try? ProcFS.bytes(CurrentProcess.id, "mountinfo") else { return [] }
            return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
                let fields = line.split(separator: " ")
                guard fields.count > 4 else { return nil }
                let numbers = fields[2].split(separator: ":")
                guard numbers.count == 2, let id = UInt64(fields[0]), let major = UInt64(numbers[0]),
                    let minor = UInt64(numbers[1])
                else { return nil }
                return Mount(
                    id: id, major: major, minor: minor, root: unescaped(fields[3]), point: unescaped(fields[4]))
            }
        }

        /// mountinfo writes a space, tab, newline and backslash in a path as \040, \011, \012, \134.
        static func unescaped(_ text: Substring) -> String {
            var bytes: [UInt8] = []
            var utf8 = Array(text.utf8)[...]
            while let byte = utf8.popFirst() {
                if byte == UInt8(ascii: "\\"), utf8.count >= 3,
                    let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8)
                {
                    bytes.append(value)
                    utf8 = utf8.dropFirst(3)
                } else {
                    bytes.append(byte)
                }
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// The path of the file fdinfo's fields (ino, sdev, fhandle-type, f_handle) name.
    static func path(of inode: Inode, handle fields: [Substring: Substring], mounts: [Mount]) -> Result<String, Refusal>
    {
        guard let type = fields["fhandle-type"].flatMap({ Int32($0, radix: 16) }),
            let text = fields["f_handle"], let handle = bytes(text), !handle.isEmpty
        else { return .failure(.init(reason: "its file system gives no file handle, so its file cannot be found")) }
        return path(of: inode, type: type, handle: handle, mounts: mounts)
    }
}
