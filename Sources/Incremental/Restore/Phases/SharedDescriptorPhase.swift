#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// The descriptors a process shares with an earlier process of its tree (inherited across
/// fork: one open file, one offset): taken from that process (pidfd_getfd) once every process
/// has made its own, and put at their numbers. First, the pipes, sockets and ptys this process made for
/// others are let go: every process has opened its ends of them by now (`DescriptorPhase`).
public struct SharedDescriptorPhase: RestartPhase {
    public struct Entry: Sendable, Equatable {
        public var fd: Int32
        public var closeOnExec: Bool
        public var from: ProcessImage.Descriptor.Inherited
    }

    public var entries: [Entry]

    public var name: String { "descriptors shared with other processes" }
    public var steps: [String] {
        entries.map {
            "fd \($0.fd): descriptor \($0.from.fd) of process \($0.from.pid), the same open file"
                + ($0.closeOnExec ? " (close-on-exec)" : "")
        }
    }

    public init(image: ProcessImage) {
        entries = image.descriptors.compactMap { descriptor in
            descriptor.inherited.map {
                Entry(fd: descriptor.fd, closeOnExec: descriptor.flags & O_CLOEXEC != 0, from: $0)
            }
        }
    }

    public func run(in session: RestartSession) throws {
        let calls = session.calls
        // Every process has opened its pidfds of the dead processes by now: they end, and
        // their parent (ld-chpox, or the namespace's init) reaps them.
        for (key, stand) in session.tree.deadProcesses {
            try stand.process.release(into: SystemCall.exitGroup.rawValue, [0])
            if !session.tree.namespace { _ = try? ChildProcess(child: stand.process.pid).wait() }
            var gone = false
            for _ in 0..<2000 {
                if (try? ProcFS.state(stand.process.pid)) == nil { gone = true; break }
                CurrentProcess.sleep(microseconds: 1000)
            }
            guard gone else {
                throw TraceeError.unsupported(
                    pid: stand.process.pid, reason: "the process made for pidfds of a dead process was not reaped")
            }
            session.tree.deadProcesses[key] = nil
        }
        for (inode, holder) in session.tree.pipeHolders where holder.pid == session.pid {
            _ = try calls.result(of: .close, holder.fd)
            session.tree.pipeHolders[inode] = nil
        }
        for (inode, holder) in session.tree.socketHolders where holder.pid == session.pid {
            _ = try calls.result(of: .close, holder.fd)
            session.tree.socketHolders[inode] = nil
        }
        // The master last: closing it hangs up the slaves of a pair made only for that.
        for (index, holder) in session.tree.ptyHolders where holder.pid == session.pid {
            _ = try calls.result(of: .close, holder.slave)
            _ = try calls.result(of: .close, holder.master)
            session.tree.ptyHolders[index] = nil
        }
        for entry in entries {
            let what = "take descriptor \(entry.from.fd) of process \(entry.from.pid) as descriptor \(entry.fd)"
            let source = try session.tree.inner(entry.from.pid)
            // Kept above the image's descriptors: a free number below may be an entry's.
            let opened = try calls.call(.pidfdOpen, source, 0, to: what)
            let pidfd = try calls.call(.fcntl, opened, F_DUPFD_CLOEXEC, DescriptorPhase.holderBase, to: what)
            _ = try calls.result(of: .close, opened)
            defer { _ = try? calls.result(of: .close, pidfd) }
            let copy = try calls.call(.pidfdGetfd, pidfd, entry.from.fd, 0, to: what)
            if copy != Int(entry.fd) {
                try calls.call(.dup3, copy, entry.fd, entry.closeOnExec ? O_CLOEXEC : 0, to: what)
                _ = try calls.result(of: .close, copy)
            } else if !entry.closeOnExec {
                try calls.call(.fcntl, entry.fd, F_SETFD, 0, to: what)
            }
        }
    }
}
