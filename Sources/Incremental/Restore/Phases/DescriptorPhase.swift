#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// The saved descriptor table at the same numbers, the working directory and the umask.
/// Terminals and pipes on 0-2 become ld-chpox's own stdio at the same number; other terminals
/// its stdout; other pipes a pipe whose other end is closed (reads see end of file, writes
/// EPIPE), as if the peer had exited.
public struct DescriptorPhase: RestartPhase {
    /// What one descriptor becomes.
    public enum Setup: Sendable, Equatable {
        /// The stub's copy of its stdin (0), stdout (1) or stderr (2).
        case stdio(Int32)
        /// One end of a new pipe whose other end is closed.
        case pipeWithoutPeer(readEnd: Bool)
        /// The path opened again with these open flags, then moved to `offset` when set.
        case reopen(path: String, flags: Int32, offset: Int64?)
        /// A deleted file: its saved contents in a new file, opened, then unlinked.
        case recreate(contents: Data, flags: Int32, offset: Int64)
        /// A deleted file the memory layout recreated for mappings (`deletedFiles` index),
        /// opened again with these open flags, then moved to `offset`.
        case reopenDeleted(file: Int, flags: Int32, offset: Int64)
    }

    public struct Entry: Sendable, Equatable {
        public var fd: Int32
        public var closeOnExec: Bool
        public var setup: Setup

        public init(fd: Int32, closeOnExec: Bool, setup: Setup) {
            self.fd = fd
            self.closeOnExec = closeOnExec
            self.setup = setup
        }
    }

    /// Standard descriptors the image did not have: closed.
    public var closed: [Int32]
    public var entries: [Entry]
    public var workingDirectory: String
    public var umask: UInt32
    /// How many deleted files `MemoryLayoutPhase` recreated and keeps open for this phase.
    public var deletedFileCount: Int

    public var name: String { "descriptors" }
    public var steps: [String] {
        closed.map { "close \($0)" }
            + entries.map { entry in
                let what: String
                switch entry.setup {
                case .stdio(let source): what = "ld-chpox's \(["stdin", "stdout", "stderr"][Int(source)])"
                case .pipeWithoutPeer(let readEnd):
                    what = "the \(readEnd ? "read" : "write") end of a pipe without peer"
                case .reopen(let path, _, let offset): what = path + (offset.map { " at offset \($0)" } ?? "")
                case .recreate(let contents, _, let offset):
                    what = "a deleted file recreated (\(contents.count) bytes) at offset \(offset)"
                case .reopenDeleted(let file, _, let offset):
                    what = "deleted file \(file), recreated for its mappings, at offset \(offset)"
                }
                return "fd \(entry.fd): \(what)" + (entry.closeOnExec ? " (close-on-exec)" : "")
            } + (workingDirectory.isEmpty ? [] : ["cwd \(workingDirectory)"]) + ["umask 0\(String(umask, radix: 8))"]
    }

    public init(image: ProcessImage) {
        closed = (Int32(0)..<3).filter { fd in !image.descriptors.contains { $0.fd == fd } }
        entries = image.descriptors.compactMap { descriptor in
            let setup: Setup
            let flags = descriptor.flags & ~(O_CREAT | O_TRUNC | O_EXCL | O_CLOEXEC)
            switch descriptor.kind {
            case .terminal where descriptor.fd <= 2, .pipe where descriptor.fd <= 2: setup = .stdio(descriptor.fd)
            case .terminal: setup = .stdio(1)
            case .pipe: setup = .pipeWithoutPeer(readEnd: descriptor.flags & O_ACCMODE == O_RDONLY)
            case .null: setup = .reopen(path: "/dev/null", flags: flags, offset: nil)
            case .directory: setup = .reopen(path: descriptor.target, flags: flags, offset: nil)
            case .file: setup = .reopen(path: descriptor.target, flags: flags, offset: descriptor.offset)
            case .deletedFile where descriptor.deletedFile != nil:
                setup = .reopenDeleted(file: descriptor.deletedFile ?? 0, flags: flags, offset: descriptor.offset)
            case .deletedFile:
                setup = .recreate(contents: descriptor.contents ?? Data(), flags: flags, offset: descriptor.offset)
            case .event, .unsupported: return nil  // events: EventDescriptorPhase
            }
            return Entry(fd: descriptor.fd, closeOnExec: descriptor.flags & O_CLOEXEC != 0, setup: setup)
        }
        workingDirectory = image.workingDirectory
        umask = image.umask
        deletedFileCount = image.deletedFiles?.count ?? 0
    }

