import Syscall

/// One line of /proc/<pid>/maps: a virtual memory area.
public struct MemoryRegion: Hashable, Sendable, CustomStringConvertible {
    public var start: UInt64
    public var end: UInt64
    public var readable: Bool
    public var writable: Bool
    public var executable: Bool
    public var shared: Bool
    public var offset: UInt64
    public var device: String
    public var inode: UInt64
    /// The backing file, or a pseudo-name ([heap], [stack], [vdso], [vvar], [vsyscall],
    /// [anon:...]), or "" for anonymous memory.
    public var path: String

    public var size: UInt64 { end - start }
    public var pageCount: UInt64 { Page.count(of: size) }
    public var isAnonymous: Bool { inode == 0 }

    /// Kernel-provided areas a checkpoint does not copy: they are recreated at restart.
    public var isSpecial: Bool {
        path == "[vdso]" || path == "[vvar]" || path == "[vsyscall]" || path == "[vvar_vclock]"
            || path.hasPrefix("[uprobes]")
    }

    public var protection: String {
        (readable ? "r" : "-") + (writable ? "w" : "-") + (executable ? "x" : "-") + (shared ? "s" : "p")
    }

    public var description: String {
        "\(String(start, radix: 16))-\(String(end, radix: 16)) \(protection) \(path)"
    }

    /// Parses /proc/<pid>/maps.
    public static func parse(_ text: String, file: String) throws(TraceeError) -> [MemoryRegion] {
        var regions: [MemoryRegion] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5 else { throw .malformed(file: file, reason: "short line '\(line)'") }
            let range = fields[0].split(separator: "-")
            let perms = Array(fields[1])
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16),
                perms.count == 4, let offset = UInt64(fields[2], radix: 16), let inode = UInt64(fields[4])
            else { throw .malformed(file: file, reason: "unreadable line '\(line)'") }
            let path = fields.count > 5 ? String(fields[5].drop(while: { $0 == " " })) : ""
            regions.append(
                MemoryRegion(
                    start: start, end: end, readable: perms[0] == "r", writable: perms[1] == "w",
                    executable: perms[2] == "x", shared: perms[3] == "s", offset: offset,
                    device: String(fields[3]), inode: inode, path: path))
        }
        return regions
    }

    public static func of(_ pid: Int32) throws(TraceeError) -> [MemoryRegion] {
        try parse(try ProcFS.read(pid, "maps"), file: "/proc/\(pid)/maps")
    }
}
