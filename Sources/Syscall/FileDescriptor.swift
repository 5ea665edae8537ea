#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// An open file descriptor. Every file call of the project goes through these wrappers.
public struct FileDescriptor: Hashable, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The corresponding C constant is AT_FDCWD.
    public static let currentDirectory = FileDescriptor(rawValue: AT_FDCWD)

    /// Flags for `open`.
    public struct OpenOptions: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// The corresponding C constant is O_RDONLY.
        public static let readOnly = OpenOptions(rawValue: O_RDONLY)
        /// The corresponding C constant is O_WRONLY.
        public static let writeOnly = OpenOptions(rawValue: O_WRONLY)
        /// The corresponding C constant is O_RDWR.
        public static let readWrite = OpenOptions(rawValue: O_RDWR)
        /// The corresponding C constant is O_CREAT.
        public static let create = OpenOptions(rawValue: O_CREAT)
        /// The corresponding C constant is O_EXCL.
        public static let exclusive = OpenOptions(rawValue: O_EXCL)
        /// The corresponding C constant is O_TRUNC.
        public static let truncate = OpenOptions(rawValue: O_TRUNC)
        /// The corresponding C constant is O_NOFOLLOW: fail with ELOOP on a symlink.
        public static let noFollow = OpenOptions(rawValue: O_NOFOLLOW)
        /// The corresponding C constant is O_DIRECTORY.
        public static let directory = OpenOptions(rawValue: O_DIRECTORY)
        /// The corresponding C constant is O_PATH: a handle to walk from (*at calls, fstat),
        /// which needs no read permission on the directory.
        public static let pathOnly = OpenOptions(rawValue: CHPOX_O_PATH)
        /// The corresponding C constant is O_CLOEXEC.
        public static let closeOnExec = OpenOptions(rawValue: O_CLOEXEC)
        /// The corresponding C constant is O_NONBLOCK (a FIFO opens without waiting for a peer).
        public static let nonBlocking = OpenOptions(rawValue: O_NONBLOCK)
    }

    /// Opens `path` relative to `directory` (openat(2)); always close-on-exec.
    public static func open(
        _ path: String, in directory: FileDescriptor = .currentDirectory,
        _ options: OpenOptions, permissions: UInt32 = 0o600
    ) throws(Errno) -> FileDescriptor {
        let flags = options.union(.closeOnExec).rawValue
        let fd = try retryingInterrupts { chpox_openat(directory.rawValue, path, flags, permissions) }.get()
        return FileDescriptor(rawValue: fd)
    }

    public func close() {
        // close(2) must not be retried on EINTR on Linux: the descriptor is gone either way.
        _ = Glibc.close(rawValue)
    }

    /// Reads up to `buffer.count` bytes at the current offset.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        return try retryingInterrupts { Glibc.read(rawValue, base, buffer.count) }.get()
    }

    /// Reads up to `buffer.count` bytes at `offset` (pread(2)).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        return try retryingInterrupts { pread(rawValue, base, buffer.count, off_t(offset)) }.get()
    }

    /// Fills `buffer` from `offset`, returning how many bytes the file had (less at end of file).
    public func readFully(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        var done = 0
        while done < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), at: offset + Int64(done))
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Writes all of `bytes` at the current offset.
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws(Errno) {
        var done = 0
        while done < bytes.count {
            let base = bytes.baseAddress! + done
            let count = bytes.count - done
            done += try retryingInterrupts { Glibc.write(rawValue, base, count) }.get()
        }
    }

    /// Writes all of `bytes` at `offset` (pwrite(2)); the file offset does not move.
    public func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) {
        var done = 0
        while done < bytes.count {
            let base = bytes.baseAddress! + done
            let count = bytes.count - done
            done += try retryingInterrupts { pwrite(rawValue, base, count, off_t(offset + Int64(done))) }.get()
        }
    }

    /// Sets the file's size (ftruncate(2)); growing it leaves a hole that reads as zeros.
    public func setSize(_ size: Int64) throws(Errno) {
        _ = try retryingInterrupts { ftruncate(rawValue, off_t(size)) }.get()
    }

    /// Reads the whole file from offset 0, refusing files larger than `limit` bytes.
    public func readAll(limit: Int) throws(Errno) -> [UInt8] {
        let size = try status().size
        guard size <= Int64(limit) else { throw Errno(rawValue: EFBIG) }
        var result = [UInt8](repeating: 0, count: Int(size))
        let n = try result.withUnsafeMutableBufferPointer { (buffer) throws(Errno) -> Int in
            try readFully(into: UnsafeMutableRawBufferPointer(buffer), at: 0)
        }
        result.removeLast(result.count - n)
        return result
    }

    /// The open file's status flags (fcntl(2) F_GETFL): access mode, O_NONBLOCK, O_APPEND...
    public func statusFlags() throws(Errno) -> Int32 {
        let fd = rawValue
        return try retryingInterrupts { fcntl(fd, F_GETFL) }.get()
    }

    /// Reads from the current offset until end of file, for files whose size stat(2) does not
    /// tell (/proc's report 0): refuses more than `limit` bytes.
    public func readToEnd(limit: Int) throws(Errno) -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try chunk.withMutableRawBytes { (raw) throws(Errno) in try read(into: raw) }
            if n == 0 { return result }
            guard result.count + n <= limit else { throw Errno(rawValue: EFBIG) }
            result.append(contentsOf: chunk[0..<n])
        }
    }

    /// Sets the size of the file at `path` (truncate(2)): for a file chpox does not hold open.
    public static func setSize(ofFileAt path: String, to size: Int64) throws(Errno) {
        _ = try retryingInterrupts { truncate(path, off_t(size)) }.get()
    }

    /// Issues device or kernel-object request `request` with a pointer to `argument` (ioctl(2)),
    /// returning the call's non-negative result. Every request chpox makes takes a pointer.
    public func control<Argument>(_ request: UInt, _ argument: inout Argument) throws(Errno) -> Int32 {
        let fd = rawValue
        return try withUnsafeMutablePointer(to: &argument) { (pointer) throws(Errno) -> Int32 in
            try retryingInterrupts { chpox_ioctl(fd, request, pointer) }.get()
        }
    }

    /// Flushes data and metadata to stable storage (fsync(2)).
    public func sync() throws(Errno) {
        _ = try retryingInterrupts { fsync(rawValue) }.get()
    }

    /// What `syncRange` does with a range's pages (sync_file_range(2) flags).
    public struct RangeSync: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Waits for writeback already under way on the range's pages to end first.
        /// The corresponding C constant is SYNC_FILE_RANGE_WAIT_BEFORE.
        public static let waitBefore = RangeSync(rawValue: CHPOX_SYNC_FILE_RANGE_WAIT_BEFORE)
        /// Starts writeback of the range's dirty pages that are not being written already, and
        /// returns without waiting for the device. The corresponding C constant is
        /// SYNC_FILE_RANGE_WRITE.
        public static let write = RangeSync(rawValue: CHPOX_SYNC_FILE_RANGE_WRITE)
        /// Waits for the range's writeback to end afterwards.
        /// The corresponding C constant is SYNC_FILE_RANGE_WAIT_AFTER.
        public static let waitAfter = RangeSync(rawValue: CHPOX_SYNC_FILE_RANGE_WAIT_AFTER)
    }

    /// Writeback of `count` bytes from `offset` (sync_file_range(2)). It makes nothing durable:
    /// no metadata, no device cache flush (that is `sync`'s job); with `.write` it only has the
    /// kernel start writing pages now, so that a later fsync finds little left to do.
    public func syncRange(offset: Int64, count: Int64, _ what: RangeSync) throws(Errno) {
        let fd = rawValue
        _ = try retryingInterrupts { chpox_sync_file_range(fd, offset, count, what.rawValue) }.get()
    }

    /// What fstat(2) says about a file.
    public struct Status: Sendable {
        public let size: Int64
        public let mode: UInt32
        public let owner: UInt32
        public let group: UInt32
        public let inode: UInt64
        public let device: UInt64
        /// Its names (st_nlink): 0 for a deleted file no other name holds.
        public let links: UInt64
        /// The last modification time (st_mtim).
        public let modified: timespec
        /// The last status change time (st_ctim): any write, chmod, rename or link moves it.
        public let changed: timespec
        /// The device a character or block device node stands for (st_rdev); 0 for other files.
        public let specialDevice: DeviceNumber
        public var isDirectory: Bool { chpox_s_isdir(mode) != 0 }
        public var isRegularFile: Bool { chpox_s_isreg(mode) != 0 }
        public var isSymlink: Bool { chpox_s_islnk(mode) != 0 }
        /// A pipe or a FIFO.
        public var isFIFO: Bool { chpox_s_isfifo(mode) != 0 }
        /// A UNIX socket's file (S_IFSOCK).
        public var isSocket: Bool { mode & 0o170000 == 0o140000 }
        /// A character device node (S_IFCHR).
        public var isCharacterDevice: Bool { mode & 0o170000 == 0o020000 }
        /// A block device node (S_IFBLK).
        public var isBlockDevice: Bool { mode & 0o170000 == 0o060000 }
        /// The permission bits (rwx for user, group, other).
        public var permissions: UInt32 { mode & 0o7777 }

        init(_ s: stat) {
            size = Int64(s.st_size)
            mode = UInt32(s.st_mode)
            owner = UInt32(s.st_uid)
            group = UInt32(s.st_gid)
            inode = UInt64(s.st_ino)
            device = UInt64(s.st_dev)
            links = UInt64(s.st_nlink)
            modified = s.st_mtim
            changed = s.st_ctim
            specialDevice = DeviceNumber(UInt64(s.st_rdev))
        }
    }

    public func status() throws(Errno) -> Status {
        var s = stat()
        _ = try retryingInterrupts { fstat(rawValue, &s) }.get()
        return Status(s)
    }

    /// Status of `name` in this directory (fstatat(2)), of the symlink itself unless
    /// `followingSymlinks` (a /proc/<pid>/fd/<n> link is followed to the open file).
    public func status(of name: String, followingSymlinks: Bool = false) throws(Errno) -> Status {
        var s = stat()
        let flags = followingSymlinks ? 0 : AT_SYMLINK_NOFOLLOW
        _ = try retryingInterrupts { fstatat(rawValue, name, &s, flags) }.get()
        return Status(s)
    }

    public func setPermissions(_ permissions: UInt32) throws(Errno) {
        _ = try retryingInterrupts { fchmod(rawValue, mode_t(permissions)) }.get()
    }

    /// Advisory whole-file locks (flock(2)); released when the descriptor is closed or the
    /// process dies, so a killed holder never leaves a stale lock.
    public enum LockKind: Sendable {
        /// The corresponding C constant is LOCK_SH.
        case shared
        /// The corresponding C constant is LOCK_EX.
        case exclusive
    }

    /// Takes the lock; with `wait: false`, returns false instead of waiting when it is held.
    @discardableResult
    public func lock(_ kind: LockKind, wait: Bool = true) throws(Errno) -> Bool {
        var operation = kind == .shared ? LOCK_SH : LOCK_EX
        if !wait { operation |= LOCK_NB }
        switch retryingInterrupts({ flock(rawValue, operation) }) {
        case .success: return true
        case .failure(let error) where error == .wouldBlock && !wait: return false
        case .failure(let error): throw error
        }
    }
}

extension FileDescriptor {
    /// A pipe (pipe2(2) with O_CLOEXEC): (read end, write end).
    public static func pipe() throws(Errno) -> (read: FileDescriptor, write: FileDescriptor) {
        var fds: [Int32] = [0, 0]
        _ = try retryingInterrupts { chpox_pipe2(&fds, O_CLOEXEC) }.get()
        return (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
    }
}
