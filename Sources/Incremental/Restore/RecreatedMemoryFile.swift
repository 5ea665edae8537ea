#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// A memory file of the image made again in the stub (`MemoryLayoutPhase`), as the process
/// made it: a memfd by memfd_create with its name (close-on-exec, sealing allowed: its seals
/// are added once its mappings exist, `sealCommand`), or shared anonymous memory by a
/// MAP_SHARED|MAP_ANONYMOUS mapping opened through /proc/self/map_files and unmapped again.
/// ld-chpox then writes its data ranges, sets its size, owner, permissions and time through
/// /proc/PID/fd/N.
enum RecreatedMemoryFile {
    /// Who may own it: ids the image runs as (any, for an image that ran as root).
    struct Owners {
        var users: Set<UInt32>
        var groups: Set<UInt32>
        var anyOwner: Bool

        init(_ image: ProcessImage) {
            users = Set(image.credentials.user.all)
            groups = Set(image.credentials.group.all + image.credentials.groups)
            anyOwner = image.credentials.user.effective == 0
        }
    }

    /// The stub's descriptor (read-write, close-on-exec) of `file`, made again and filled.
    static func create(_ file: ProcessImage.MemoryFile, owners: Owners, _ calls: RemoteCalls) throws -> Int32 {
        let fd =
            try file.memfdName.map { try memfd($0, executable: file.permissions & 0o111 != 0, calls) }
            ?? sharedAnonymous(size: file.size, calls)
        do {
            try fill(fd, file, owners: owners, calls)
        } catch {
            _ = try? calls.result(of: .close, fd)
            throw error
        }
        return fd
    }

    /// memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), with MFD_EXEC where it had execute
    /// permission (a kernel with vm.memfd_noexec set would seal it against exec otherwise;
    /// one before 6.3 knows no MFD_EXEC, and no such sysctl: then without).
    static func memfd(_ name: String, executable: Bool, _ calls: RemoteCalls) throws(TraceeError) -> Int32 {
        let what = "create memfd \(name)"
        let base = CHPOX_MFD_CLOEXEC | CHPOX_MFD_ALLOW_SEALING
        return Int32(
            try calls.withFrame { () throws(TraceeError) in
                let at = try calls.string(name)
                if executable {
                    let fd = try calls.result(of: .memfdCreate, at, base | CHPOX_MFD_EXEC)
                    if fd != -Int(EINVAL) {
                        try calls.check(fd, what)
                        return fd
                    }
                }
                return try calls.call(.memfdCreate, at, base, to: what)
            })
    }

    /// A new shared anonymous memory object of at least `size` bytes: mapped, opened through
    /// /proc/self/map_files, and unmapped (before any of the image's mappings exists).
    static func sharedAnonymous(size: Int64, _ calls: RemoteCalls) throws(TraceeError) -> Int32 {
        let what = "create shared anonymous memory"
        let page = UInt64(Page.size)
        let length = (UInt64(max(size, 1)) + page - 1) / page * page
        let at = UInt64(
            try calls.call(.mmap, 0, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0, to: what))
        defer { _ = try? calls.result(of: .munmap, at, length) }
        let path = "/proc/self/map_files/\(String(at, radix: 16))-\(String(at + length, radix: 16))"
        return Int32(
            try calls.withFrame { () throws(TraceeError) in
                try calls.call(.openat, AT_FDCWD, try calls.string(path), O_RDWR | O_CLOEXEC, 0, to: what)
            })
    }

    /// Writes its data ranges, then its size, owner (an id the image runs as), permissions
    /// (after the owner: chown clears set-id bits) and modification time.
    static func fill(_ fd: Int32, _ file: ProcessImage.MemoryFile, owners: Owners, _ calls: RemoteCalls) throws {
        let what = "fill \(file.what)"
        guard owners.anyOwner || (owners.users.contains(file.owner) && owners.groups.contains(file.group)) else {
            throw TraceeError.unsupported(
                pid: calls.pid,
                reason: "\(file.what) belongs to \(file.owner):\(file.group), not to the image's user")
        }
        guard let pieces = RecreatedFile.pieces(file.dataRanges, of: file.contents) else {
            throw TraceeError.unsupported(
                pid: calls.pid, reason: "the image's \(file.what) holds fewer bytes than its data ranges")
        }
        do throws(Errno) {
            let opened = try FileDescriptor.open("/proc/\(calls.pid)/fd/\(fd)", [.writeOnly])
            defer { opened.close() }
            for piece in pieces {
                try [UInt8](piece.bytes).withRawBytes { (raw) throws(Errno) in try opened.writeAll(raw, at: piece.at) }
            }
            try opened.setSize(file.size)
            try opened.setOwner(user: file.owner, group: file.group)
            try opened.setPermissions(file.permissions)
            if file.modified.count == 2 {
                try opened.setModificationTime(timespec(tv_sec: Int(file.modified[0]), tv_nsec: Int(file.modified[1])))
            }
        } catch {
            throw TraceeError.from(error, pid: calls.pid, "\(what) of")
        }
    }

    /// The seals F_ADD_SEALS adds to the memfd made again (it starts with none): nil when it
    /// had none, or is not a memfd.
    static func sealsToAdd(_ file: ProcessImage.MemoryFile) -> UInt32? {
        guard file.memfdName != nil, file.sameAs == nil, let seals = file.seals, seals != 0 else { return nil }
        return seals
    }

    /// The seals, in words (F_SEAL_* names).
    static func sealNames(_ seals: UInt32) -> String {
        let names: [(Int32, String)] = [
            (CHPOX_F_SEAL_SEAL, "seal"), (CHPOX_F_SEAL_SHRINK, "shrink"), (CHPOX_F_SEAL_GROW, "grow"),
            (CHPOX_F_SEAL_WRITE, "write"), (CHPOX_F_SEAL_FUTURE_WRITE, "future-write"), (CHPOX_F_SEAL_EXEC, "exec"),
        ]
        let known = names.filter { seals & UInt32($0.0) != 0 }.map(\.1)
        let rest = seals & ~names.reduce(UInt32(0)) { $0 | UInt32($1.0) }
        return (known + (rest != 0 ? ["0x\(String(rest, radix: 16))"] : [])).joined(separator: " ")
    }
}
