#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// Reads an eventfd, timerfd, signalfd, epoll, pidfd, inotify or fanotify descriptor from /proc/PID/fdinfo (formats in
/// the kernel's Documentation/filesystems/proc.rst): the object, or why a restart could not
/// make it again exactly.
enum EventDescriptorCapture {
    enum Outcome {
        case object(ProcessImage.EventObject)
        case refused(String)
    }

    /// nil when `target` (the fd's /proc link) is none of the seven.
    static func capture(_ pid: Int32, _ fd: Int32, target: String) -> Outcome? {
        let kinds = [
            "anon_inode:[eventfd]", "anon_inode:[timerfd]", "anon_inode:[signalfd]", "anon_inode:[eventpoll]",
            "anon_inode:[pidfd]", "anon_inode:inotify", "anon_inode:[fanotify]",
        ]
        guard kinds.contains(target) else { return nil }
        guard let lines = try? ProcFS.descriptorInfoLines(pid, fd) else { return .refused("its fdinfo cannot be read") }
        let info = ProcFS.keyValues(lines.joined(separator: "\n"))
        switch target {
        case "anon_inode:[eventfd]":
            guard let count = info["eventfd-count"].flatMap({ UInt64($0, radix: 16) }) else {
                return .refused("its eventfd counter is not in fdinfo")
            }
            return .object(.eventfd(count: count, semaphore: info["eventfd-semaphore"] == "1"))
        case "anon_inode:[timerfd]":
            return timer(info)
        case "anon_inode:[signalfd]":
            guard let mask = info["sigmask"].flatMap({ UInt64($0, radix: 16) }) else {
                return .refused("its signal mask is not in fdinfo")
            }
            return .object(.signalfd(mask: mask))
        case "anon_inode:[pidfd]":
            return processDescriptor(info, pid: pid, fd: fd)
        case "anon_inode:inotify":
            return InotifyCapture.capture(pid, fd, lines)
        case "anon_inode:[fanotify]":
            return FanotifyCapture.capture(pid, fd, lines)
        default:
            return epoll(pid, fd, lines)
        }
    }

    /// "clockid: 1", "ticks: 0", "settime flags: 00", "it_value: (0, 499)", "it_interval: (1, 0)".
    private static func timer(_ info: [String: String]) -> Outcome {
        guard let clock = info["clockid"].flatMap({ Int32($0) }), let ticks = info["ticks"].flatMap({ UInt64($0) }),
            let value = info["it_value"].flatMap(nanoseconds), let interval = info["it_interval"].flatMap(nanoseconds)
        else { return .refused("its timer is not in fdinfo as this chpox reads it") }
        return .object(.timerfd(clock: clock, remainingNanoseconds: value, intervalNanoseconds: interval, ticks: ticks))
    }

    /// "flags: 02000002", "Pid: 4242" (-1 once the process has exited and been reaped), "NSpid:
    /// 4242 1" (its pid in each nested pid namespace). Whether the process is one of the
    /// checkpoint's is `TreeCapture`'s to check.
    private static func processDescriptor(_ info: [String: String], pid holder: Int32, fd: Int32) -> Outcome {
        guard let pid = info["Pid"].flatMap({ Int32($0) }), let flags = info["flags"].flatMap({ Int32($0, radix: 8) })
        else { return .refused("its process is not in fdinfo as this chpox reads it") }
        // PIDFD_THREAD (Linux 6.9) is O_EXCL.
        if flags & O_EXCL != 0 { return .refused("a pidfd of a thread (PIDFD_THREAD): not restored") }
        if pid <= 0 {
            // Every pidfd of one process shares its pidfs inode (Linux 6.9+): what tells two
            // dead ones apart. Without pidfs (an anonymous inode shared by all) they cannot be.
            guard let inode = pidfsInode(holder, fd) else {
                return .refused(
                    "a pidfd of a process that has exited and been reaped (fdinfo Pid: \(pid)), on a kernel without "
                        + "pidfs: which dead process it was cannot be told, and a restart cannot make it again")
            }
            return .object(.deadPidfd(process: inode))
        }
        return .object(.pidfd(pid: pid))
    }

