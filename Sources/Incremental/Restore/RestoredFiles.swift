#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Syscall

/// The files a generation kept (`ProcessImage.files`), put back as they were at it before its
/// processes reopen them. The file there now, where it differs, is never destroyed: it keeps its
/// inode under a name beside it, `NAME.chpox-<chain>-<UTC time>` (a second name, link(2): no
/// byte is copied, and a process outside the tree that still has it open goes on with it), and
/// the generation's file takes its place by rename, so that the path is never missing or half
/// written. Keeping it beside rather than refusing is the choice because any generation must
/// restart, in any order: a restart of generation 0 after generation 5 ran on must not need
/// the user to move files first, nor lose generation 5's output. A restart that fails puts
/// everything back (`undo`).
public struct RestoredFiles: Sendable {
    /// One file put back.
    public struct Restored: Sendable, Equatable {
        public var path: String
        /// The name the file that was there now has; nil when there was none.
        public var displaced: String?
        /// The file was the generation's own (same device and inode), rewritten in place (the
        /// process knows its inode); `displaced` is then a copy of what it held.
        public var inPlace = false
    }

    public let image: ProcessImage
    public let map: PageMap
    public let generation: UInt64
    public let chain: String

    public init(image: ProcessImage, map: PageMap, generation: UInt64, chain: String?) {
        (self.image, self.map, self.generation, self.chain) = (image, map, generation, chain ?? "chain")
    }

    /// The files whose contents the generation holds.
    public var recorded: [ProcessImage.RecordedFile] { (image.files ?? []).filter { $0.state == .recorded } }

    /// The files the tree wrote whose contents it does not hold (excluded, too large).
    public var notKept: [ProcessImage.RecordedFile] { (image.files ?? []).filter { $0.state != .recorded } }

    /// The paths a restart puts back: the checks of today's files (still there, not shorter)
    /// do not apply to them.
    public var restoredPaths: Set<String> { Set(recorded.map(\.path)) }

    /// What a restart says of the files it does not put back.
    public var notKeptNotices: [String] {
        notKept.map {
            "\($0.path) was not kept with generation \(generation) (\($0.state.rawValue): \($0.reason ?? "")): "
                + "the restart uses it as it is now, cut back to its size then if it grew"
        }
    }

    /// The bytes of `file` at the generation, checked against its digest.
    public static func contents(of file: ProcessImage.RecordedFile, map: PageMap, store: Store) throws -> [UInt8] {
        guard file.state == .recorded, let slot = file.slot else {
            throw CheckpointError.badImage(
                generation: 0, reason: "\(file.path) was \(file.state.rawValue): its contents were not kept")
        }
        let bytes = try FileChunks.contents(
            ofSlot: slot, in: map, reader: store.reader(), chunking: file.chunking ?? .content, size: file.size)
        let digest = bytes.withUnsafeBytes { ChunkID(hashing: $0) }.hex
        guard Int64(bytes.count) == file.size, digest == file.digest else {
            throw StoreError.invalidArgument(
                "\(file.path): the chunks make \(bytes.count) bytes of digest \(digest.prefix(12)), not the "
                    + "\(file.size) bytes of digest \((file.digest ?? "").prefix(12)) it had")
        }
        return bytes
    }

    /// Puts every recorded file back (`root`: under that directory instead, leaving the
    /// originals alone, for a look: nothing is displaced there). Undoes what it did and throws
    /// when one cannot be. A file root may not put back (`refusal`) refuses the whole before
    /// any file is touched.
    public func restore(
        store: Store, authority: ImageAuthority, root: String? = nil
    ) throws(CheckpointError)
        -> [Restored]
    {
        let targets = recorded.map { file in (file: file, path: root.map { Self.under($0, file.path) } ?? file.path) }
        for (file, path) in targets {
            if let refusal = refusal(of: file, at: path, authority: authority) {
                throw .cannotRestart(generation: generation, reason: refusal)
            }
        }
        var done: [Restored] = []
        for (file, path) in targets {
            do {
                let bytes = try Self.contents(of: file, map: map, store: store)
                if let restored = try put(bytes, of: file, at: path, authority: authority, keep: root == nil) {
                    done.append(restored)
                }
            } catch {
                Self.undo(done)
                if let refused = error as? CheckpointError { throw refused }
                throw .cannotRestart(
                    generation: generation, reason: "cannot put back \(file.path) as it was (\(error))")
            }
        }
        return done
    }

