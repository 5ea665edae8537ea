#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall
import Tracee

/// A process that ran chrooted is chrooted again: after every phase that opens a path (its
/// paths were recorded as cpx saw them, from the real root) and before its ids change
/// (chroot needs CAP_SYS_CHROOT). The directory is opened with the image owner's filesystem ids
/// (`FileAccessPhase`), never through a symlink in its last component, and the stub chroots
/// into what it opened (/proc/self/fd/N). `Preflight` allows it only to root, and only for an
/// image from a store only root can write: a chroot into a directory its user controls could
/// lead a set-user-id program there to trust the user's files.
public struct RootDirectoryPhase: RestartPhase {
    /// nil: the process's root was "/" (or the image is from before it was kept).
    public var directory: String?

    public var name: String { "root directory" }
    public var steps: [String] { directory.map { ["chroot \($0)"] } ?? [] }

    public init(image: ProcessImage) { directory = image.rootDirectory }

    public func run(in session: RestartSession) throws {
        guard let directory else { return }
        let calls = session.calls
        let fd = try calls.openRecorded(
            directory, flags: CHPOX_O_PATH | O_DIRECTORY | O_CLOEXEC, to: "open its root directory \(directory)")
        defer { _ = try? calls.result(of: .close, fd) }
        try calls.withFrame { () throws(TraceeError) in
            try calls.call(.chroot, try calls.string("/proc/self/fd/\(fd)"), to: "chroot into \(directory)")
        }
    }
}