    /// The pidfs inode of a pidfd `pid` holds at `fd`; nil where pidfds are not on pidfs (before
    /// Linux 6.9 every pidfd shares one anonymous inode, which tells no two processes apart).
    private static func pidfsInode(_ pid: Int32, _ fd: Int32) -> UInt64? {
        guard let own = try? ProcessDescriptor.open(getpid()) else { return nil }
        defer { own.close() }
        guard let type = try? own.descriptor.fileSystemType(), type == 0x5049_4446,  // PID_FS_MAGIC
            let mine = try? own.descriptor.status(),
            let status = try? FileDescriptor.currentDirectory.status(
                of: "/proc/\(pid)/fd/\(fd)", followingSymlinks: true),
            status.device == mine.device
        else { return nil }
        return status.inode
    }

    /// Why an inotify or fanotify descriptor (`kind`) cannot come back as it is: events queued
    /// and not read yet (FIONREAD on a pidfd_getfd copy), which a restart cannot queue again;
    /// nil when none are.
    static func queuedEventsRefusal(_ pid: Int32, _ fd: Int32, kind: String) -> String? {
        let queued: Int
        do {
            let process = try ProcessDescriptor.open(pid)
            defer { process.close() }
            let copy = try process.copyDescriptor(fd)
            defer { copy.close() }
            queued = try copy.bytesQueued()
        } catch {
            return "its event queue cannot be measured (\(error))"
        }
        guard queued > 0 else { return nil }
        return "\(queued) bytes of \(kind) events are queued and not read yet: a restart cannot queue them again "
            + "(checkpoint it once the program has read them)"
    }

    /// "(seconds, nanoseconds)".
    private static func nanoseconds(_ text: String) -> UInt64? {
        let parts = text.stripping("() ").split(separator: ",").map { $0.stripping(" ") }
        guard parts.count == 2, let seconds = UInt64(parts[0]), let nanos = UInt64(parts[1]) else { return nil }
        return seconds * 1_000_000_000 + nanos
    }

    /// "tfd:        5 events:       19 data:                5  pos:0 ino:1a sdev:e": each target
    /// is found among the process's descriptors with kcmp: at its own number, or, when that
    /// number was closed or reused, at another that holds the same open file.
    private static func epoll(_ pid: Int32, _ epoll: Int32, _ lines: [Substring]) -> Outcome {
        let descriptors = (try? ProcFS.descriptors(pid)) ?? []
        var targets: [ProcessImage.EpollTarget] = []
        // Several files may be registered under one number (each closed in turn): kcmp tells
        // them apart by their order among that number's entries, the order fdinfo lists them.
        var seen: [Int32: Int] = [:]
        for line in lines where line.hasPrefix("tfd:") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            func field(_ name: String, radix: Int = 10) -> UInt64? {
                guard let at = words.firstIndex(where: { $0.hasPrefix(name + ":") }) else { return nil }
                let inline = words[at].dropFirst(name.count + 1)
                let text = inline.isEmpty && at + 1 < words.count ? words[at + 1] : inline
                return UInt64(text, radix: radix)
            }
            guard let number = field("tfd"), let events = field("events", radix: 16),
                let data = field("data", radix: 16)
            else { return .refused("its interest list is not in fdinfo as this chpox reads it: \(line)") }
            let fd = Int32(truncatingIfNeeded: number)
            let nth = seen[fd, default: 0]
            seen[fd] = nth + 1
            func holds(_ candidate: Int32) -> Bool? {
                EpollTargets.isTarget(pid: pid, fd: candidate, epoll: epoll, target: fd, nth: nth)
            }
            var target = ProcessImage.EpollTarget(fd: fd, events: UInt32(truncatingIfNeeded: events), data: data)
            switch holds(fd) {
            case .some(true): break
            case .none where !descriptors.contains(fd), .some(false):
                guard let via = descriptors.first(where: { $0 != fd && holds($0) == true }) else {
                    return .refused(
                        "an epoll watching a file registered as descriptor \(fd) that no descriptor of the "
                            + "process holds any more: a restart cannot reach it")
                }
                target.via = via
            case .none:
                return .refused("kcmp cannot tell which file its target \(fd) is")
            }
            targets.append(target)
        }
        return .object(.epoll(targets: targets))
    }
}

extension StringProtocol {
    /// The text without the characters of `set` at either end.
    fileprivate func stripping(_ set: String) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return String(text)
    }
}
