import Syscall

/// The store's own directory, reached from `/` one component at a time (openat(2) with
/// O_NOFOLLOW, relative to the directory opened before), never by handing the kernel the whole
/// path: so a symlink on the way is seen, and followed only when it belongs to the caller or to
/// root. A symlink another user owns is refused: they could point it anywhere, and root's store
/// would be built in their directory. The store's directory itself is never a symlink.
///
/// With `create`, missing directories are made (0700) as the walk reaches them; they are listed,
/// outermost first, so that a command that fails can take back what it made (`Store.discard`).
struct StorePath {
    /// The directory, open.
    let directory: FileDescriptor
    /// Its path without symlinks, `.` or `..`.
    let resolved: String
    /// The directories this walk created, outermost first, as resolved paths.
    let created: [String]

    /// The most symlinks one walk follows (the kernel's own limit, MAXSYMLINKS).
    static let maxSymlinks = 40

    init(opening path: String, create: Bool) throws(StoreError) {
        guard !path.isEmpty else { throw .notAStore(path: path, reason: "an empty path") }
        var pending = Self.components(path)
        if !path.hasPrefix("/") {
            let here: String
            do { here = try CurrentProcess.workingDirectory() } catch { throw error.store("getcwd for", path) }
            pending = Self.components(here) + pending
        }
        // The directories walked so far, "/" first: (name, descriptor).
        var stack: [(name: String, fd: FileDescriptor)] = []
        do {
            stack.append(("", try FileDescriptor.open("/", [.pathOnly, .directory])))
        } catch { throw error.store("open", "/") }
        var created: [String] = []
        var symlinks = 0
        func current() -> String { stack.count == 1 ? "/" : stack.map(\.name).joined(separator: "/") }
        func close() { for entry in stack { entry.fd.close() } }

        while !pending.isEmpty {
            let name = pending.removeFirst()
            if name == "." { continue }
            if name == ".." {
                if stack.count > 1 { stack.removeLast().fd.close() }
                continue
            }
            let parent = stack[stack.count - 1].fd
            let full = (stack.count == 1 ? "" : current()) + "/" + name
            var status: FileDescriptor.Status
            do {
                status = try parent.status(of: name)
            } catch  where error == .noSuchFile && create {
                do {
                    try parent.makeDirectory(name, permissions: 0o700)
                    created.append(full)
                    status = try parent.status(of: name)
                } catch  where error == .exists {
                    // Made by someone else meanwhile: look again.
                    pending.insert(name, at: 0)
                    continue
                } catch {
                    close()
                    throw error.store("create directory", full)
                }
            } catch  where error == .noSuchFile {
                close()
                throw .notAStore(path: path, reason: "no such directory: \(full)")
            } catch {
                close()
                throw error.store("stat", full)
            }
            if status.isSymlink {
                let me = CurrentProcess.effectiveUserID
                guard !pending.isEmpty else {
                    close()
                    throw .unsafe(path: full, reason: "it is a symlink; give the real directory")
                }
                guard status.owner == me || status.owner == 0 else {
                    close()
                    throw .unsafe(
                        path: full,
                        reason:
                            "it is a symlink owned by uid \(status.owner), and a store's path is never resolved "
                            + "through another user's symlink (they could point it anywhere); give the real path")
                }
                symlinks += 1
                let target: String
                do { target = try parent.linkTarget(of: name) } catch {
                    close()
                    throw error.store("read symlink", full)
                }
                guard symlinks <= Self.maxSymlinks else {
                    close()
                    throw .unsafe(path: path, reason: "more than \(Self.maxSymlinks) symlinks on its way")
                }
                if target.hasPrefix("/") {
                    for entry in stack.dropFirst() { entry.fd.close() }
                    stack.removeLast(stack.count - 1)
                }
                pending = Self.components(target) + pending
                continue
            }
            guard status.isDirectory else {
                close()
                throw .notAStore(path: path, reason: "\(full) is not a directory")
            }
            do {
                stack.append((name, try FileDescriptor.open(name, in: parent, [.pathOnly, .directory, .noFollow])))
            } catch {
                close()
                throw error.store("open", full)
            }
        }
        guard stack.count > 1 else {
            close()
            throw .notAStore(path: path, reason: "/ is not a store")
        }
        // The walk's handles need no read permission; the store's own directory is listed.
        let top = stack.removeLast()
        top.fd.close()
        resolved = (stack.map(\.name) + [top.name]).joined(separator: "/")
        defer { close() }
        do {
            directory = try FileDescriptor.open(
                top.name, in: stack[stack.count - 1].fd, [.readOnly, .directory, .noFollow])
        } catch { throw error.store("open", resolved) }
        self.created = created
    }

    private static func components(_ path: String) -> [String] {
        path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
    }
}
