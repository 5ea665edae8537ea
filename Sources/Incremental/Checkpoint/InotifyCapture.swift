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

    /// The "key:value" words of a watch's fdinfo line, after "inotify".
    static func fields(of line: Substring) -> [Substring: Substring] {
        var fields: [Substring: Substring] = [:]
        for word in line.split(separator: " ").dropFirst() {
            guard let colon = word.firstIndex(of: ":") else { continue }
            fields[word[..<colon]] = word[word.index(after: colon)...]
        }
        return fields
    }

    /// The inodes the inotify descriptor `fd` of `pid` watches and the events of each, read
    /// while it runs (no path is looked for).
    static func watchedInodes(_ pid: Int32, _ fd: Int32) -> [(inode: UInt64, mask: UInt32)] {
        guard let lines = try? ProcFS.descriptorInfoLines(pid, fd) else { return [] }
        return lines.filter { $0.hasPrefix("inotify ") }.compactMap { line in
            let fields = Self.fields(of: line)
            guard let inode = fields["ino"].flatMap({ UInt64($0, radix: 16) }),
                let mask = fields["mask"].flatMap({ UInt32($0, radix: 16) })
            else { return nil }
            return (inode, mask)
        }
    }

    static func capture(_ pid: Int32, _ fd: Int32, _ lines: [Substring]) -> EventDescriptorCapture.Outcome {
        if let refusal = EventDescriptorCapture.queuedEventsRefusal(pid, fd, kind: "inotify") {
            return .refused(refusal)
        }
        var mounts: [WatchedFile.Mount]?
        var watches: [ProcessImage.InotifyWatch] = []
        for line in lines where line.hasPrefix("inotify ") {
            let fields = Self.fields(of: line)
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
            if mounts == nil { mounts = WatchedFile.Mount.all() }
            let file = WatchedFile.Inode(device: device, inode: inode)
            switch WatchedFile.path(of: file, handle: fields, mounts: mounts ?? []) {
            case .success(let path): watches.append(.init(wd: wd, mask: mask, path: path))
            case .failure(let refusal): return .refused("watch \(wd): \(refusal.reason)")
            }
        }
        return .object(.inotify(watches: watches.sorted { $0.wd < $1.wd }))
    }
}
