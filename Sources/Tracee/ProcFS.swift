#if canImport(Glibc)
import Glibc
#endif
import Syscall

/// Readers of /proc/<pid>: small text files read whole.
public enum ProcFS {
    static func read(_ pid: Int32, _ name: String) throws(TraceeError) -> String {
        String(decoding: try bytes(pid, name), as: UTF8.self)
    }

    /// /proc/<pid>/<name> as bytes (auxv, cmdline, environ are binary).
    public static func bytes(_ pid: Int32, _ name: String) throws(TraceeError) -> [UInt8] {
        let path = "/proc/\(pid)/\(name)"
        do {
            let fd = try FileDescriptor.open(path, [.readOnly])
            defer { fd.close() }
            return try fd.readToEnd(limit: Int.max)
        } catch {
            throw .from(error, pid: pid, "read \(path) of")
        }
    }

    /// /proc/<pid>/status (or a thread's, `task/<tid>/status`), parsed once.
    public static func status(_ pid: Int32, thread: Int32? = nil) throws(TraceeError) -> Status {
        Status(fields: keyValues(try read(pid, thread.map { "task/\($0)/status" } ?? "status")))
    }

    /// /proc/<pid>/stat, parsed once.
    public static func stat(_ pid: Int32) throws(TraceeError) -> Stat {
        try Stat(parsing: try read(pid, "stat"), file: "/proc/\(pid)/stat")
    }

    /// The "key: value" lines of /proc/<pid>/fdinfo/<fd>.
    public static func descriptorInfo(_ pid: Int32, _ fd: Int32) throws(TraceeError) -> [String: String] {
        keyValues(try read(pid, "fdinfo/\(fd)"))
    }

    /// /proc/PID/fdinfo/FD line by line: for what repeats a key (an epoll's `tfd:` lines).
    public static func descriptorInfoLines(_ pid: Int32, _ fd: Int32) throws(TraceeError) -> [Substring] {
        try read(pid, "fdinfo/\(fd)").split(separator: "\n")
    }

    /// What smaps says of one mapping: its VmFlags (two-letter codes: gd grows down, dd don't
    /// dump, hg/nh huge page advice, mg mergeable...) and its resident pages (Rss).
    public struct MappingDetails: Sendable, Equatable {
        public var flags: [String] = []
        public var residentPages: UInt64 = 0
        public init() {}
    }

    /// Every mapping's smaps details, by start address.
    public static func mappingDetails(_ pid: Int32) throws(TraceeError) -> [UInt64: MappingDetails] {
        var result: [UInt64: MappingDetails] = [:]
        var current: UInt64?
        for line in try read(pid, "smaps").split(separator: "\n") {
            if line.hasPrefix("VmFlags:") {
                if let current {
                    result[current, default: .init()].flags = line.dropFirst(8).split(separator: " ").map(String.init)
                }
            } else if line.hasPrefix("Rss:") {
                let kib = line.dropFirst(4).split(separator: " ").first.flatMap { UInt64($0) } ?? 0
                if let current { result[current, default: .init()].residentPages = kib / 4 }
            } else if let dash = line.firstIndex(of: "-"), let first = line.first, first.isHexDigit,
                let start = UInt64(line[..<dash], radix: 16), line.contains(" ")
            {
                current = start
            }
        }
        return result
    }

    /// Where /proc/<pid>/<name> points (exe, cwd, fd/N...), nil if it cannot be read.
    public static func link(_ pid: Int32, _ name: String) -> String? {
        try? FileDescriptor.currentDirectory.linkTarget(of: "/proc/\(pid)/\(name)")
    }

    /// The soft and hard limit of `resource` (RLIMIT_*) of the process (prlimit(2)).
    /// Every resource limit of the process, by RLIMIT_* number, from /proc/PID/limits: read
    /// with the access /proc gives, where prlimit(2) on another user's process would need
    /// CAP_SYS_RESOURCE (which root does not always hold).
    public static func limits(_ pid: Int32) throws(TraceeError) -> [(soft: UInt64, hard: UInt64)] {
        let text = String(decoding: try bytes(pid, "limits"), as: UTF8.self)
        // The kernel prints "%-25s %-20s %-20s %-10s": the name, then soft and hard limits in
        // fixed columns, "unlimited" for RLIM_INFINITY; one line per resource, in number order.
        var result: [(soft: UInt64, hard: UInt64)] = []
        for line in text.split(separator: "\n").dropFirst() {
            let characters = Array(line)
            guard characters.count >= 67 else {
                throw .malformed(file: "/proc/\(pid)/limits", reason: "short line '\(line)'")
            }
            func value(_ range: Range<Int>) throws(TraceeError) -> UInt64 {
                let word = characters[range].split(separator: " ").first.map { String($0) } ?? ""
                if word == "unlimited" { return UInt64.max }
                guard let number = UInt64(word) else {
                    throw .malformed(file: "/proc/\(pid)/limits", reason: "unreadable limit '\(word)' in '\(line)'")
                }
                return number
            }
            result.append((try value(26..<47), try value(47..<min(68, characters.count))))
        }
        return result
    }

