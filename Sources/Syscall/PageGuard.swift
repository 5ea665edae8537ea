#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// The guardian process of a lazy restart (`chpox-restore-stub --guard`, its guard.c): it
/// holds a reference to every userfaultfd it is handed, so that no fault of a restarted process
/// is ever resolved with a zero page because the page server ended, and kills the processes it
/// watches (and their descendants) when its control socket closes before `release`. Dropping
/// the server's end without `release` (the server died, or gave up) is what makes it kill.
public final class PageGuard {
    public let process: ChildProcess
    private let control: FileDescriptor
    private var released = false

    /// Starts the guardian, `helper --guard` (chpox-restore-stub), a child of this process in
    /// a session of its own, its control socket as its stdin. Spawned, not forked: a copy of a
    /// large ld-chpox would cost its page tables and every page it then writes.
    public static func start(helper: String) throws(Errno) -> PageGuard {
        let (ours, theirs) = try FileDescriptor.socketPair(type: Int32(SOCK_SEQPACKET.rawValue))
        defer { theirs.close() }
        do throws(Errno) {
            let child = try ChildProcess.spawn(helper, ["--guard"], stdin: theirs, newSession: true)
            return PageGuard(process: child, control: ours)
        } catch {
            ours.close()
            throw error
        }
    }

    private init(process: ChildProcess, control: FileDescriptor) {
        self.process = process
        self.control = control
    }

    /// Gives it a reference to `userfaultfd`, held until it exits.
    public func hold(_ userfaultfd: FileDescriptor) throws(Errno) {
        let kind: [UInt8] = [UInt8(ascii: "u")]
        try kind.withRawBytes { (bytes) throws(Errno) in try control.send(bytes, descriptors: [userfaultfd]) }
    }

    /// Has it kill process `pid` (through `pidfd`, its pidfd) and its descendants if the
    /// server ends before `release`.
    public func watch(_ pid: Int32, pidfd: FileDescriptor) throws(Errno) {
        var message: [UInt8] = [UInt8(ascii: "p"), 0, 0, 0, 0]
        withUnsafeBytes(of: pid) { for k in 0..<4 { message[1 + k] = $0[k] } }
        try message.withRawBytes { (bytes) throws(Errno) in try control.send(bytes, descriptors: [pidfd]) }
    }

    /// Tells it every page is in (it exits, killing nothing) and reaps it.
    public func release() {
        guard !released else { return }
        released = true
        let done: [UInt8] = [UInt8(ascii: "d")]
        _ = try? done.withRawBytes { (bytes) throws(Errno) in try control.send(bytes, descriptors: []) }
        control.close()
        _ = try? process.wait()
    }

    /// Closes the control socket without `release`: it kills what it watches, then exits; reaped.
    public func abandon() {
        guard !released else { return }
        released = true
        control.close()
        _ = try? process.wait()
    }
}
