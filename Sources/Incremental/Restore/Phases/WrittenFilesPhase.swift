import Syscall
import Tracee

/// Files the process was writing that grew since the generation, cut back to their size then
/// so that it goes on writing where it was. Done after every other phase but the registers
/// (every chunk of the generation read and verified, every descriptor reopened), by the stub
/// itself on the descriptor it reopened with the image owner's access (`ftruncate`): never by
/// path, never as anyone else.
public struct WrittenFilesPhase: RestartPhase {
    /// A descriptor open for writing and the size its file had at the generation.
    public struct WrittenFile: Sendable, Equatable {
        public var fd: Int32
        public var path: String
        public var size: Int64

        public init(fd: Int32, path: String, size: Int64) {
            self.fd = fd
            self.path = path
            self.size = size
        }
    }

    public var files: [WrittenFile]

    public var name: String { "files written" }
    public var steps: [String] { files.map { "cut fd \($0.fd) (\($0.path)) back to \($0.size) bytes if it grew" } }

    public init(image: ProcessImage) {
        files = image.descriptors.compactMap { descriptor in
            guard descriptor.kind == .file, let size = descriptor.size else { return nil }
            return WrittenFile(fd: descriptor.fd, path: descriptor.target, size: size)
        }
    }

    public func run(in session: RestartSession) throws {
        for file in files {
            // The file the stub holds now, whatever its path has become.
            let now: FileDescriptor.Status
            do {
                now = try FileDescriptor.currentDirectory.status(
                    of: "/proc/\(session.pid)/fd/\(file.fd)", followingSymlinks: true)
            } catch {
                throw TraceeError.from(error, pid: session.pid, "read the size of descriptor \(file.fd) of")
            }
            guard now.size > file.size else { continue }
            try session.calls.call(
                .ftruncate, file.fd, file.size,
                to: "cut \(file.path) back from \(now.size) to \(file.size) bytes (descriptor \(file.fd))")
            let cut = "\(file.path): cut back from \(now.size) to \(file.size) bytes"
            session.notices.append(cut + ", its size at generation \(session.generation)")
        }
    }
}
