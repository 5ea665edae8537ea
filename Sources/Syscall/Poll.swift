#if canImport(Glibc)
import Glibc
#endif

/// Waiting on several descriptors at once (poll(2)).
public enum Poll {
    /// Waits until one of `descriptors` is readable, hung up or in error, or `milliseconds`
    /// pass (-1: no limit); returns the indexes of those that are, in order (none on timeout).
    public static func readable(_ descriptors: [FileDescriptor], timeout milliseconds: Int32) throws(Errno) -> [Int] {
        var entries = descriptors.map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
        let ready = try retryingInterrupts { poll(&entries, nfds_t(entries.count), milliseconds) }.get()
        guard ready > 0 else { return [] }
        return entries.indices.filter { entries[$0].revents != 0 }
    }
}
