#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall

/// Another process's memory, read with process_vm_readv(2) in large batches, falling back to
/// /proc/<pid>/mem (which also reads PROT_NONE pages) where that fails.
///
/// Pages read in bulk that the process shares copy-on-write with another (anonymous, present
/// but not exclusively mapped, or swapped) are read through /proc/<pid>/mem: process_vm_readv
/// pins the pages it reads (FOLL_PIN), and the kernel unshares a shared anonymous page it is
/// asked to pin, copying it into the process: a checkpoint would double the memory a forked
/// tree shares (seen on 6.18: 12 of 16 shared pages unshared by reading 4; mm/gup.c,
/// gup_must_unshare). /proc/<pid>/mem reads without pinning.

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
        let (pinned, shared) = try Self.splitShared(requests, pagemap: Pagemap(pid: pid))
        var unreadable: [PageRun] = []
        for request in shared {
            unreadable += try readAround(from: request.address, into: request.buffer, pinning: false)
        }
        let requests = pinned
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

    /// `requests` (page-aligned) split into the parts process_vm_readv may read and the pages
    /// that must not be pinned (`mustNotPin`), by the process's page map.
    static func splitShared(
        _ requests: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)], pagemap: Pagemap
    ) throws(TraceeError) -> (
        pinned: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)],
        shared: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)]
    ) {
        var pinned: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)] = []
        var shared: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)] = []
        for request in requests {
            let count = request.buffer.count / Page.size
            guard count > 0, request.address % UInt64(Page.size) == 0 else {
                pinned.append(request)
                continue
            }
            let entries = try pagemap.entries(from: request.address, count: count)
            var first = 0
            while first < count {
                let kind = first < entries.count && mustNotPin(entries[first])
                var end = first + 1
                while end < count && (end < entries.count && mustNotPin(entries[end])) == kind { end += 1 }
                let part = (
                    address: request.address + UInt64(first * Page.size),
                    buffer: UnsafeMutableRawBufferPointer(
                        rebasing: request.buffer[(first * Page.size)..<min(end * Page.size, request.buffer.count)])
                )
                if kind { shared.append(part) } else { pinned.append(part) }
                first = end
            }
            if count * Page.size < request.buffer.count {  // a tail shorter than a page
                pinned.append(
                    (
                        request.address + UInt64(count * Page.size),
                        UnsafeMutableRawBufferPointer(rebasing: request.buffer[(count * Page.size)...])
                    ))
            }
        }
        return (pinned, shared)
    }

    /// Whether a page (its pagemap entry) may be shared copy-on-write with another process:
    /// anonymous and present without being exclusively mapped, or swapped.
    static func mustNotPin(_ entry: UInt64) -> Bool {
        entry & PagemapBit.swapped != 0
            || (entry & PagemapBit.present != 0 && entry & PagemapBit.exclusive == 0
                && entry & PagemapBit.fileOrShared == 0)
    }

    /// Reads a page-aligned range page by page past any page that cannot be read; without
    /// `pinning`, through /proc/<pid>/mem alone.
    private func readAround(
        from address: UInt64, into buffer: UnsafeMutableRawBufferPointer, pinning: Bool = true
    ) throws(TraceeError) -> [PageRun] {
        let read = { (address: UInt64, buffer: UnsafeMutableRawBufferPointer) throws(TraceeError) -> Int in
            pinning
                ? try self.read(from: address, into: buffer) : try self.readThroughProcMem(from: address, into: buffer)
        }
        var unreadable: [PageRun] = []
        var offset = try read(address, buffer)
        offset = Page.alignDown(offset)
        while offset < buffer.count {
            let page = UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<min(offset + Page.size, buffer.count)])
            if try read(address + UInt64(offset), page) < page.count {
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

    /// Writes the `local` buffers, one after another, over the `remote` ranges, one after
    /// another, with one process_vm_writev (at most IOV_MAX, 1024, of each); returns the bytes
    /// written, which stop short at the first page that cannot be written (not writable, not
    /// mapped): process_vm_writev keeps to the protections, unlike /proc/<pid>/mem.
    public func write(
        _ local: UnsafeBufferPointer<iovec>, over remote: UnsafeBufferPointer<iovec>
    ) throws(TraceeError) -> Int {
        guard let localBase = local.baseAddress, let remoteBase = remote.baseAddress else { return 0 }
        let n = chpox_process_vm_writev(pid, localBase, UInt(local.count), remoteBase, UInt(remote.count))
        if n < 0 && errno == ESRCH { throw .noSuchProcess(pid: pid) }
        return max(n, 0)
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
