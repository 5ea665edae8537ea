#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An inotify instance of this process (inotify(7)), non-blocking: cpx watches files it reads
/// while a tree runs, to learn whether anything modified them before the tree was frozen.
/// Closing it removes every watch.
public struct Inotify: Sendable {
    public let descriptor: FileDescriptor

    public init() throws(Errno) {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw Errno.current }
        descriptor = FileDescriptor(rawValue: fd)
    }

    /// Watches the file at `path` (a path through /proc/self/fd names the open file) for the
    /// events of `mask`; returns its watch descriptor (the same for the same inode).
    public func watch(_ path: String, mask: UInt32) throws(Errno) -> Int32 {
        let wd = inotify_add_watch(descriptor.rawValue, path, mask)
        guard wd >= 0 else { throw Errno.current }
        return wd
    }

    /// Reads every queued event: the watch descriptors that had one, and whether the queue
    /// overflowed (events were lost: any watch may have had one).
    public func drain() throws(Errno) -> (watches: Set<Int32>, overflowed: Bool) {
        var watches: Set<Int32> = []
        var overflowed = false
        let header = MemoryLayout<inotify_event>.size
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let got: Int
            do {
                got = try buffer.withMutableRawBytes { (raw) throws(Errno) -> Int in try descriptor.read(into: raw) }
            } catch {
                if error == .wouldBlock { return (watches, overflowed) }
                throw error
            }
            guard got > 0 else { return (watches, overflowed) }
            var offset = 0
            while offset + header <= got {
                let (wd, mask, length) = buffer.withUnsafeBytes { raw in
                    (
                        raw.loadUnaligned(fromByteOffset: offset, as: Int32.self),
                        raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self),
                        Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                    )
                }
                if mask & UInt32(IN_Q_OVERFLOW) != 0 { overflowed = true } else { watches.insert(wd) }
                offset += header + length
            }
        }
    }

    public func close() { descriptor.close() }
}
