#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// Memfds and the shared anonymous memory that descriptors name (`ProcessImage.MemoryFile`):
/// each object read once, whole (its data ranges, size, permissions, owner, seals), however
/// many descriptors and mappings of the process reach it. A restart makes it again, one object
/// for all of them, as memfd_create or MAP_SHARED|MAP_ANONYMOUS made it.
///
/// Shared anonymous memory that no descriptor names stays plain shared memory, its pages stored
/// with the mapping's (`PageSelection`); a SysV segment stays refused.
enum MemoryFileCapture {
    /// A file's identity: its device and inode (fstat).
    struct Identity: Hashable {
        var device: UInt64
        var inode: UInt64

        init(_ status: FileDescriptor.Status) { (device, inode) = (status.device, status.inode) }
    }

    /// What /proc shows for a memfd: "/memfd:NAME (deleted)".
    static func isMemfd(_ path: String) -> Bool { path.hasPrefix("/memfd:") }

    /// What /proc shows for shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS's shmem object).
    static func isSharedAnonymous(_ path: String) -> Bool { path == "/dev/zero (deleted)" }

    /// The name memfd_create was given, from what /proc shows.
    static func memfdName(_ path: String) -> String {
        var name = path.dropFirst("/memfd:".count)
        if name.hasSuffix(" (deleted)") { name = name.dropLast(" (deleted)".count) }
        return String(name)
    }

    /// The shared anonymous memory objects the descriptors of the process name.
    static func described(_ pid: Int32) -> Set<Identity> {
        var found = Set<Identity>()
        for fd in (try? ProcFS.descriptors(pid)) ?? [] {
            guard let target = ProcFS.descriptorTarget(pid, fd), isSharedAnonymous(target),
                let status = ImageCapture.openFileStatus(pid, fd)
            else { continue }
            found.insert(Identity(status))
        }
        return found
    }

    /// Whether `region` maps a memory file: any mapping of a memfd, and a mapping of shared
    /// anonymous memory one of the process's descriptors names (`described`, read lazily: only
    /// a process with such mappings pays for reading its descriptors).
    static func mapsMemoryFile(_ pid: Int32, _ region: MemoryRegion, described: () -> Set<Identity>) -> Bool {
        if isMemfd(region.path) { return true }
        guard isSharedAnonymous(region.path), !region.isAnonymous else { return false }
        let objects = described()
        guard !objects.isEmpty,
            let status = try? FileDescriptor.currentDirectory.status(
                of: MappedFileCapture.mappedFile(pid, region), followingSymlinks: true)
        else { return false }
        return objects.contains(Identity(status))
    }

    struct Captured {
        var files: [ProcessImage.MemoryFile] = []
        /// For each mapping start, the index of its memory file in `files`.
        var fileOfMapping: [UInt64: Int] = [:]
        var unsupported: [String] = []

        /// Whether `region` maps one of `files` (and so is no business of `MappedFileCapture`).
        func maps(_ region: MemoryRegion) -> Bool { fileOfMapping[region.start] != nil }
    }

