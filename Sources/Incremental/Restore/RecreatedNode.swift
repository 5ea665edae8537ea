#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// A device node or symbolic link deleted while the process held it (`DeletedNode`), made again
/// in the stub beside where it was: under its own name when that is free, else under a
/// temporary name in the same directory (".NAME.chpox-PID"); given its owner and mode, opened
/// with the recorded flags (O_NOFOLLOW: never through a symlink put there meanwhile), checked
/// to be what was made, and its name removed again, so that the process holds a deleted node
/// as it did. The stub reaches paths with the image owner's access (`FileAccessPhase`), and a
/// device node needs CAP_MKNOD besides: only root restarting an image of root's own has it.
enum RecreatedNode {
    /// The stub's descriptor (close-on-exec) of `node` made again and deleted.
    static func open(_ node: ProcessImage.Descriptor.DeletedNode, flags: Int32, _ calls: RemoteCalls) throws -> Int32 {
        let what = "make the deleted \(node.summary) again"
        let names = try self.names(node.path, pid: calls.pid, what: what)
        var made: String?
        for name in names {
            let result = try make(node, at: name, calls)
            if result == -Int(EEXIST) { continue }
            if result == -Int(EPERM), node.type == .characterDevice {
                throw TraceeError.unsupported(
                    pid: calls.pid,
                    reason: "cannot \(what): mknod needs CAP_MKNOD, which a restart has only as root restarting an "
                        + "image of root's own (not in a user namespace)")
            }
            try calls.check(result, "\(what) at \(name)")
            made = name
            break
        }
        guard let made else {
            throw TraceeError.unsupported(
                pid: calls.pid,
                reason: "cannot \(what): \(names.joined(separator: " and ")) exist (move them away)")
        }
        defer {
            _ = try? calls.withFrame { () throws(TraceeError) in
                try calls.result(of: .unlinkat, AT_FDCWD, try calls.string(made), 0)
            }
        }
        let fd = try calls.withFrame { () throws(TraceeError) -> Int in
            let name = try calls.string(made)
            try calls.call(.fchownat, AT_FDCWD, name, node.owner, node.group, AT_SYMLINK_NOFOLLOW, to: what)
            if node.type == .characterDevice {
                try calls.call(.fchmodat, AT_FDCWD, name, node.permissions, 0, to: what)  // after chown
            }
            return try calls.call(.openat, AT_FDCWD, name, flags | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0, to: what)
        }
        do {
            try check(Int32(fd), is: node, calls)
        } catch {
            _ = try? calls.result(of: .close, fd)
            throw error
        }
        return Int32(fd)
    }

    /// Its own path, then the temporary name beside it.
    static func names(_ path: String, pid: Int32, what: String) throws(TraceeError) -> [String] {
        guard path.hasPrefix("/"), let slash = path.lastIndex(of: "/") else {
            throw .unsupported(pid: pid, reason: "cannot \(what): \(path) is not an absolute path")
        }
        let base = path[path.index(after: slash)...]
        guard !base.isEmpty, base != ".", base != ".." else {
            throw .unsupported(pid: pid, reason: "cannot \(what): \(path) names no file")
        }
        return [path, "\(path[..<slash])/.\(base).chpox-\(pid)"]
    }

    /// mknodat or symlinkat at `name`: the kernel's answer (a negated errno on failure).
    static func make(
        _ node: ProcessImage.Descriptor.DeletedNode, at name: String, _ calls: RemoteCalls
    ) throws(TraceeError) -> Int {
        try calls.withFrame { () throws(TraceeError) -> Int in
            switch node.type {
            case .characterDevice:
                guard let device = node.device, device.count == 2,
                    let argument = DeviceNumber(major: device[0], minor: device[1]).mknodArgument
                else {
                    throw .unsupported(pid: calls.pid, reason: "the image records no device number mknod takes")
                }
                // S_IFCHR | 0600: its mode is set once it has its owner.
                return try calls.result(of: .mknodat, AT_FDCWD, try calls.string(name), 0o020600, argument)
            case .symlink:
                guard let target = node.linkTarget else {
                    throw .unsupported(pid: calls.pid, reason: "the image records no target for \(node.path)")
                }
                return try calls.result(of: .symlinkat, try calls.string(target), AT_FDCWD, try calls.string(name))
            }
        }
    }

    /// Refuses a descriptor that is not the node made (something else put at its name meanwhile).
    static func check(_ fd: Int32, is node: ProcessImage.Descriptor.DeletedNode, _ calls: RemoteCalls) throws {
        let path = "/proc/\(calls.pid)/fd/\(fd)"
        let status = try? FileDescriptor.currentDirectory.status(of: path, followingSymlinks: true)
        let same: Bool
        switch node.type {
        case .characterDevice:
            let device = status?.specialDevice
            same = status?.isCharacterDevice == true && node.device == device.map { [$0.major, $0.minor] }
        case .symlink:
            let link = try? FileDescriptor.open(path, [.pathOnly])
            defer { link?.close() }
            same = status?.isSymlink == true && (try? link?.linkTarget(of: "")) == node.linkTarget
        }
        guard same else {
            throw TraceeError.unsupported(
                pid: calls.pid, reason: "the deleted \(node.summary) made again is not what was opened at its name")
        }
    }
}
