#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// What an open file holds beyond its bytes: a pipe's buffer and capacity, a sparse file's
/// data ranges, its owner and times, and whether two descriptors share one open file.
extension FileDescriptor {
    /// The pipe's capacity in bytes. The corresponding C constant is F_GETPIPE_SZ.
    public func pipeCapacity() throws(Errno) -> Int {
        Int(try retryingInterrupts { chpox_fcntl_int(rawValue, CHPOX_F_GETPIPE_SZ, 0) }.get())
    }

    /// Sets the pipe's capacity (rounded up by the kernel). The corresponding C constant is
    /// F_SETPIPE_SZ.
    public func setPipeCapacity(_ bytes: Int) throws(Errno) {
        _ = try retryingInterrupts { chpox_fcntl_int(rawValue, CHPOX_F_SETPIPE_SZ, Int32(bytes)) }.get()
    }

    /// Who gets this open file's I/O signals: owner type and pid (F_GETOWN_EX), signal
    /// (F_GETSIG) and the ids recorded with the owner (F_GETOWNER_UIDS); nil when it has no
    /// owner and the default signal.
    public func signalOwnership() throws(Errno) -> (type: Int32, pid: Int32, signal: Int32, uid: UInt32, euid: UInt32)?
    {
        var type: Int32 = 0
        var pid: Int32 = 0
        _ = try retryingInterrupts { chpox_fcntl_get_owner(rawValue, &type, &pid) }.get()
        let signal = try retryingInterrupts { chpox_fcntl_int(rawValue, CHPOX_F_GETSIG, 0) }.get()
        guard pid != 0 || signal != 0 else { return nil }
        var uids: [UInt32] = [0, 0]
        _ = try retryingInterrupts { chpox_fcntl_get_owner_uids(rawValue, &uids) }.get()
        return (type, pid, signal, uids[0], uids[1])
    }

    /// Bytes waiting to be read (FIONREAD).
    public func bytesQueued() throws(Errno) -> Int {
        var count: Int32 = 0
        _ = try control(UInt(FIONREAD), &count)
        return Int(count)
    }

    /// Copies up to `count` bytes queued in this pipe into pipe `output` without consuming them
    /// (tee(2), never waiting). Returns the bytes copied.
    public func tee(to output: FileDescriptor, count: Int) throws(Errno) -> Int {
        let copied = try retryingInterrupts {
            chpox_tee(rawValue, output.rawValue, count, UInt32(CHPOX_SPLICE_F_NONBLOCK))
        }
        .get()
        return Int(copied)
    }

    /// Reads from the current offset until `count` bytes or the end (a pipe: until it is empty,
    /// for a non-blocking one).
    public func read(upTo count: Int) throws(Errno) -> [UInt8] {
        var failure: Errno?
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            initialized = 0
            while initialized < count, let base = buffer.baseAddress {
                switch retryingInterrupts({ Glibc.read(rawValue, base + initialized, count - initialized) }) {
                case .success(0): return
                case .success(let n): initialized += n
                case .failure(let error):
                    if error.rawValue != EAGAIN { failure = error }
                    return
                }
            }
        }
        if let failure { throw failure }
        return bytes
    }

    /// The ranges of a file of `size` bytes that hold data, the rest being holes (lseek(2)
    /// SEEK_DATA and SEEK_HOLE). Moves the file offset.
    public func dataRanges(size: Int64) throws(Errno) -> [Range<Int64>] {
        var ranges: [Range<Int64>] = []
        var position: Int64 = 0
        while position < size {
            let start: Int64
            switch retryingInterrupts({ lseek(rawValue, off_t(position), CHPOX_SEEK_DATA) }) {
            case .success(let offset): start = Int64(offset)
            case .failure(let error) where error.rawValue == ENXIO: return ranges  // only a hole is left
            case .failure(let error): throw error
            }
            let end = min(size, Int64(try retryingInterrupts { lseek(rawValue, off_t(start), CHPOX_SEEK_HOLE) }.get()))
            if end > start { ranges.append(start..<end) }
            position = end
        }
        return ranges
    }

    /// The seals of a memfd or other shmem file (F_GET_SEALS: F_SEAL_SEAL, F_SEAL_WRITE...;
    /// F_SEAL_SEAL alone on one made without MFD_ALLOW_SEALING).
    public func seals() throws(Errno) -> UInt32 {
        UInt32(try retryingInterrupts { chpox_fcntl_int(rawValue, CHPOX_F_GET_SEALS, 0) }.get())
    }

    /// The type of the file system the file is on (fstatfs(2) f_type: CHPOX_TMPFS_MAGIC for a
    /// memfd, HUGETLBFS_MAGIC for one made with MFD_HUGETLB).
    public func fileSystemType() throws(Errno) -> Int64 {
        Int64(try retryingInterrupts { chpox_fstatfs_type(rawValue) }.get())
    }

    public func setOwner(user: UInt32, group: UInt32) throws(Errno) {
        _ = try retryingInterrupts { fchown(rawValue, uid_t(user), gid_t(group)) }.get()
    }

    /// Sets the modification time; the access time is left as it is (futimens(2)).
    public func setModificationTime(_ time: timespec) throws(Errno) {
        let times = [timespec(tv_sec: 0, tv_nsec: Int(CHPOX_UTIME_OMIT)), time]
        _ = try retryingInterrupts { futimens(rawValue, times) }.get()
    }
}

extension ProcessDescriptor {
    /// Whether descriptor `first` and `second` of process `pid` are one open file description
    /// (one shared offset and status flags: dup(2), fork). kcmp(2) KCMP_FILE; needs ptrace
    /// access to the process.
    public static func shareOpenFile(_ pid: Int32, _ first: Int32, _ second: Int32) throws(Errno) -> Bool {
        try shareOpenFile(pid, first, pid, second)
    }

    /// What two processes may share besides open files, as clone(2) flags make them share it.
    public enum SharedObject: Int32, CaseIterable, Sendable {
        case memory = 1, descriptorTable = 2, filesystemContext = 3, signalHandlers = 4

        /// What it is, in words.
        public var words: String {
            switch self {
            case .memory: return "memory"
            case .descriptorTable: return "descriptor table"
            case .filesystemContext: return "working directory, root and umask"
            case .signalHandlers: return "signal handlers"
            }
        }

        /// The clone flag that shares it.
        public var cloneFlag: String {
            switch self {
            case .memory: return "CLONE_VM"
            case .descriptorTable: return "CLONE_FILES"
            case .filesystemContext: return "CLONE_FS"
            case .signalHandlers: return "CLONE_SIGHAND"
            }
        }
    }

    /// Whether processes `pid` and `other` share `object` (kcmp(2)).
    public static func share(_ object: SharedObject, _ pid: Int32, _ other: Int32) throws(Errno) -> Bool {
        try retryingInterrupts { chpox_kcmp_object(pid, other, object.rawValue) }.get() == 0
    }

    /// Whether descriptor `first` of process `pid` and descriptor `second` of process `other`
    /// are one open file description (inherited across fork, or passed).
    public static func shareOpenFile(
        _ pid: Int32, _ first: Int32, _ other: Int32, _ second: Int32
    ) throws(Errno) -> Bool {
        try retryingInterrupts { chpox_kcmp_file(pid, other, first, second) }.get() == 0
    }
}
