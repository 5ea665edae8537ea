import Foundation
import Syscall
import Tracee

/// Mappings whose backing a restart cannot find by path: private mappings of deleted files
/// (their contents saved, so that the restart maps a recreated file and clean pages still come
/// from it, shared with any descriptor of the same file), and the shared memory a restart does
/// not rebuild (deleted-file shared mappings), refused with a reason. Mappings of
/// memfds and of shared memory a descriptor names are `MemoryFileCapture`'s.
enum MappedFileCapture {
    /// The file behind `region`, through /proc/PID/map_files (it reaches a deleted file too).
    static func mappedFile(_ pid: Int32, _ region: MemoryRegion) -> String {
        "/proc/\(pid)/map_files/\(String(region.start, radix: 16))-\(String(region.end, radix: 16))"
    }

    /// Whether `region` is a private mapping of a deleted file.
    static func isDeletedPrivateFile(_ region: MemoryRegion) -> Bool {
        !region.shared && !region.isAnonymous && region.path.hasSuffix(" (deleted)")
    }

    /// The status of the deleted file behind a private mapping whose contents a checkpoint
    /// saves (a regular file within `ImageCapture.deletedFileLimit`); nil otherwise.
    static func recreatableStatus(_ pid: Int32, _ region: MemoryRegion) -> FileDescriptor.Status? {
        guard isDeletedPrivateFile(region),
            let status = try? FileDescriptor.currentDirectory.status(
                of: mappedFile(pid, region), followingSymlinks: true),
            status.isRegularFile, status.size <= ImageCapture.deletedFileLimit
        else { return nil }
        return status
    }

    struct Captured {
        var files: [ProcessImage.DeletedFile] = []
        /// For each mapping start, the index of its file in `files`.
        var fileOfMapping: [UInt64: Int] = [:]
        /// (device, inode) of each file, in the order of `files`.
        var identities: [Identity] = []
        var unsupported: [String] = []
    }

    struct Identity: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    /// The deleted files private mappings hold, each saved once, and a line for each mapping a
    /// restart cannot rebuild.
    static func capture(_ pid: Int32, regions: [MemoryRegion]) -> Captured {
        var captured = Captured()
        for region in regions {
            let at = "0x\(String(region.start, radix: 16))"
            if region.shared, ImageCapture.backing(of: region) == .sharedAnonymous, !isPlainSharedMemory(region),
                !isUnlinkedSharedMemoryFile(pid, region)
            {
                captured.unsupported.append(
                    "a shared mapping of \(region.path) at \(at): shared mappings of deleted files "
                        + "are not restored (they would no longer be shared with the file)")
                continue
            }
            guard isDeletedPrivateFile(region) else { continue }
            guard let status = recreatableStatus(pid, region) else {
                captured.unsupported.append(
                    "a private mapping of \(region.path) at \(at): the deleted file is larger than "
                        + "\(Format.bytes(ImageCapture.deletedFileLimit)) or unreadable")
                continue
            }
            let identity = Identity(device: status.device, inode: status.inode)
            if let known = captured.identities.firstIndex(of: identity) {
                captured.fileOfMapping[region.start] = known
                continue
            }
            guard let contents = readAll(mappedFile(pid, region)) else {
                captured.unsupported.append(
                    "a private mapping of \(region.path) at \(at): the deleted file is unreadable")
                continue
            }
            captured.fileOfMapping[region.start] = captured.files.count
            captured.identities.append(identity)
            captured.files.append(.init(path: region.path, contents: contents))
        }
        return captured
    }

    /// Anonymous shared memory with no file a descriptor could name: MAP_SHARED|MAP_ANONYMOUS
    /// (/dev/zero (deleted)) and SysV segments.
    static func isPlainSharedMemory(_ region: MemoryRegion) -> Bool {
        region.isAnonymous || region.path.hasPrefix("/dev/zero") || region.path.hasPrefix("/SYSV")
    }

    /// A file of /dev/shm that was unlinked while mapped shared (POSIX named semaphores and
    /// shared memory, sem_open or shm_open then unlink, as Python's multiprocessing locks are)
    /// and that nothing else names: no descriptor of the process has it open, and the mapping
    /// covers it whole from its start with every page holding some of it. Its pages are stored
    /// as shared memory's, and a restart makes it anonymous shared memory with the same bytes
    /// (only /proc/PID/maps shows another name): nothing can tell the difference.
    static func isUnlinkedSharedMemoryFile(_ pid: Int32, _ region: MemoryRegion) -> Bool {
        guard region.path.hasPrefix("/dev/shm/"), region.path.hasSuffix(" (deleted)"), region.offset == 0,
            let status = try? FileDescriptor.currentDirectory.status(
                of: mappedFile(pid, region), followingSymlinks: true),
            status.isRegularFile, status.size <= Int64(region.size), status.size > Int64(region.size) - Int64(Page.size)
        else { return false }
        let descriptors = (try? ProcFS.descriptors(pid)) ?? []
        return !descriptors.contains { fd in
            guard let open = ImageCapture.openFileStatus(pid, fd) else { return false }
            return open.device == status.device && open.inode == status.inode
        }
    }

    static func readAll(_ path: String) -> Data? {
        guard let file = try? FileDescriptor.open(path, [.readOnly]) else { return nil }
        defer { file.close() }
        guard let bytes = try? file.readAll(limit: Int(ImageCapture.deletedFileLimit)) else { return nil }
        return Data(bytes)
    }
}