    /// Why root may not put `file` back at `path`; nil when it may. Root writes only where the
    /// store's owner could: a store others write may name any path, so from one that is not
    /// only root's, root puts back only files its owner had at the generation and has now (or,
    /// for a file that is not there, whose folder is the owner's).
    func refusal(of file: ProcessImage.RecordedFile, at path: String, authority: ImageAuthority) -> String? {
        guard CurrentProcess.effectiveUserID == 0, !authority.trustedAsRoot(restartedBy: 0) else { return nil }
        let user = "uid \(authority.owner)" + (authority.ownerName.map { " (\($0))" } ?? "")
        let rule = "\(user)'s, whose store this is: root puts back only that user's files from it"
        guard file.owner == authority.owner else {
            return "\(path) was uid \(file.owner)'s at generation \(generation), not \(rule)"
        }
        // Its group is given back too: one the owner is not in would be a grant (with the
        // set-group-id bit, to run as that group what the owner wrote).
        if let groups = authority.groups, !groups.contains(file.group) {
            return "\(path) was group \(file.group)'s at generation \(generation), which \(user), whose store this "
                + "is, does not belong to: root puts back only that user's files from it, with that user's groups"
        }
        if let now = try? FileDescriptor.currentDirectory.status(of: path) {
            return now.owner == authority.owner ? nil : "\(path) is uid \(now.owner)'s now, not \(rule)"
        }
        let folder = Self.parent(of: path)
        guard let owner = (try? FileDescriptor.currentDirectory.status(of: folder))?.owner else {
            return "\(path) is not there and its folder \(folder) cannot be read: it may not be \(rule)"
        }
        return owner == authority.owner
            ? nil : "\(path) is not there and its folder \(folder) is uid \(owner)'s, not \(rule)"
    }

    /// `path` under directory `root`, its directories made as needed.
    static func under(_ root: String, _ path: String) -> String {
        let full = root.hasSuffix("/") ? root + path.dropFirst() : root + path
        var made = ""
        for part in full.split(separator: "/").dropLast() {
            made += "/" + part
            try? FileDescriptor.currentDirectory.makeDirectory(made, permissions: 0o755)
        }
        return full
    }

    /// Writes one file; nil when the file there is already the generation's.
    private func put(
        _ bytes: [UInt8], of file: ProcessImage.RecordedFile, at path: String, authority: ImageAuthority, keep: Bool
    ) throws -> Restored? {
        let now = try? FileDescriptor.currentDirectory.status(of: path)
        if let now, now.isDirectory { throw Errno(rawValue: EISDIR) }
        // Checked again just before writing: what was there may have changed since `restore` did.
        let me = CurrentProcess.effectiveUserID
        if let refusal = refusal(of: file, at: path, authority: authority) {
            throw CheckpointError.cannotRestart(generation: generation, reason: refusal)
        }
        if let now, now.isRegularFile, now.size == Int64(bytes.count), now.permissions == file.permissions,
            Self.sameBytes(path, bytes)
        {
            return nil
        }
        // The generation's own file, still at its path: rewritten in place, so that it keeps
        // its inode (which a program may compare, as fstat against stat), after a copy of what it
        // holds now is made beside it.
        if let now, now.isRegularFile, now.device == file.device, now.inode == file.inode {
            let target = try FileDescriptor.open(path, [.readWrite, .noFollow, .closeOnExec])
            defer { target.close() }
            let current = try target.readAll(limit: Int(min(Int64(Int.max), now.size)))
            let displaced = keep ? try keepCopy(path, current, status: now) : nil
            do {
                try Self.rewrite(target, with: bytes, permissions: file.permissions, modified: file.modified)
            } catch {
                try? Self.rewrite(
                    target, with: current, permissions: now.permissions,
                    modified: [Int64(now.modified.tv_sec), Int64(now.modified.tv_nsec)])
                if let displaced { try? FileDescriptor.currentDirectory.removeFile(displaced) }
                throw error
            }
            return Restored(path: path, displaced: displaced, inPlace: true)
        }
        let replacement = try ReplacementFile(replacing: path)
        try Self.write(bytes, to: replacement.descriptor)
        // Owner before mode: chown clears the set-user-id and set-group-id bits, and root's must
        // never hold them on bytes another user wrote, even for an instant.
        if me == 0 { try replacement.descriptor.setOwner(user: file.owner, group: file.group) }
        try replacement.descriptor.setPermissions(file.permissions)
        try replacement.descriptor.setModificationTime(
            timespec(tv_sec: Int(file.modified[0]), tv_nsec: Int(file.modified[1])))
        let displaced = now != nil && keep ? try keepBeside(path) : nil
        do { try replacement.commit() } catch {
            if let displaced { try? FileDescriptor.currentDirectory.removeFile(displaced) }
            throw error
        }
        return Restored(path: path, displaced: displaced)
    }

