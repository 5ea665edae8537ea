#if canImport(Glibc)
import Glibc
#endif
import Syscall

/// Readers of /proc/<pid>: small text files read whole.
public enum ProcFS {
    static func read(_ pid: Int32, _ name: String) throws(TraceeError) -> String {
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
            return String(decoding: result, as: UTF8.self)
        } catch {
            throw .from(error, pid: pid, "read \(path) of")
        }
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
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/\(pid)/fd/\(fd)", &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
