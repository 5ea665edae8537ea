#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// What is checked before a stub is started, so that a restart that cannot succeed is refused
/// with a reason and changes nothing: the files mapped still there and long enough, the files
/// being written not shorter than they were, who may restart the image, the kernel's vDSO the
/// same size. Then the one change made outside the process: files it was writing that grew
/// since the generation are cut back (`rollBackWrittenFiles`).
public struct Preflight: Sendable {
    public let image: ProcessImage
    public let generation: UInt64

    public init(image: ProcessImage, generation: UInt64) {
        self.image = image
        self.generation = generation
    }

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
            var status = stat()
            guard stat(mapping.path, &status) == 0 else {
                throw refuse("\(mapping.path), mapped at 0x\(String(mapping.start, radix: 16)), no longer exists; put it back to restart")
            }
            let needed = Int64(mapping.offset)
            guard Int64(status.st_size) > needed || mapping.offset == 0 else {
                throw refuse("\(mapping.path) is \(status.st_size) bytes now, shorter than its mapping at offset \(mapping.offset) needs")
            }
        }
        for descriptor in image.descriptors where descriptor.kind == .file {
            guard let size = descriptor.size else { continue }
            var status = stat()
            guard stat(descriptor.target, &status) == 0 else {
                throw refuse("\(descriptor.target), open as descriptor \(descriptor.fd), no longer exists; put it back to restart")
            }
            guard Int64(status.st_size) >= size else {
                throw refuse("\(descriptor.target) is \(status.st_size) bytes, shorter than the \(size) it had at this generation: "
                             + "what the process wrote is gone (restored from a later generation's run?); restore the file or restart an earlier generation")
            }
        }
        // A user restarts only their own images; root restores the image's own ids, never more.
        let me = getuid()
        if me != 0, let owner = image.credentials.user.all.first(where: { $0 != me }) {
            throw refuse("it ran as uid \(owner); only root or that user can restart it")
        }
        let here = (try? MemoryRegion.of(getpid())) ?? []
        for name in ["[vdso]", "[vvar]", "[vvar_vclock]"] {
            let saved = image.mappings.filter { $0.path == name }.map { $0.end - $0.start }
            let current = here.filter { $0.path == name }.map(\.size)
            guard saved == current else {
                throw refuse("its \(name) is \(saved) bytes and this kernel's \(current): restart it on the kernel that checkpointed it")
            }
        }
    }

    /// Files the process was writing that grew since this generation: cut back to their size
    /// then, so that the process goes on writing where it was. Returns what was cut.
    public func rollBackWrittenFiles() throws(CheckpointError) -> [String] {
        var notices: [String] = []
        for (path, size) in writtenFiles {
            var status = stat()
            guard stat(path, &status) == 0, Int64(status.st_size) > size else { continue }
            guard truncate(path, off_t(size)) == 0 else {
                throw refuse("\(path) grew since (\(status.st_size) bytes, was \(size)) and cannot be cut back: \(Errno.current)")
            }
            notices.append("\(path): cut back from \(status.st_size) to \(size) bytes, its size at generation \(generation)")
        }
        return notices
    }
}
