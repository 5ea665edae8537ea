#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// What the descriptors' open files hold beyond a path and an offset: which descriptors are one
/// open file (dup), the pipes and FIFOs with their buffers, deleted files' attributes and holes,
/// and the locks and leases a restart would lose (refused).
extension ImageCapture {
    /// Fills in `descriptors`' open-file state; returns a line for each thing a restart cannot
    /// recreate.
    static func captureOpenFiles(_ pid: Int32, _ descriptors: inout [ProcessImage.Descriptor]) -> [String] {
        var unsupported: [String] = []
        let process = try? ProcessDescriptor.open(pid)
        defer { process?.close() }
        for index in descriptors.indices {
            let fd = descriptors[index].fd
            unsupported += locks(pid, &descriptors[index])
            // Signal-driven I/O (F_SETOWN, F_SETSIG) belongs to the open file: read on a copy.
            // Whether its owner is in the tree is `TreeCapture.link`'s to say.
            if let copy = try? process?.copyDescriptor(fd) {
                defer { copy.close() }
                if let owner = try? copy.signalOwnership() {
                    descriptors[index].signalOwner = .init(
                        type: owner.type, pid: owner.pid, signal: owner.signal, uid: owner.uid, euid: owner.euid)
                }
            }
            // A pipe on 0-2 is recorded too: in a tree, another process may have its other end;
            // a deleted file on 0-2 as well: only the image holds its data.
            guard fd > 2 || descriptors[index].kind == .pipe || descriptors[index].kind.isDeletedFile else { continue }
            let earlier = descriptors[..<index].filter { $0.fd > 2 && $0.target == descriptors[index].target }
            descriptors[index].duplicateOf =
                earlier.first { (try? ProcessDescriptor.shareOpenFile(pid, $0.fd, fd)) ?? false }?.fd
            switch descriptors[index].kind {
            case .pipe:
                unsupported += capturePipe(pid, &descriptors[index], earlier: descriptors[..<index])
            case .deletedFile, .sparseDeletedFile:
                unsupported += captureDeletedFile(pid, &descriptors[index], earlier: descriptors[..<index])
            default: break
            }
        }
        return unsupported + leaseRefusals(descriptors)
    }

    /// A lease a restart cannot take exactly as it was: its break signal names the descriptor it
    /// was taken through (si_fd), unknown when the open file has several; and it goes to the
    /// open file's I/O signal owner, which taking the lease sets when there is none.
    static func leaseRefusals(_ descriptors: [ProcessImage.Descriptor]) -> [String] {
        descriptors.compactMap { descriptor in
            guard let lease = descriptor.lease, descriptor.duplicateOf == nil else { return nil }
            let same = descriptors.filter { $0.duplicateOf == descriptor.fd }
            if let other = same.first {
                return "fd \(descriptor.fd): a \(lease) lease on \(descriptor.target), whose open file is fd "
                    + "\(other.fd) too: which one its break signal names is not known"
            }
            if descriptor.signalOwner == nil {
                return "fd \(descriptor.fd): a \(lease) lease on \(descriptor.target) whose I/O signal owner was "
                    + "cleared: taking it again would set one"
            }
            return nil
        }
    }

    /// The locks and leases held through descriptor `fd` (/proc/PID/fdinfo/N's `lock:` lines,
    /// e.g. "lock:\t1: POSIX  ADVISORY  WRITE 4242 fd:01:1234 0 EOF"): an flock lock and OFD
    /// locks are recorded (FileLockPhase takes them again), and so are the process's own POSIX
    /// locks and an active lease (RecordLockPhase); the others are refused.
    static func locks(_ pid: Int32, _ descriptor: inout ProcessImage.Descriptor) -> [String] {
        guard let info = try? ProcFS.bytes(pid, "fdinfo/\(descriptor.fd)") else { return [] }
        return String(decoding: info, as: UTF8.self).split(separator: "\n").compactMap { line in
            guard line.hasPrefix("lock:") else { return nil }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count > 4 else { return "fd \(descriptor.fd): a lock on \(descriptor.target): not restored" }
            if fields[2] == "FLOCK", fields[3] == "ADVISORY", fields[4] == "READ" || fields[4] == "WRITE" {
                descriptor.flock = fields[4] == "READ" ? "shared" : "exclusive"
                return nil
            }
            // "lock:\t1: OFDLCK ADVISORY WRITE -1 08:01:1234 0 EOF": its range, first to last byte.
            if fields[2] == "OFDLCK", fields[3] == "ADVISORY", fields[4] == "READ" || fields[4] == "WRITE",
                fields.count == 9, let start = Int64(fields[7]), let end = fields[8] == "EOF" ? -1 : Int64(fields[8])
            {
                let lock = ProcessImage.Descriptor.RangeLock(
                    exclusive: fields[4] == "WRITE", start: start, length: end < 0 ? 0 : end - start + 1)
                descriptor.ofdLocks = (descriptor.ofdLocks ?? []) + [lock]
                return nil
            }
            // "lock:\t1: POSIX  ADVISORY  READ 4242 08:01:1234 10 14": the process's own (the
            // pid that took it: not another process sharing its descriptor table).
            if fields[2] == "POSIX", fields[3] == "ADVISORY", fields[4] == "READ" || fields[4] == "WRITE",
                fields.count == 9, fields[5] == "\(pid)", let start = Int64(fields[7]),
                let end = fields[8] == "EOF" ? -1 : Int64(fields[8])
            {
                let lock = ProcessImage.Descriptor.RangeLock(
                    exclusive: fields[4] == "WRITE", start: start, length: end < 0 ? 0 : end - start + 1)
                descriptor.posixLocks = (descriptor.posixLocks ?? []) + [lock]
                return nil
            }
            // "lock:\t1: LEASE  ACTIVE    READ 4242 08:01:1234 0 EOF". A lease being broken
            // ("BREAKING", its type the one it is breaking to) has a deadline and a breaker that a
            // restart cannot make again.
            if fields[2] == "LEASE", fields[3] == "ACTIVE", fields[4] == "READ" || fields[4] == "WRITE" {
                descriptor.lease = fields[4] == "READ" ? "read" : "write"
                return nil
            }
            if fields[2] == "LEASE", fields[3] == "BREAKING" {
                return "fd \(descriptor.fd): a file lease being broken (to \(fields[4])) on \(descriptor.target): "
                    + "its break (the breaker waiting, the deadline) cannot be made again"
            }
            if fields[2] == "POSIX", fields.count > 5, fields[5] != "\(pid)" {
                return "fd \(descriptor.fd): a POSIX lock (\(fields[4])) on \(descriptor.target) taken by process "
                    + "\(fields[5]), which shares the descriptor table: a restart cannot give it that owner"
            }
            let kind: String
            switch fields[2] {
            case "POSIX": kind = "a POSIX lock"
            case "FLOCK": kind = "an flock lock"
            case "OFDLCK": kind = "an OFD lock"
            case "LEASE": kind = "a file lease"
            case "DELEG": kind = "a delegation"
            default: kind = "a \(fields[2]) lock"
            }
            return
                "fd \(descriptor.fd): \(kind) (\(fields[4])) on \(descriptor.target): locks and leases are not restored"
        }
    }

