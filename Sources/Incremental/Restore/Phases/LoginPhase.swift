#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// Before anything else, while the stub still has ld-chpox's capabilities: its audit login uid
/// (/proc/PID/loginuid), which only the process itself may write, and which, once set, only
/// CAP_AUDIT_CONTROL changes. A stub that cannot take it stops the restart: a process never
/// runs under another login uid than it had. (/proc/self is the kernel's, no user's path.)
public struct LoginPhase: RestartPhase {
    /// nil for an image from before it was kept: the stub keeps ld-chpox's.
    public var loginUID: UInt32?

    public var name: String { "audit login uid" }
    public var steps: [String] { loginUID.map { ["loginuid \($0), where ld-chpox's differs"] } ?? [] }

    public init(image: ProcessImage) { loginUID = image.controls?.loginUID }

    public func run(in session: RestartSession) throws {
        guard let loginUID else { return }
        let pid = session.pid
        let current = try ProcessControlsCapture.number(pid, "loginuid")
        guard current != Int64(loginUID) else { return }
        let text = Array("\(loginUID)".utf8)
        let failure = try session.withScratch(size: 64) { (calls) throws(TraceeError) -> Int in
            let fd = try calls.result(
                of: .openat, AT_FDCWD, try calls.string("/proc/self/loginuid"), O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { return fd }
            let written = try calls.result(of: .write, fd, try calls.bytes(text), text.count)
            try calls.close(Int32(fd))
            return min(written, 0)
        }
        guard failure < 0 else { return }
        throw TraceeError.unsupported(
            pid: pid,
            reason: "cannot set its loginuid to \(loginUID) (ld-chpox's is \(current)): "
                + "\(Errno(rawValue: Int32(-failure))); changing a login uid once set needs CAP_AUDIT_CONTROL: "
                + "restart it as root, or from a session with the same login uid")
    }
}
