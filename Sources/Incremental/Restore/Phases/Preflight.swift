import Syscall
import Tracee

/// What is checked before a stub is started, so that a restart that cannot succeed is refused
/// with a reason and changes nothing: the files mapped still there and long enough, the files
/// being written not shorter than they were, who may restart the image, the kernel's vDSO the
/// same size. Then the one change made outside the process, once every phase has succeeded:
/// files it was writing that grew since the generation are cut back (`rollBackWrittenFiles`).
public struct Preflight: Sendable {
    public let image: ProcessImage
    public let generation: UInt64

    public init(image: ProcessImage, generation: UInt64) {
        self.image = image
        self.generation = generation
    }

    /// What the process held that the restart runs without (recorded at the checkpoint under
    /// --skip-unsupported): said on every restart and by `ld-chpox --check`.
    public var notRestored: [String] { image.unsupported }

    /// The files that will be cut back to their size at this generation, if they grew.
    public var writtenFiles: [(path: String, size: Int64)] {
        image.descriptors.compactMap { descriptor in
            guard descriptor.kind == .file, let size = descriptor.size else { return nil }
            return (descriptor.target, size)
        }
    }

    private func refuse(_ reason: String) -> CheckpointError { .cannotRestart(generation: generation, reason: reason) }

    /// Throws the first reason this generation cannot restart here and now.
    public func check() throws(CheckpointError) {
        for mapping in image.mappings where mapping.backing == .privateFile || mapping.backing == .sharedFile {
            guard !mapping.path.hasSuffix(" (deleted)") else { continue }
            guard let status = Self.status(mapping.path) else {
                throw refuse(
                    "\(mapping.path), mapped at 0x\(String(mapping.start, radix: 16)), no longer exists; "
                        + "put it back to restart"
                )
            }
            guard status.size > Int64(mapping.offset) || mapping.offset == 0 else {
                throw refuse(
                    "\(mapping.path) is \(status.size) bytes now, "
                        + "shorter than its mapping at offset \(mapping.offset) needs"
                )
            }
        }
        for descriptor in image.descriptors where descriptor.kind == .file {
            guard let size = descriptor.size else { continue }
            guard let status = Self.status(descriptor.target) else {
                throw refuse(
                    "\(descriptor.target), open as descriptor \(descriptor.fd), no longer exists; "
                        + "put it back to restart"
                )
            }
            guard status.size >= size else {
                throw refuse(
                    "\(descriptor.target) is \(status.size) bytes, shorter than the \(size) it had at this generation: "
                        + "what the process wrote is gone (restored from a later generation's run?); "
                        + "restore the file or restart an earlier generation"
                )
            }
        }
        // A user restarts only their own images; root restores the image's own ids, never more.
        let me = CurrentProcess.userID
        if me != 0, let owner = image.credentials.user.all.first(where: { $0 != me }) {
            throw refuse("it ran as uid \(owner); only root or that user can restart it")
        }
        let here = (try? MemoryRegion.of(CurrentProcess.id)) ?? []
        for name in ["[vdso]", "[vvar]", "[vvar_vclock]"] {
            let saved = image.mappings.filter { $0.path == name }.map { $0.end - $0.start }
            let current = here.filter { $0.path == name }.map(\.size)
            guard saved == current else {
                throw refuse(
                    "its \(name) is \(saved) bytes and this kernel's \(current): "
                        + "restart it on the kernel that checkpointed it"
                )
            }
        }
    }

    /// Files the process was writing that grew since this generation: cut back to their size
    /// then, so that the process goes on writing where it was. Returns what was cut.
    public func rollBackWrittenFiles() throws(CheckpointError) -> [String] {
        var notices: [String] = []
        for (path, size) in writtenFiles {
            guard let status = Self.status(path), status.size > size else { continue }
            do throws(Errno) { try FileDescriptor.setSize(ofFileAt: path, to: size) } catch {
                throw refuse("\(path) grew since (\(status.size) bytes, was \(size)) and cannot be cut back: \(error)")
            }
            notices.append(
                "\(path): cut back from \(status.size) to \(size) bytes, its size at generation \(generation)")
        }
        return notices
    }

    /// What stat(2) says of `path`, through symlinks; nil when it cannot be reached.
    static func status(_ path: String) -> FileDescriptor.Status? {
        try? FileDescriptor.currentDirectory.status(of: path, followingSymlinks: true)
    }
}
