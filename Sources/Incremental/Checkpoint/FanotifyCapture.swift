#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// Reads a fanotify descriptor from /proc/PID/fdinfo, every number in hexadecimal: "fanotify
/// flags:12 event-flags:8000", then a line per mark, on an inode ("fanotify ino:f9e0f9
/// sdev:fe00000 mflags:0 mask:3b ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:..."),
/// a mount ("fanotify mnt_id:1b mflags:40 mask:40000038 ignored_mask:3") or a file system
/// ("fanotify sdev:1b mflags:0 mask:8 ignored_mask:0"). Each is kept by a path a restart marks
/// again. Refused: events queued and not read yet, a group of permission events (an event
/// read and not answered yet is not shown anywhere), a mark on a mount namespace, a file or
/// mount not reachable here.
enum FanotifyCapture {
    /// FAN_CLASS_CONTENT | FAN_CLASS_PRE_CONTENT.
    static let permissionClasses: UInt32 = 0x04 | 0x08
    /// The mark flags fdinfo shows and fanotify_mark(2) takes again: FAN_MARK_IGNORED_SURV_MODIFY,
    /// FAN_MARK_EVICTABLE, FAN_MARK_IGNORE.
    static let restorableMarkFlags: UInt32 = 0x40 | 0x200 | 0x400

    static func capture(_ pid: Int32, _ fd: Int32, _ lines: [Substring]) -> EventDescriptorCapture.Outcome {
        if let refusal = EventDescriptorCapture.queuedEventsRefusal(pid, fd, kind: "fanotify") {
            return .refused(refusal)
        }
        var group: (flags: UInt32, eventFlags: UInt32)?
        var marks: [ProcessImage.FanotifyMark] = []
        let mounts = WatchedFile.Mount.all()
        for line in lines where line.hasPrefix("fanotify ") {
            var fields: [Substring: Substring] = [:]
            for word in line.split(separator: " ").dropFirst() {
                guard let colon = word.firstIndex(of: ":") else { continue }
                fields[word[..<colon]] = word[word.index(after: colon)...]
            }
            func hex(_ key: Substring) -> UInt32? { fields[key].flatMap { UInt32($0, radix: 16) } }
            if let flags = hex("flags"), let eventFlags = hex("event-flags") {
                guard flags & permissionClasses == 0 else {
                    return .refused(
                        "a fanotify group of permission events (flags 0x\(String(flags, radix: 16))): an event "
                            + "read and not answered yet cannot be seen, nor made again")
                }
                group = (flags, eventFlags)
                continue
            }
            guard let flags = hex("mflags"), let mask = hex("mask"), let ignored = hex("ignored_mask") else {
                return .refused("a mark is not in fdinfo as this chpox reads it: \(line)")
            }
            guard flags & ~restorableMarkFlags == 0 else {
                return .refused("a mark with flags 0x\(String(flags, radix: 16)) this chpox does not make again")
            }
            let found: Result<(ProcessImage.FanotifyMark.Object, String), WatchedFile.Refusal>
            if let inode = fields["ino"].flatMap({ UInt64($0, radix: 16) }), let device = hex("sdev") {
                let file = WatchedFile.Inode(device: UInt64(device), inode: inode)
                found = WatchedFile.path(of: file, handle: fields, mounts: mounts).map { (.inode, $0) }
            } else if let id = fields["mnt_id"].flatMap({ UInt64($0, radix: 16) }) {
                found = mountPoint(id, mounts).map { (.mount, $0) }
            } else if let device = hex("sdev") {
                found = fileSystem(UInt64(device), mounts).map { (.filesystem, $0) }
            } else {
                return .refused("a mark on what this chpox does not mark again: \(line)")
            }
            switch found {
            case .success(let (object, path)):
                marks.append(.init(object: object, path: path, flags: flags, mask: mask, ignoredMask: ignored))
            case .failure(let refusal): return .refused("a mark (\(line)): \(refusal.reason)")
            }
        }
        guard let group else { return .refused("its flags are not in fdinfo as this chpox reads them") }
        // fdinfo lists the newest mark first (each is put at the head of its group's list): kept
        // in the order they were made, so that a restart makes them in that order again.
        return .object(.fanotify(flags: group.flags, eventFlags: group.eventFlags, marks: marks.reversed()))
    }

    /// Where mount `id` is, when no mount over it hides it (fanotify_mark marks the mount a
    /// path ends on).
    static func mountPoint(_ id: UInt64, _ mounts: [WatchedFile.Mount]) -> Result<String, WatchedFile.Refusal> {
        guard let mount = mounts.first(where: { $0.id == id }) else {
            return .failure(.init(reason: "its mount (id \(id)) is not one where cpx runs"))
        }
        guard mounts.last(where: { $0.point == mount.point })?.id == id else {
            return .failure(.init(reason: "its mount at \(mount.point) is hidden under another mounted over it"))
        }
        return .success(mount.point)
    }

    /// A mount point of the file system of device `device` (the kernel's encoding), one no
    /// other mount hides.
    static func fileSystem(_ device: UInt64, _ mounts: [WatchedFile.Mount]) -> Result<String, WatchedFile.Refusal> {
        let file = WatchedFile.Inode(device: device, inode: 0)
        for mount in mounts where mount.major == file.major && mount.minor == file.minor {
            if mounts.last(where: { $0.point == mount.point })?.id == mount.id { return .success(mount.point) }
        }
        return .failure(
            .init(reason: "its file system (device \(file.major):\(file.minor)) is not mounted where cpx runs"))
    }
}
