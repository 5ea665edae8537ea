#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

extension FileDescriptor {
    /// The largest file handle the kernel makes (MAX_HANDLE_SZ).
    public static let maximumHandleSize = Int(CHPOX_MAX_HANDLE_SZ)

    /// Opens the file a kernel file handle names (its type and bytes, as name_to_handle_at(2)
    /// made them or /proc/PID/fdinfo lists them) on the mount this descriptor (O_PATH is
    /// enough) is on (open_by_handle_at(2); needs CAP_DAC_READ_SEARCH). Always O_PATH and
    /// close-on-exec: neither the mount nor the file is opened for reading, so no inotify or
    /// fanotify watch sees an open.
    public func openFile(handle: [UInt8], type: Int32) throws(Errno) -> FileDescriptor {
        guard handle.count <= Self.maximumHandleSize else { throw Errno(rawValue: EINVAL) }
        let mount = rawValue
        let fd = handle.withUnsafeBufferPointer { bytes in
            chpox_open_by_handle(mount, type, bytes.baseAddress, UInt32(bytes.count))
        }
        guard fd >= 0 else { throw Errno(rawValue: -fd) }
        return FileDescriptor(rawValue: fd)
    }
}