    public static func keyValues(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            result[String(line[..<colon])] = String(
                line[line.index(after: colon)...].drop(while: { $0 == " " || $0 == "\t" }))
        }
        return result
    }

    /// Thread ids of the process.
    /// A thread's name (/proc/PID/task/TID/comm, PR_SET_NAME's; at most 15 bytes).
    public static func threadName(_ pid: Int32, thread: Int32) throws(TraceeError) -> String {
        var bytes = try bytes(pid, "task/\(thread)/comm")
        if bytes.last == 10 { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The processes whose parent is `pid` (every thread's /proc/PID/task/TID/children), sorted.
    public static func children(_ pid: Int32) throws(TraceeError) -> [Int32] {
        var result: [Int32] = []
        for tid in try threads(pid) {
            guard let bytes = try? bytes(pid, "task/\(tid)/children") else { continue }
            result += String(decoding: bytes, as: UTF8.self).split(separator: " ").compactMap { Int32($0) }
        }
        return result.sorted()
    }

    public static func threads(_ pid: Int32) throws(TraceeError) -> [Int32] {
        try numericEntries(pid, "task", "list threads of")
    }

    /// The names of /proc/<pid>/<directory> that are numbers (thread ids, descriptors), sorted.
    static func numericEntries(_ pid: Int32, _ directory: String, _ operation: String) throws(TraceeError) -> [Int32] {
        do {
            let fd = try FileDescriptor.open("/proc/\(pid)/\(directory)", [.readOnly, .directory])
            defer { fd.close() }
            return try fd.entries().compactMap { Int32($0) }.sorted()
        } catch {
            throw .from(error, pid: pid, operation)
        }
    }

    /// This boot's id (/proc/sys/kernel/random/boot_id, a UUID the kernel draws at each boot).
    public static func bootID() throws(TraceeError) -> String {
        let path = "/proc/sys/kernel/random/boot_id"
        do {
            let fd = try FileDescriptor.open(path, [.readOnly])
            defer { fd.close() }
            let text = String(decoding: try fd.readAll(limit: 64), as: UTF8.self)
            return String(text.prefix { $0 != "\n" })
        } catch {
            throw .system(error, pid: 0, operation: "read \(path)")
        }
    }

    /// The state letter of /proc/<pid>/stat (R, S, D, Z, T, t, X...).
    public static func state(_ pid: Int32) throws(TraceeError) -> Character {
        try stat(pid).state
    }

    /// Open descriptor numbers of the process.
    public static func descriptors(_ pid: Int32) throws(TraceeError) -> [Int32] {
        try numericEntries(pid, "fd", "list descriptors of")
    }

    /// Where descriptor `fd` points (readlink of /proc/<pid>/fd/<fd>).
    public static func descriptorTarget(_ pid: Int32, _ fd: Int32) -> String? {
        link(pid, "fd/\(fd)")
    }
}

extension ProcFS {
    /// The "Key:\tvalue" lines of /proc/<pid>/status (proc(5)): the fields chpox reads by
    /// name, and any other by its key.
    public struct Status: Sendable, Equatable {
        let fields: [String: String]

        /// The value of line `key`, as the kernel wrote it.
        public subscript(key: String) -> String? { fields[key] }

        /// The file mode creation mask (Umask, octal; since Linux 4.7).
        public var umask: UInt32? { fields["Umask"].flatMap { UInt32($0, radix: 8) } }
        /// Real, effective, saved and filesystem user ids (Uid).
        public var userIDs: [UInt32] { numbers("Uid") }
        /// Real, effective, saved and filesystem group ids (Gid).
        public var groupIDs: [UInt32] { numbers("Gid") }
        /// Supplementary groups (Groups).
        public var groups: [UInt32] { numbers("Groups") }
        /// The parent's pid (PPid).
        public var parent: Int32? { fields["PPid"].flatMap { Int32($0) } }
        /// Signals with a handler (SigCgt): bit n-1 is signal n.
        public var caughtSignals: UInt64 { mask("SigCgt") }
        /// Ignored signals (SigIgn): bit n-1 is signal n.
        public var ignoredSignals: UInt64 { mask("SigIgn") }
        /// The process tracing this one (TracerPid; 0: none).
        public var tracer: Int32 { fields["TracerPid"].flatMap { Int32($0) } ?? 0 }
        /// The thread's capability sets (CapInh, CapPrm, CapEff, CapBnd, CapAmb); CapAmb is
        /// absent before Linux 4.3 and reads as none.
        public var capabilities: CapabilitySets {
            CapabilitySets(
                inheritable: mask("CapInh"), permitted: mask("CapPrm"), effective: mask("CapEff"),
                bounding: mask("CapBnd"), ambient: mask("CapAmb"))
        }

        private func numbers(_ key: String) -> [UInt32] {
            (fields[key] ?? "").split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) }
        }

        private func mask(_ key: String) -> UInt64 { UInt64(fields[key] ?? "", radix: 16) ?? 0 }
    }

    /// A thread's five capability sets, bit n for capability n (CAP_CHOWN 0 ... CAP_CHECKPOINT_RESTORE 40).
    public struct CapabilitySets: Sendable, Equatable {
        public var inheritable: UInt64, permitted: UInt64, effective: UInt64, bounding: UInt64, ambient: UInt64

        public init(inheritable: UInt64, permitted: UInt64, effective: UInt64, bounding: UInt64, ambient: UInt64) {
            (self.inheritable, self.permitted, self.effective) = (inheritable, permitted, effective)
            (self.bounding, self.ambient) = (bounding, ambient)
        }
    }

    /// /proc/<pid>/stat (proc(5)): one line of space-separated fields, the fields chpox reads
    /// by name. A field the kernel does not write (the address-space ones before Linux 3.5, or
    /// ones it zeroes for a reader without ptrace access) reads as 0.
    public struct Stat: Sendable, Equatable {
        /// Field 2, the command name without its parentheses.
        public var command: String
        /// Field 3: R, S, D, Z, T, t, X...
        public var state: Character
        /// Fields 4 to 6: the parent's pid, the process group and the session.
        public var parent: Int32, processGroup: Int32, session: Int32
        /// Field 7: the controlling terminal's device number (tty_nr: minor in bits 31-20 and
        /// 7-0, major in bits 15-8); 0 when it has none.
        public var terminal: UInt32
        /// Field 52: a zombie's exit status as wait(2) reports it (0 while it runs).
        public var exitCode: Int32
        /// Field 9: the kernel's PF_* flags of the task.
        public var flags: UInt64
        /// Field 22: when the process started, in clock ticks after boot. With the boot id and
        /// the pid, it tells this process from any other that had its pid.
        public var startTicks: UInt64
        /// PF_KTHREAD: a kernel thread, with no user memory (kthreadd, kworkers).
        public var isKernelThread: Bool { flags & 0x0020_0000 != 0 }
        /// Fields 26 and 27: where the program text starts and ends.
        public var startCode: UInt64, endCode: UInt64
        /// Field 28: the bottom of the main thread's stack.
        public var startStack: UInt64
        /// Fields 45 and 46: where initialized and uninitialized data start and end.
        public var startData: UInt64, endData: UInt64
        /// Field 47: where the heap starts (the first brk).
        public var startBrk: UInt64
        /// Fields 48 to 51: where the command line and the environment lie.
        public var argStart: UInt64, argEnd: UInt64, envStart: UInt64, envEnd: UInt64

        /// Parses the text of a stat file.
        public init(parsing text: String, file: String) throws(TraceeError) {
            // The command name is in parentheses and may hold spaces or parentheses itself:
            // the fields after it start after the last ')'.
            guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")"), open < close else {
                throw .malformed(file: file, reason: "no command field")
            }
            command = String(text[text.index(after: open)..<close])
            let rest = text[text.index(after: close)...].split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard let state = rest.first?.first else { throw .malformed(file: file, reason: "no state field") }
            self.state = state
            // rest[0] is field 3.
            func field(_ number: Int) -> UInt64 {
                let k = number - 3
                return k < rest.count ? UInt64(rest[k]) ?? 0 : 0
            }
            flags = field(9)
            parent = Int32(truncatingIfNeeded: field(4))
            processGroup = Int32(truncatingIfNeeded: field(5))
            session = Int32(truncatingIfNeeded: field(6))
            terminal = UInt32(truncatingIfNeeded: rest.count > 4 ? Int64(rest[4]) ?? 0 : 0)
            exitCode = Int32(truncatingIfNeeded: field(52))
            startTicks = field(22)
            startCode = field(26); endCode = field(27); startStack = field(28)
            startData = field(45); endData = field(46); startBrk = field(47)
            argStart = field(48); argEnd = field(49); envStart = field(50); envEnd = field(51)
        }
    }
}
