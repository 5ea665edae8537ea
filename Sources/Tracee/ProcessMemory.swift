#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall

/// Another process's memory, read with process_vm_readv(2) in large batches, falling back to
/// /proc/<pid>/mem (which also reads PROT_NONE pages) where that fails.
public struct ProcessMemory: Sendable {
    public let pid: Int32

    public init(pid: Int32) { self.pid = pid }

    /// Reads `buffer.count` bytes at `address`; returns how many could be read.
    @discardableResult
    public func read(from address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(TraceeError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        var local = iovec(iov_base: base, iov_len: buffer.count)
        var remote = iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address)), iov_len: buffer.count)
        let n = chpox_process_vm_readv(pid, &local, 1, &remote, 1)
        if n == buffer.count { return n }
        if n < 0 && errno == ESRCH { throw .noSuchProcess(pid: pid) }
        return try readThroughProcMem(from: address, into: buffer)
    }

    /// Reads many (address, buffer) pairs with as few calls as possible (IOV_MAX at a time);
    /// returns the pages that could not be read (unmapped meanwhile, or never readable), whose
    /// bytes in the buffers are left as they were. Every other page is read, also the pages
    /// after a hole.
    @discardableResult
    public func read(
        _ requests: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)]
    ) throws(TraceeError) -> [PageRun] {
        var unreadable: [PageRun] = []
        var start = 0
        while start < requests.count {
            let batch = requests[start..<min(start + 1024, requests.count)]
            var local = batch.map { iovec(iov_base: $0.buffer.baseAddress, iov_len: $0.buffer.count) }
            var remote = batch.map {
                iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt($0.address)), iov_len: $0.buffer.count)
            }
            let wanted = batch.reduce(0) { $0 + $1.buffer.count }
            let n = chpox_process_vm_readv(pid, &local, UInt(local.count), &remote, UInt(remote.count))
            if n < 0 && errno == ESRCH { throw .noSuchProcess(pid: pid) }
            if n != wanted {
                for request in batch { unreadable += try readAround(from: request.address, into: request.buffer) }
            }
            start += batch.count
        }
        return unreadable
    }

    /// Reads a page-aligned range page by page past any page that cannot be read.
    private func readAround(
        from address: UInt64, into buffer: UnsafeMutableRawBufferPointer
    ) throws(TraceeError) -> [PageRun] {
        var unreadable: [PageRun] = []
        var offset = try read(from: address, into: buffer)
        offset = Page.alignDown(offset)
        while offset < buffer.count {
            let page = UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<min(offset + Page.size, buffer.count)])
            if try read(from: address + UInt64(offset), into: page) < page.count {
                let at = address + UInt64(offset)
                if let last = unreadable.last, last.end == at {
                    unreadable[unreadable.count - 1].end += UInt64(Page.size)
                } else {
                    unreadable.append(PageRun(pageAt: at))
                }
            }
            offset += Page.size
        }
        return unreadable
    }

    /// `count` 64-bit words at `address` (the answers system calls run inside the process
    /// left in its memory); all of them or an error.
    public func words(at address: UInt64, count: Int) throws(TraceeError) -> [UInt64] {
        var bytes = [UInt8](repeating: 0, count: count * 8)
        let got = try bytes.withMutableRawBytes { (raw) throws(TraceeError) in try read(from: address, into: raw) }
        guard got == count * 8 else {
            throw .unsupported(pid: pid, reason: "cannot read \(count * 8) bytes at 0x\(String(address, radix: 16))")
        }
        return bytes.withUnsafeBytes { raw in
            (0..<count).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
        }
    }

    /// Writes `bytes` at `address` (process_vm_writev: writable pages only).
    public func write(to address: UInt64, from bytes: UnsafeRawBufferPointer) throws(TraceeError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var local = iovec(iov_base: UnsafeMutableRawPointer(mutating: base), iov_len: bytes.count)
        var remote = iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address)), iov_len: bytes.count)
        let n = chpox_process_vm_writev(pid, &local, 1, &remote, 1)
        guard n == bytes.count else {
            throw .from(
                n < 0 ? Errno.current : Errno(rawValue: EFAULT), pid: pid,
                "write \(bytes.count) bytes at 0x\(String(address, radix: 16)) of")
        }
    }

    private func readThroughProcMem(
        from address: UInt64, into buffer: UnsafeMutableRawBufferPointer
    ) throws(TraceeError) -> Int {
        do {
            let fd = try FileDescriptor.open("/proc/\(pid)/mem", [.readOnly])
            defer { fd.close() }
            return try fd.readFully(into: buffer, at: Int64(bitPattern: address))
        } catch {
            if error.rawValue == EIO { return 0 }
            throw .from(error, pid: pid, "read memory of")
        }
    }
}