    /// The memory files of the process: the objects its memory-file descriptors name and its
    /// mappings of memfds and of those objects. Sets each such descriptor's `memoryFile`;
    /// a descriptor whose object cannot be saved becomes `unsupported`, with a line saying why.
    static func capture(
        _ pid: Int32, _ descriptors: inout [ProcessImage.Descriptor], regions: [MemoryRegion]
    )
        -> Captured
    {
        var captured = Captured()
        var identities: [Identity] = []
        var failed = Set<Identity>()
        /// The index of the object at `path` (a /proc link to it), read on first sight; nil when
        /// it cannot be saved (a line says why).
        func object(_ path: String, shown: String, what: String) -> Int? {
            guard let status = try? FileDescriptor.currentDirectory.status(of: path, followingSymlinks: true) else {
                captured.unsupported.append("\(what): \(shown): cannot read it")
                return nil
            }
            let identity = Identity(status)
            if let known = identities.firstIndex(of: identity) { return known }
            if failed.contains(identity) { return nil }
            switch read(path, shown: shown) {
            case .success(let file):
                identities.append(identity)
                captured.files.append(file)
                return captured.files.count - 1
            case .failure(let reason):
                failed.insert(identity)
                captured.unsupported.append("\(what): \(shown): \(reason.description)")
                return nil
            }
        }
        for k in descriptors.indices where descriptors[k].kind == .memoryFile {
            let fd = descriptors[k].fd
            if let lease = ImageCapture.leaseHeld(pid, fd) {
                captured.unsupported.append(
                    "fd \(fd): \(descriptors[k].target): a memory file under a \(lease): reading it would break that")
                descriptors[k].kind = .unsupported
                continue
            }
            descriptors[k].memoryFile = object(
                "/proc/\(pid)/fd/\(fd)", shown: descriptors[k].target, what: "fd \(fd)")
            if descriptors[k].memoryFile == nil { descriptors[k].kind = .unsupported }
        }
        var described: Set<Identity>?
        for region in regions {
            let maps = mapsMemoryFile(pid, region) {
                if let described { return described }
                described = Self.described(pid)
                return described ?? []
            }
            guard maps else { continue }
            let at = "a \(region.shared ? "shared" : "private") mapping at 0x\(String(region.start, radix: 16))"
            captured.fileOfMapping[region.start] = object(
                MappedFileCapture.mappedFile(pid, region), shown: region.path, what: at)
        }
        return captured
    }

    /// Why an object cannot be saved.
    struct Refusal: Error, CustomStringConvertible {
        var description: String
    }

    /// The object at `path`, read whole.
    static func read(_ path: String, shown: String) -> Result<ProcessImage.MemoryFile, Refusal> {
        let memfd = isMemfd(shown)
        do throws(Errno) {
            let file = try FileDescriptor.open(path, [.readOnly])
            defer { file.close() }
            // MFD_HUGETLB puts a memfd on hugetlbfs: its pages are huge pages, its size a
            // multiple of theirs; a restart would make an ordinary one.
            let type = try file.fileSystemType()
            guard type == Int64(CHPOX_TMPFS_MAGIC) else {
                return .failure(
                    Refusal(
                        description: "a memfd on a file system of type 0x\(String(type, radix: 16)), not tmpfs "
                            + "(MFD_HUGETLB): not restored"))
            }
            let status = try file.status()
            let extents: DeletedFileCapture.Extents
            switch try DeletedFileCapture.data(of: file, size: status.size) {
            case .success(let read): extents = read
            case .failure(let refusal): return .failure(Refusal(description: "\(refusal): not restored"))
            }
            let (ranges, contents) = (extents.ranges, extents.bytes)
            return .success(
                ProcessImage.MemoryFile(
                    memfdName: memfd ? memfdName(shown) : nil, device: mapsDevice(status.device), inode: status.inode,
                    size: status.size, permissions: status.permissions, owner: status.owner, group: status.group,
                    modified: [Int64(status.modified.tv_sec), Int64(status.modified.tv_nsec)],
                    seals: memfd ? try file.seals() : nil, dataRanges: ranges.map { [$0.lowerBound, $0.upperBound] },
                    contents: contents))
        } catch {
            return .failure(Refusal(description: "cannot read it (\(error))"))
        }
    }

    /// A device number as /proc/PID/maps writes it ("%02x:%02x", major and minor), so that a
    /// memory file and mappings of it compare equal.
    static func mapsDevice(_ device: UInt64) -> String {
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))
        let minor = (device & 0xff) | ((device >> 12) & ~UInt64(0xff))
        func hex(_ value: UInt64) -> String {
            let digits = String(value, radix: 16)
            return digits.count < 2 ? "0" + digits : digits
        }
        return "\(hex(major)):\(hex(minor))"
    }
}
