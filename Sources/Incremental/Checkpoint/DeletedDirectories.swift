import Syscall
import Tracee

/// Directories deleted while the process held them: its working directory, or a descriptor.
/// A deleted directory is empty and has no name; a restart makes one again under the name it
/// had (and any deleted parent), opens it, and removes them (`DescriptorPhase`), so the
/// process holds a deleted directory at the same path again. One kept by several descriptors
/// and the cwd is one directory (by device and inode).
enum DeletedDirectories {
    /// Why a deleted directory at `target` ("/a/b (deleted)") cannot be made again; nil when it
    /// can: one of a kernel file system (/proc/PID after the process ended) cannot.
    static func refusal(_ target: String) -> String? {
        let path = String(target.dropLast(" (deleted)".count))
        guard path.hasPrefix("/"), !path.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }) else {
            return "a deleted directory whose path cannot be made again"
        }
        for kernel in ["/proc", "/sys", "/dev"] where path == kernel || path.hasPrefix(kernel + "/") {
            return "a deleted directory of \(kernel), which cannot be made again"
        }
        return nil
    }

    /// Indexes the image's deleted directories: each descriptor of kind `deletedDirectory`, and
    /// the working directory when it was deleted.
    static func collect(_ pid: Int32, into image: inout ProcessImage) {
        var directories: [ProcessImage.Descriptor.DeletedDirectory] = []
        var identities: [[UInt64]] = []
        func index(_ link: String, _ target: String) -> Int? {
            guard let status = try? FileDescriptor.currentDirectory.status(of: link, followingSymlinks: true),
                status.isDirectory
            else { return nil }
            let identity = [status.device, status.inode]
            if let known = identities.firstIndex(of: identity) { return known }
            identities.append(identity)
            directories.append(
                .init(
                    path: String(target.dropLast(" (deleted)".count)), permissions: status.permissions,
                    owner: status.owner, group: status.group))
            return directories.count - 1
        }
        for k in image.descriptors.indices where image.descriptors[k].kind == .deletedDirectory {
            let descriptor = image.descriptors[k]
            image.descriptors[k].deletedDirectory = index("/proc/\(pid)/fd/\(descriptor.fd)", descriptor.target)
        }
        if image.workingDirectory.hasSuffix(" (deleted)") {
            image.deletedWorkingDirectory = index("/proc/\(pid)/cwd", image.workingDirectory)
        }
        if !directories.isEmpty { image.deletedDirectories = directories }
    }
}