    public func run(in session: RestartSession) throws {
        let calls = session.calls
        for fd in closed { _ = try calls.result(of: .close, fd) }
        // The deleted files kept for mappings first: a descriptor of the image may take the
        // number one of them is kept at. Then those numbers are closed, but where one is now
        // the image's.
        let reopensDeleted: (Entry) -> Bool = {
            if case .reopenDeleted = $0.setup { return true } else { return false }
        }
        for entry in entries where reopensDeleted(entry) { try set(entry, calls) }
        for entry in entries where !reopensDeleted(entry) { try set(entry, calls) }
        let kept = RestartSession.deletedFileCopies..<(RestartSession.deletedFileCopies + Int32(deletedFileCount))
        for fd in kept where !entries.contains(where: { $0.fd == fd }) { _ = try calls.result(of: .close, fd) }
        if !workingDirectory.isEmpty {
            _ = try calls.withFrame { () throws(TraceeError) in
                try calls.result(of: .chdir, try calls.string(workingDirectory))
            }
        }
        _ = try calls.result(of: .umask, umask)
        for fd in RestartSession.stdioCopies..<(RestartSession.stdioCopies + 3) { _ = try calls.result(of: .close, fd) }
    }

    private func set(_ entry: Entry, _ calls: RemoteCalls) throws {
        let target = entry.fd
        let cloexec = entry.closeOnExec ? O_CLOEXEC : 0
        switch entry.setup {
        case .stdio(let source):
            try calls.call(
                .dup3, RestartSession.stdioCopies + source, target, cloexec, to: "set up descriptor \(target)")
        case .pipeWithoutPeer(let readEnd):
            let pair = try calls.withFrame { () throws(TraceeError) in
                let ends = try calls.reserve(8)
                try calls.call(.pipe2, ends, O_CLOEXEC, to: "create a pipe for descriptor \(target)")
                return try calls.words(at: ends, count: 1)[0]
            }
            // The kernel may hand out `target` itself for either end.
            let read = Int32(truncatingIfNeeded: pair), write = Int32(truncatingIfNeeded: pair >> 32)
            let keep = readEnd ? read : write, other = readEnd ? write : read
            if keep != target {
                try calls.call(.dup3, keep, target, cloexec, to: "set up descriptor \(target)")
                _ = try calls.result(of: .close, keep)
            } else if cloexec == 0 {
                try calls.call(.fcntl, target, F_SETFD, 0, to: "set up descriptor \(target)")
            }
            if other != target { _ = try calls.result(of: .close, other) }
        case .reopen(let path, let flags, let offset):
            try open(path, flags: flags, as: target, cloexec: cloexec, calls)
            if let offset { _ = try calls.result(of: .lseek, target, offset, SEEK_SET) }
        case .recreate(let contents, let flags, let offset):
            try recreate(contents, flags: flags, as: target, cloexec: cloexec, calls)
            _ = try calls.result(of: .lseek, target, offset, SEEK_SET)
        case .reopenDeleted(let file, let flags, let offset):
            let kept = RestartSession.deletedFileCopies + Int32(file)
            try open("/proc/self/fd/\(kept)", flags: flags, as: target, cloexec: cloexec, recorded: false, calls)
            _ = try calls.result(of: .lseek, target, offset, SEEK_SET)
        }
    }

    /// A deleted file's saved contents in a new file without a name (`RecreatedFile`), which
    /// the stub then reopens with the saved flags.
    private func recreate(_ contents: Data, flags: Int32, as target: Int32, cloexec: Int32, _ calls: RemoteCalls) throws
    {
        let unnamed = try RecreatedFile.create(contents, for: "descriptor \(target)", calls)
        // The kernel may hand out `target` itself: then the reopened file replaces it there.
        defer { if unnamed != target { _ = try? calls.result(of: .close, unnamed) } }
        try open("/proc/self/fd/\(unnamed)", flags: flags, as: target, cloexec: cloexec, recorded: false, calls)
    }

    /// Opens `path` with `flags` at descriptor `target`; a `recorded` path (a file or directory
    /// of the image) is never followed through a symlink in its last component.
    private func open(
        _ path: String, flags: Int32, as target: Int32, cloexec: Int32, recorded: Bool = true, _ calls: RemoteCalls
    ) throws {
        let what = "reopen \(path) as descriptor \(target)"
        let opened =
            recorded
            ? try calls.openRecorded(path, flags: flags | cloexec, to: what)
            : try calls.withFrame { () throws(TraceeError) in
                try calls.call(.openat, AT_FDCWD, try calls.string(path), flags | cloexec, 0, to: what)
            }
        if opened != target {
            try calls.call(.dup3, opened, target, cloexec, to: "set up descriptor \(target)")
            _ = try calls.result(of: .close, opened)
        }
    }
}