    /// A pipe's identity and capacity, and on its first descriptor the bytes queued in it, read
    /// without consuming them (tee into a spare pipe).
    static func capturePipe(
        _ pid: Int32, _ descriptor: inout ProcessImage.Descriptor, earlier: ArraySlice<ProcessImage.Descriptor>
    ) -> [String] {
        let fd = descriptor.fd
        guard let status = openFileStatus(pid, fd) else { return [] }
        let deleted = descriptor.target.hasSuffix(" (deleted)")
        // A FIFO is reopened by its path; a deleted one (no path left) becomes a pipe.
        let path = descriptor.target.hasPrefix("/") && !deleted ? descriptor.target : nil
        if let first = earlier.first(where: { $0.pipe?.inode == status.inode }), var pipe = first.pipe {
            pipe.contents = nil
            descriptor.pipe = pipe
            return descriptor.flags & CHPOX_O_DIRECT != 0 && first.pipe?.contents?.isEmpty == false
                ? ["fd \(fd): a packet-mode pipe (O_DIRECT) holding data: its packet bounds are not recorded"] : []
        }
        do throws(Errno) {
            let file = try FileDescriptor.open("/proc/\(pid)/fd/\(fd)", [.readOnly, .nonBlocking])
            defer { file.close() }
            let capacity = try file.pipeCapacity()
            let queued = try file.bytesQueued()
            var contents = Data()
            if queued > 0 {
                if descriptor.flags & CHPOX_O_DIRECT != 0 {
                    return ["fd \(fd): a packet-mode pipe (O_DIRECT) holding data: its packet bounds are not recorded"]
                }
                let spare = try FileDescriptor.pipe()
                defer {
                    spare.read.close()
                    spare.write.close()
                }
                try spare.write.setPipeCapacity(capacity)
                let copied = try file.tee(to: spare.write, count: queued)
                guard copied == queued else {
                    return ["fd \(fd): \(descriptor.target): read \(copied) of the \(queued) bytes queued in it"]
                }
                contents = Data(try spare.read.read(upTo: queued))
            }
            descriptor.pipe = .init(inode: status.inode, capacity: capacity, path: path, contents: contents)
            return []
        } catch {
            return ["fd \(fd): \(descriptor.target): cannot read the pipe's buffer (\(error))"]
        }
    }

    /// A deleted regular file's data (its holes left out: `sparseDeletedFile` when it has
    /// some), permissions, owner, modification time and size; a second descriptor on the same
    /// file is recorded as that (one file at restart, not two copies), without the data.
    static func captureDeletedFile(
        _ pid: Int32, _ descriptor: inout ProcessImage.Descriptor, earlier: ArraySlice<ProcessImage.Descriptor>
    ) -> [String] {
        let fd = descriptor.fd
        do throws(Errno) {
            let file = try FileDescriptor.open("/proc/\(pid)/fd/\(fd)", [.readOnly])
            defer { file.close() }
            let status = try file.status()
            let same = earlier.first { other in
                other.kind.isDeletedFile && other.deletedAttributes != nil
                    && openFileStatus(pid, other.fd).map { $0.inode == status.inode && $0.device == status.device }
                        == true
            }
            let ranges: [Range<Int64>]
            if same != nil {
                ranges = try file.dataRanges(size: status.size)
                descriptor.contents = nil
            } else {
                switch try DeletedFileCapture.data(of: file, size: status.size) {
                case .success(let extents):
                    ranges = extents.ranges
                    descriptor.contents = extents.bytes
                case .failure(let refusal): return ["fd \(fd): \(descriptor.target): \(refusal)"]
                }
            }
            descriptor.kind =
                ProcessImage.Descriptor.DeletedFile.isWhole(ranges, size: status.size)
                ? .deletedFile : .sparseDeletedFile
            descriptor.deletedAttributes = .init(
                permissions: status.permissions, owner: status.owner, group: status.group,
                modified: [Int64(status.modified.tv_sec), Int64(status.modified.tv_nsec)],
                dataRanges: ranges.map { [$0.lowerBound, $0.upperBound] }, sameFileAs: same?.fd, size: status.size)
            return []
        } catch {
            return ["fd \(fd): \(descriptor.target): cannot read it (\(error))"]
        }
    }
}
