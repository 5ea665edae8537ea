#if canImport(Glibc)
import Glibc
#endif
import CLinux
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
            var result: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = try chunk.withMutableRawBytes { (raw) throws(Errno) in try fd.read(into: raw) }
                if n == 0 { break }
                result.append(contentsOf: chunk[0..<n])
            }
            return result
        } catch {
            throw .from(error, pid: pid, "read \(path) of")
        }
    }

    /// The "Key:\tvalue" lines of /proc/<pid>/status (or of a thread's, `task/<tid>/status`).
    public static func status(_ pid: Int32, thread: Int32? = nil) throws(TraceeError) -> [String: String] {
        let text = try read(pid, thread.map { "task/\($0)/status" } ?? "status")
        return keyValues(text)
    }

    /// The fields of /proc/<pid>/stat after the command name, numbered as proc(5) numbers
    /// them (field 3 is the state), so `stat[28]` is startstack.
    public static func stat(_ pid: Int32) throws(TraceeError) -> [Int: String] {
        let stat = try read(pid, "stat")
        guard let close = stat.lastIndex(of: ")") else { throw .malformed(file: "/proc/\(pid)/stat", reason: "no command field") }
        var fields: [Int: String] = [:]
        for (k, field) in stat[stat.index(after: close)...].split(separator: " ").enumerated() { fields[k + 3] = String(field) }
        return fields
    }

    /// The "key: value" lines of /proc/<pid>/fdinfo/<fd>.
    public static func descriptorInfo(_ pid: Int32, _ fd: Int32) throws(TraceeError) -> [String: String] {
        keyValues(try read(pid, "fdinfo/\(fd)"))
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
                if let current { result[current, default: .init()].flags = line.dropFirst(8).split(separator: " ").map(String.init) }
            } else if line.hasPrefix("Rss:") {
                let kib = line.dropFirst(4).split(separator: " ").first.flatMap { UInt64($0) } ?? 0
                if let current { result[current, default: .init()].residentPages = kib / 4 }
            } else if let dash = line.firstIndex(of: "-"), let first = line.first, first.isHexDigit,
                      let start = UInt64(line[..<dash], radix: 16), line.contains(" ") {
                current = start
            }
        }
        return result
    }

    /// Where /proc/<pid>/<name> points (exe, cwd, fd/N...), nil if it cannot be read.
    public static func link(_ pid: Int32, _ name: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/\(pid)/\(name)", &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The soft and hard limit of `resource` (RLIMIT_*) of the process (prlimit(2)).
    public static func limit(_ pid: Int32, _ resource: Int32) throws(TraceeError) -> (soft: UInt64, hard: UInt64) {
        var limits: [UInt64] = [0, 0]
        let result = limits.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: CUnsignedLongLong.self) { chpox_prlimit(pid, resource, $0.baseAddress) }
        }
        guard result == 0 else { throw .from(Errno.current, pid: pid, "read resource limit \(resource) of") }
        return (limits[0], limits[1])
    }

    static func keyValues(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            result[String(line[..<colon])] = String(line[line.index(after: colon)...].drop(while: { $0 == " " || $0 == "\t" }))
        }
        return result
    }

    /// Thread ids of the process.
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

    /// The state letter of /proc/<pid>/stat (R, S, D, Z, T, t, X...).
    public static func state(_ pid: Int32) throws(TraceeError) -> Character {
        let stat = try read(pid, "stat")
        // The command name is in parentheses and may hold spaces or parentheses itself.
        guard let close = stat.lastIndex(of: ")") else { throw .malformed(file: "/proc/\(pid)/stat", reason: "no command field") }
        let rest = stat[stat.index(after: close)...].drop(while: { $0 == " " })
        guard let state = rest.first else { throw .malformed(file: "/proc/\(pid)/stat", reason: "no state field") }
        return state
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
