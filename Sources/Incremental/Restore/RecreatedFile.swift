#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// A deleted file's saved contents in a new file that never has a name (O_TMPFILE in /tmp,
/// created by the stub): nothing at a guessable path is created, followed or truncated.
/// ld-chpox fills it through /proc/PID/fd/N.
enum RecreatedFile {
    /// The stub's descriptor (read-write, close-on-exec) of the new file holding `contents`.
    static func create(_ contents: Data, for purpose: String, _ calls: RemoteCalls) throws -> Int32 {
        let unnamed = try empty(for: purpose, calls)
        do throws(Errno) {
            let file = try FileDescriptor.open("/proc/\(calls.pid)/fd/\(unnamed)", [.writeOnly])
            defer { file.close() }
            try [UInt8](contents).withRawBytes { (raw) throws(Errno) in try file.writeAll(raw, at: 0) }
        } catch {
            _ = try? calls.result(of: .close, unnamed)
            throw TraceeError.from(error, pid: calls.pid, "write the deleted file of \(purpose) of")
        }
        return unnamed
    }

    /// The stub's descriptor (close-on-exec; read-write, or `access`: O_WRONLY or O_RDWR) of a
    /// new, empty file without a name.
    static func empty(for purpose: String, access: Int32 = O_RDWR, _ calls: RemoteCalls) throws(TraceeError) -> Int32 {
        Int32(
            try calls.withFrame { () throws(TraceeError) in
                try calls.call(
                    .openat, AT_FDCWD, try calls.string("/tmp"), CHPOX_O_TMPFILE | access | O_CLOEXEC, 0o600,
                    to: "create a file without a name for \(purpose)")
            })
    }

    /// Where each of `contents`' bytes go: it holds the bytes of `ranges` ([start, end) each,
    /// the rest of the file holes) one after another. nil when it holds fewer bytes than the
    /// ranges cover, or a range is not one.
    static func pieces(_ ranges: [[Int64]], of contents: Data) -> [(at: Int64, bytes: Data)]? {
        var pieces: [(at: Int64, bytes: Data)] = []
        var from = contents.startIndex
        for range in ranges {
            guard range.count == 2, range[0] >= 0, range[1] >= range[0], range[1] - range[0] <= contents.endIndex - from
            else { return nil }
            let count = Int(range[1] - range[0])
            pieces.append((range[0], contents[from..<(from + count)]))
            from += count
        }
        return pieces
    }
}
