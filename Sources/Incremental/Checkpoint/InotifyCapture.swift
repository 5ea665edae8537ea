#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// Reads an inotify descriptor: one line of /proc/PID/fdinfo per watch, every number in
/// hexadecimal, "inotify wd:a ino:f9e3aa sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8
/// fhandle-type:1 f_handle:aae3f900bcbd69bd". The kernel keeps no path for a watch, only its
/// inode: the path is found by opening the file handle on a mount of its file system and
/// reading where that descriptor points, and kept only if that path names the same inode. What
/// a restart could not make again exactly is refused: events queued and not read yet (a
/// restart cannot queue them again), a watched file that was deleted or is not reachable by a
/// path here, a watch number too far to reach.
enum InotifyCapture {
    /// The highest watch number a restart makes: a fresh inotify gives 1, 2, 3... (an idr
    /// handed out cyclically), so a restart reaches wd N by adding and removing a watch N-1
    /// times at most, two system calls in the stub each.
    static let highestWatchDescriptor: Int32 = 1 << 14

    /// The mask bits inotify_add_watch(2) takes again: IN_ALL_EVENTS, IN_EXCL_UNLINK, IN_ONESHOT
    /// (fdinfo shows the watch's events and these flags, nothing else, since Linux 6.2).
    static let restorableMask: UInt32 = 0x0000_0fff | 0x0400_0000 | 0x8000_0000

    static func capture(_ pid: Int32, _ fd: Int32, _ lines: [Substring]) -> EventDescriptorCapture.Outcome {
        let queued: Int
        do {
            let process = try ProcessDescriptor.open(pid)
            defer { process.close() }
            let copy = try process.copyDescriptor(fd)
            defer { copy.close() }
            queued = try copy.bytesQueued()
        } catch {
            return .refused("its event queue cannot be measured (\(error))")
        }
        if queued > 0 {
            return .refused(
                "\(queued) bytes of inotify events are queued and not read yet: a restart cannot queue them "
                    + "again (checkpoint it once the program has read them)")
        }
        var mounts: [Mount]?
        var watches: [ProcessImage.InotifyWatch] = []
        for line in lines where line.hasPrefix("inotify ") {
            var fields: [Substring: Substring] = [:]
            for word in line.split(separator: " ").dropFirst() {
                guard let colon = word.firstIndex(of: ":") else { continue }
                fields[word[..<colon]] = word[word.index(after: colon)...]
            }
            func hex(_ key: Substring) -> UInt64? { fields[key].flatMap { UInt64($0, radix: 16) } }
            guard let wd = hex("wd").flatMap({ Int32(exactly: $0) }), let inode = hex("ino"), let device = hex("sdev"),
                let mask = hex("mask").map({ UInt32(truncatingIfNeeded: $0) }), let ignored = hex("ignored_mask")
            else { return .refused("a watch is not in fdinfo as this chpox reads it: \(line)") }
            guard mask & ~restorableMask == 0, ignored == 0 else {
                return .refused(
                    "watch \(wd) has mask 0x\(String(mask, radix: 16)) (ignored 0x\(String(ignored, radix: 16))), "
                        + "more than inotify_add_watch takes again")
            }
            guard wd > 0, wd <= highestWatchDescriptor else {
                return .refused(
                    "watch \(wd): a restart reaches a watch number by taking and giving back each below it, up to "
                        + "\(highestWatchDescriptor)")
            }
            guard let type = fields["fhandle-type"].flatMap({ Int32($0, radix: 16) }),
                let text = fields["f_handle"], let handle = bytes(text), !handle.isEmpty
            else {
                return .refused("watch \(wd): its file system gives no file handle, so its file cannot be found")
            }
            if mounts == nil { mounts = Mount.all() }
            switch path(of: .init(device: device, inode: inode), type: type, handle: handle, mounts: mounts ?? []) {
            case .success(let path): watches.append(.init(wd: wd, mask: mask, path: path))
            case .failure(let refusal): return .refused("watch \(wd): \(refusal.reason)")
            }
        }
        return .object(.inotify(watches: watches.sorted { $0.wd < $1.wd }))
    }

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
        for mount in candidates {
            guard let directory = try? FileDescriptor.open(mount.point, [.pathOnly, .directory]) else { continue }
            defer { directory.close() }
            let file: FileDescriptor
            do { file = try directory.openFile(handle: handle, type: type) } catch {
                if error.rawValue == ESTALE { return .failure(.init(reason: "its file no longer exists")) }
                return .failure(.init(reason: "its file handle cannot be opened (\(error))"))
            }
            defer { file.close() }
            guard let path = try? FileDescriptor.currentDirectory.linkTarget(of: "/proc/self/fd/\(file.rawValue)")
            else { continue }
            if let status = try? FileDescriptor.currentDirectory.status(of: path), Inode(status: status) == inode {
                return .success(path)
            }
            seen = path
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
                guard numbers.count == 2, let major = UInt64(numbers[0]), let minor = UInt64(numbers[1]) else {
                    return nil
                }
                return Mount(major: major, minor: minor, root: unescaped(fields[3]), point: unescaped(fields[4]))
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
}
