#if canImport(Glibc)
import Glibc
#endif
import Store
import Syscall
import Tracee

extension RestartSession {
    /// Registers `ranges` (page numbers; the process's anonymous private mappings) with a new
    /// userfaultfd of the process for missing pages, and hands it to the tree's page server
    /// with `entries`, the stored pages it is to fill there (`PageFillPhase`, lazily).
    ///
    /// The userfaultfd is made inside the process (it belongs to the address space of whoever
    /// creates it), taken with pidfd_getfd and closed there, so the process's descriptor table
    /// is as the image has it. It serves faults from the kernel's own accesses too (no
    /// UFFD_USER_MODE_ONLY: a read(2) into a missing page must wait for its bytes as a load does),
    /// and reports fork, mremap, MADV_DONTNEED and munmap, which the server follows.
    func serveLazily(_ ranges: [Range<UInt64>], _ entries: [PageEntry]) throws {
        guard let server = tree.pageServer else {
            throw TraceeError.unsupported(pid: pid, reason: "a lazy page fill without a page server")
        }
        let (userfaultfd, process) = try takeUserfaultfd(
            Int(O_CLOEXEC | O_NONBLOCK),
            refused: {
                "a lazy restart needs a userfaultfd in the process, which the kernel refused (\($0)): it takes "
                    + "root (CAP_SYS_PTRACE) or vm.unprivileged_userfaultfd=1; restart without --lazy"
            })
        do {
            do {
                try userfaultfd.enable([.forkEvents, .remapEvents, .removeEvents, .unmapEvents])
            } catch {
                throw TraceeError.unsupported(
                    pid: pid,
                    reason: "the kernel refused the userfaultfd events a lazy restart follows (fork, mremap, "
                        + "MADV_DONTNEED, munmap: \(error)); fork events need CAP_SYS_PTRACE; restart without --lazy")
            }
            for range in Self.merged(ranges) {
                do {
                    try userfaultfd.registerForMissingPages(
                        start: Page.address(of: range.lowerBound), length: UInt64(range.count) * UInt64(Page.size))
                } catch {
                    throw TraceeError.system(
                        error, pid: pid,
                        operation: "register 0x\(String(Page.address(of: range.lowerBound), radix: 16)) "
                            + "for missing pages (UFFDIO_REGISTER) in")
                }
            }
            try server.add(userfaultfd: userfaultfd, pid: pid, process: process, entries: entries)
        } catch {
            userfaultfd.close()
            process.close()
            throw error
        }
    }

    /// A new userfaultfd of the process (`flags`: userfaultfd(2)'s), made inside it (it belongs
    /// to the address space of whoever creates it), taken with pidfd_getfd and closed there, so
    /// the process's descriptor table is as the image has it; with the process's pidfd.
    /// `refused` says why a restart cannot go on where the kernel refuses it.
    func takeUserfaultfd(_ flags: Int, refused: (Errno) -> String) throws -> (Userfaultfd, ProcessDescriptor) {
        let remote = try calls.result(of: .userfaultfd, flags)
        guard remote >= 0 else {
            throw TraceeError.unsupported(
                pid: pid,
                reason: refused(Errno(rawValue: Int32(-remote))))
        }
        let process: ProcessDescriptor
        let local: FileDescriptor
        do throws(Errno) {
            process = try ProcessDescriptor.open(pid)
            do throws(Errno) { local = try process.copyDescriptor(Int32(remote)) } catch {
                process.close()
                throw error
            }
        } catch {
            _ = try? calls.result(of: .close, remote)
            throw TraceeError.system(error, pid: pid, operation: "take the userfaultfd (pidfd_getfd) of")
        }
        do {
            try calls.check(try calls.result(of: .close, remote), "close the userfaultfd taken from it")
        } catch {
            local.close()
            process.close()
            throw error
        }
        return (Userfaultfd(descriptor: local), process)
    }

    /// Adjacent ranges joined (one registration each run of mappings).
    static func merged(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
        var result: [Range<UInt64>] = []
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) where !range.isEmpty {
            if let last = result.last, last.upperBound == range.lowerBound {
                result[result.count - 1] = last.lowerBound..<range.upperBound
            } else {
                result.append(range)
            }
        }
        return result
    }
}