    /// Writes `bytes` over the whole of `file`, cut to their length, with `permissions` and
    /// modification time `modified`, and syncs it.
    static func rewrite(
        _ file: FileDescriptor, with bytes: [UInt8], permissions: UInt32, modified: [Int64]
    ) throws(Errno) {
        try bytes.withRawBytes { (raw) throws(Errno) in try file.writeAll(raw, at: 0) }
        try file.setSize(Int64(bytes.count))
        try file.setPermissions(permissions)
        try file.setModificationTime(timespec(tv_sec: Int(modified[0]), tv_nsec: Int(modified[1])))
        try file.sync()
    }

    /// The name beside `path` its displaced version gets: NAME.chpox-CHAIN-TIME, -2, -3... when taken.
    private func besideNames(_ path: String) -> (folder: String, name: String, candidates: [String]) {
        let name = String(path.split(separator: "/").last ?? "")
        let time = Format.time(nanoseconds: ClockTime.realtime()).filter { $0 != "-" && $0 != ":" }
            .replacingOccurrences(of: " ", with: "T")
        let base = "\(name).chpox-\(chain)-\(time)"
        return (Self.parent(of: path), name, [base] + (2...1000).map { "\(base)-\($0)" })
    }

    /// Writes `bytes`, what the file at `path` holds now, to a new file beside it with its
    /// permissions and modification time; returns that file's path.
    private func keepCopy(_ path: String, _ bytes: [UInt8], status: FileDescriptor.Status) throws -> String {
        let (parent, _, candidates) = besideNames(path)
        let folder = try FileDescriptor.open(parent, [.readOnly, .directory])
        defer { folder.close() }
        for candidate in candidates {
            let made = Result { () throws(Errno) in
                try FileDescriptor.open(
                    candidate, in: folder, [.writeOnly, .create, .exclusive, .noFollow, .closeOnExec],
                    permissions: 0o600)
            }
            switch made {
            case .success(let copy):
                defer { copy.close() }
                // The copy is its file's owner's, as the file is: root's, it would be a file the
                // user cannot change, and with the set-user-id bit, root running the user's bytes.
                do {
                    if CurrentProcess.effectiveUserID == 0 {
                        try copy.setOwner(user: status.owner, group: status.group)
                    }
                    try Self.rewrite(
                        copy, with: bytes, permissions: status.permissions,
                        modified: [Int64(status.modified.tv_sec), Int64(status.modified.tv_nsec)])
                } catch {
                    try? folder.removeFile(candidate)
                    throw error
                }
                return parent + "/" + candidate
            case .failure(let error) where error.rawValue == EEXIST: continue
            case .failure(let error): throw error
            }
        }
        throw Errno(rawValue: EEXIST)
    }

    /// Gives the file at `path` a second name beside it; returns that name.
    private func keepBeside(_ path: String) throws -> String {
        let (parent, name, candidates) = besideNames(path)
        let folder = try FileDescriptor.open(parent, [.readOnly, .directory])
        defer { folder.close() }
        for candidate in candidates {
            switch Result(catching: { () throws(Errno) in try folder.link(name, to: candidate) }) {
            case .success: return parent + "/" + candidate
            case .failure(let error) where error.rawValue == EEXIST: continue
            case .failure(let error): throw error
            }
        }
        throw Errno(rawValue: EEXIST)
    }

    static func write(_ bytes: [UInt8], to file: FileDescriptor) throws(Errno) {
        try bytes.withRawBytes { (raw) throws(Errno) in try file.writeAll(raw) }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return path[..<slash].isEmpty ? "/" : String(path[..<slash])
    }

    static func sameBytes(_ path: String, _ bytes: [UInt8]) -> Bool {
        guard let file = try? FileDescriptor.open(path, [.readOnly, .closeOnExec]) else { return false }
        defer { file.close() }
        guard let now = try? file.readAll(limit: bytes.count + 1) else { return false }
        return now == bytes
    }

    /// Puts back what `restore` moved: each displaced file under its name again (or the path
    /// removed where there was none).
    public static func undo(_ restored: [Restored]) {
        for file in restored.reversed() {
            if file.inPlace, let displaced = file.displaced {
                guard let before = try? FileDescriptor.open(displaced, [.readOnly, .closeOnExec]) else { continue }
                let status = try? before.status()
                let bytes = try? before.readAll(limit: Int.max)
                before.close()
                guard let status, let bytes,
                    let target = try? FileDescriptor.open(file.path, [.readWrite, .noFollow, .closeOnExec])
                else { continue }
                defer { target.close() }
                if (try? rewrite(
                    target, with: bytes, permissions: status.permissions,
                    modified: [Int64(status.modified.tv_sec), Int64(status.modified.tv_nsec)])) != nil
                {
                    try? FileDescriptor.currentDirectory.removeFile(displaced)
                }
            } else if let displaced = file.displaced {
                try? FileDescriptor.currentDirectory.rename(displaced, to: file.path)
            } else {
                try? FileDescriptor.currentDirectory.removeFile(file.path)
            }
        }
    }
}
