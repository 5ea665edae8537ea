import Foundation
import Syscall
import Tracee

/// What ties the processes of a tree together, read while all of them are frozen: each one's
/// place (parent, process group, session, address space, stopped), the open files a process
/// shares with an earlier one (kcmp: inherited across fork), and what a restart of the tree
/// cannot reproduce. (Shared anonymous memory needs nothing more: every process's copy of it
/// is taken whole at every generation, all of them in the same instant; a restart maps the
/// first one's object in the others, `TreeLayout.sharedMemory`.)
enum TreeCapture {
    /// Fills in `images` (the tracked processes', in order) and returns the refusals.
    static func link(_ images: inout [ProcessImage], members: [TrackedProcess], zombies: [Int32]) -> [String] {
        var refused: [String] = []
        var stats: [(pid: Int32, terminal: UInt32)] = []
        for (k, member) in members.enumerated() {
            guard let stat = try? ProcFS.stat(member.pid) else {
                refused.append("process \(member.pid) ended while its tree was frozen")
                continue
            }
            stats.append((member.pid, stat.terminal))
            if k > 0, let reason = Checkpointer.pidNamespaceRefusal(member.pid) {
                refused.append("process \(member.pid): \(reason)")
            }
            images[k].position = .init(
                parent: stat.parent, processGroup: stat.processGroup, session: stat.session, space: member.space,
                stopped: member.stateBeforeStop == "T")
            if member.stateBeforeStop == "T", member.stopSignal > 0, member.stopSignal < 65 {
                images[k].position?.stopSignal = member.stopSignal
            }
        }
        guard refused.isEmpty else { return refused }
        var found: [ProcessImage.Zombie] = []
        for zombie in zombies {
            guard let stat = try? ProcFS.stat(zombie), stat.state == "Z" else {
                refused.append("child process \(zombie) was reaped while its tree was frozen")
                continue
            }
            var record = ProcessImage.Zombie(pid: zombie, parent: stat.parent, status: stat.exitCode)
            (record.processGroup, record.session) = (stat.processGroup, stat.session)
            found.append(record)
        }
        if !found.isEmpty { images[0].zombies = found }
        let groups = Dictionary(images.compactMap { image in image.position.map { (image.pid, $0) } }) { a, _ in a }
        for zombie in found {
            guard let parent = groups[zombie.parent], let group = zombie.processGroup, let session = zombie.session
            else { continue }
            let led = groups[group].map { $0.processGroup == group } ?? false
            if session != zombie.pid && session != parent.session {
                refused.append(
                    "zombie \(zombie.pid) is in session \(session), which it did not lead and its parent "
                        + "\(zombie.parent) is not in: it cannot be put back there")
            } else if group != zombie.pid && group != parent.processGroup && !led {
                if let reason = unledGroupRefusal(group, images: images, zombies: found) {
                    refused.append("zombie \(zombie.pid) is in process group \(group), \(reason)")
                }
            }
        }
        refused += groupRefusals(images, zombies: found)
        refused += sharedContextRefusals(&images)
        refused += TreeLayout.sharedMemory(images).1
        refused += pidfdRefusals(&images)
        for k in images.indices.dropFirst() {
            findCopyOnWrite(&images, of: k)
            findInherited(&images, of: k)
            findDeletedFiles(&images, of: k)
            refused += findMemoryFiles(&images, of: k)
        }
        refused += SocketLayout(images).refusals
        refused += signalOwnerRefusals(images)
        refused += sharedLeaseRefusals(images)
        refused += terminalRefusals(&images, terminals: Dictionary(stats.map { ($0.pid, $0.terminal) }) { a, _ in a })
        return refused
    }

    /// A pseudo-terminal of the tree that is a controlling terminal is made one again by its
    /// session leader (TIOCSCTTY) once its processes exist: refused where that would not be
    /// the same, that is where a process other than the leader has it (it got it by fork from the
    /// leader, which a restart cannot redo: its processes are forked first), where the leader is
    /// not checkpointed, or where the foreground group is none of the tree's. The leader's
    /// descriptors of /dev/tty become descriptors of that pty, opened by that name again.
    static func terminalRefusals(_ images: inout [ProcessImage], terminals: [Int32: UInt32]) -> [String] {
        var states: [Int32: ProcessImage.Descriptor.PseudoTerminal.State] = [:]
        for image in images {
            for descriptor in image.descriptors where descriptor.kind == .ptyMaster {
                if let pty = descriptor.pty, let state = pty.state { states[pty.index] = state }
            }
        }
        let groups = Set(images.compactMap { $0.position?.processGroup })
        var refused: [String] = []
        for (k, image) in images.enumerated() {
            guard let number = terminals[image.pid], let index = PseudoTerminalCapture.controllingIndex(number),
                let state = states[index]
            else { continue }
            let who = image.pid == images.first?.pid ? "" : "process \(image.pid): "
            guard state.session == image.pid, image.position?.session == image.pid else {
                refused.append(
                    who + "its controlling terminal /dev/pts/\(index) (a pty the checkpoint holds) is its session's, "
                        + "which it does not lead: a restart makes it the controlling terminal of the session leader "
                        + "only")
                continue
            }
            for d in image.descriptors.indices where image.descriptors[d].target == "/dev/tty" {
                images[k].descriptors[d].kind = .ptySlave
                images[k].descriptors[d].pty = .init(index: index, controlling: true)
            }
        }
        for (index, state) in states.sorted(by: { $0.key < $1.key }) {
            guard let session = state.session else { continue }
            let leader = images.first { $0.pid == session }
            if leader == nil || terminals[session].flatMap(PseudoTerminalCapture.controllingIndex) != index {
                refused.append(
                    "/dev/pts/\(index) is the controlling terminal of session \(session), whose leader is not one "
                        + "of the processes checkpointed with it: not restored")
            }
            if let group = state.foregroundGroup, !groups.contains(group) {
                refused.append(
                    "/dev/pts/\(index): its foreground process group \(group) is none of the checkpointed processes': "
                        + "not restored")
            }
        }
        return refused
    }

    /// A lease on an open file that several processes of the tree share: its break signal names
    /// the descriptor of the process that took it, which is not known.
    static func sharedLeaseRefusals(_ images: [ProcessImage]) -> [String] {
        images.flatMap { image in
            image.descriptors.compactMap { descriptor in
                guard let lease = descriptor.lease, let earlier = descriptor.inherited else { return nil }
                return "process \(image.pid) fd \(descriptor.fd): a \(lease) lease on \(descriptor.target), an open "
                    + "file process \(earlier.pid) has too (fd \(earlier.fd)): which one took it is not known"
            }
        }
    }

    /// An open file's I/O signals go to a process, thread or group a restart gives back: one
    /// of the tree's (a pid of another process would be anyone's after a restart).
    static func signalOwnerRefusals(_ images: [ProcessImage]) -> [String] {
        let pids = Set(images.map(\.pid))
        let threads = Set(images.flatMap { $0.threads.map(\.tid) })
        let groups = Set(images.compactMap { $0.position?.processGroup })
        var refused: [String] = []
        for image in images {
            for descriptor in image.descriptors where descriptor.duplicateOf == nil {
                guard let owner = descriptor.signalOwner, owner.pid > 0 else { continue }
                let known =
                    owner.type == 2
                    ? groups.contains(owner.pid)
                    : owner.type == 0 ? threads.contains(owner.pid) : pids.contains(owner.pid)
                guard !known else { continue }
                let whom = owner.type == 2 ? "process group" : owner.type == 0 ? "thread" : "pid"
                refused.append(
                    (image.pid == images.first?.pid ? "" : "process \(image.pid): ")
                        + "fd \(descriptor.fd): \(descriptor.target): its I/O signals go to \(whom) \(owner.pid), "
                        + "outside the checkpointed tree (F_SETOWN): a restart cannot give them to it")
            }
        }
        return refused
    }

    /// A pidfd is made again by pidfd_open of the process it refers to, which must be one of
    /// the tree restarted (itself, a child...). One of any other process, or of a zombie (made
    /// after the descriptors), is refused; under --skip-unsupported it is left out.
    static func pidfdRefusals(_ images: inout [ProcessImage]) -> [String] {
        let pids = Set(images.map(\.pid))
        var refused: [String] = []
        for k in images.indices {
            for d in images[k].descriptors.indices {
                guard case .pidfd(let pid) = images[k].descriptors[d].event, !pids.contains(pid) else { continue }
                let descriptor = images[k].descriptors[d]
                refused.append(
                    (k == 0 ? "" : "process \(images[k].pid): ")
                        + "fd \(descriptor.fd): a pidfd of process \(pid), which is not one of the processes "
                        + "checkpointed (checkpoint its tree with it, if it is a descendant): not restored")
                images[k].descriptors[d].kind = .unsupported
                images[k].descriptors[d].event = nil
            }
        }
        return refused
    }

    /// A restart recreates sessions and process groups by setsid and setpgid in the processes
    /// themselves, each inheriting its parent's otherwise: a process whose group or session is
    /// led by a process outside the tree that its parent is not in cannot be put back there.
    static func groupRefusals(_ images: [ProcessImage], zombies: [ProcessImage.Zombie] = []) -> [String] {
        var refused: [String] = []
        let byPid = Dictionary(images.map { ($0.pid, $0) }, uniquingKeysWith: { first, _ in first })
        for image in images.dropFirst() {
            guard let position = image.position, let parent = byPid[position.parent]?.position else { continue }
            let who = "process \(image.pid)"
            if position.session != image.pid && position.session != parent.session {
                refused.append(
                    "\(who) is in session \(position.session), which it does not lead and its parent "
                        + "\(position.parent) is not in: such a session cannot be joined again")
            }
            let group = position.processGroup
            if group == image.pid || group == parent.processGroup { continue }
            if let leader = byPid[group]?.position, leader.processGroup == group, leader.session == position.session {
                continue  // joins a group another process of the tree leads
            }
            if let reason = unledGroupRefusal(group, images: images, zombies: zombies) {
                refused.append("\(who) is in process group \(group), \(reason)")
            }
        }
        return refused
    }

    /// Why process group `group`, which no process of the tree leads, cannot be made again for
    /// a process or zombie of the tree that its parent does not take there; nil when it can: its
    /// leader has exited (pid `group` is no process now: the kernel keeps a group's number while
    /// the group lives, so it names no other), and a restart makes it with a keeper process of
    /// that pid that exits once its members are in it (`TreeLayout.groupKeepers`).
    static func unledGroupRefusal(
        _ group: Int32, images: [ProcessImage], zombies: [ProcessImage.Zombie],
        exists: (Int32) -> Bool = { (try? ProcFS.stat($0)) != nil }
    ) -> String? {
        if group == images.first?.position?.processGroup {
            return "the group of process \(images[0].pid), which does not lead it: that one restarts in ld-chpox's "
                + "group, and its group cannot be made again"
        }
        if zombies.contains(where: { $0.pid == group }) {
            return "whose leader \(group) is a zombie of the tree: a restart cannot make its group again"
        }
        if exists(group) {
            return "whose leader \(group) is not one of the checkpointed processes: such a group cannot be joined "
                + "again (checkpoint the tree that holds its leader)"
        }
        return nil
    }

    /// Processes made by clone(2) with CLONE_VM, CLONE_FS or CLONE_SIGHAND (not threads) share
    /// one memory, cwd and umask, or signal handlers; a restart would give each its own:
    /// refused. A descriptor table shared (CLONE_FILES) is recorded on the later process
    /// (`TreePosition.descriptorTableOf`: the first process with that table), which a restart
    /// forks sharing it again; the shapes it cannot make so are refused
    /// (`TreeLayout.descriptorTableRefusals`).
    static func sharedContextRefusals(_ images: inout [ProcessImage]) -> [String] {
        var refused: [String] = []
        for k in images.indices {
            let image = images[k]
            for object in ProcessDescriptor.SharedObject.allCases {
                guard
                    let earlier = images[..<k].first(where: {
                        (try? ProcessDescriptor.share(object, $0.pid, image.pid)) == true
                    })
                else { continue }
                if object == .descriptorTable, images[k].position != nil {
                    images[k].position?.descriptorTableOf = earlier.pid
                    continue
                }
                refused.append(
                    "process \(image.pid) shares its \(object.words) with process \(earlier.pid) "
                        + "(clone \(object.cloneFlag)): a restart would give each its own")
            }
        }
        return refused + TreeLayout.descriptorTableRefusals(images)
    }

    /// Marks the deleted files process `k` has open (its own open files of them) that an earlier
    /// process has open too: one file, recreated once, by the earliest.
    static func findDeletedFiles(_ images: inout [ProcessImage], of k: Int) {
        func identity(_ pid: Int32, _ fd: Int32) -> String? {
            ImageCapture.openFileStatus(pid, fd).map { "\($0.device):\($0.inode)" }
        }
        let pid = images[k].pid
        for d in images[k].descriptors.indices {
            let descriptor = images[k].descriptors[d]
            guard descriptor.kind.isDeletedFile, descriptor.inherited == nil, descriptor.deletedFile == nil,
                let mine = identity(pid, descriptor.fd)
            else { continue }
            search: for earlier in images[..<k] {
                for other in earlier.descriptors
                where other.kind.isDeletedFile && other.inherited == nil && other.deletedFileOf == nil
                    && other.deletedFile == nil && identity(earlier.pid, other.fd) == mine
                {
                    images[k].descriptors[d].deletedFileOf = .init(pid: earlier.pid, fd: other.fd)
                    images[k].descriptors[d].contents = nil
                    break search
                }
            }
        }
    }

    /// Marks the memory files of process `k` that an earlier process holds too (one object,
    /// made once, by the earliest: `MemoryFile.sameAs`), and refuses shared memory that one
    /// process holds as a memory file and another maps only as plain shared memory where the
    /// restart could not make them one object again.
    static func findMemoryFiles(_ images: inout [ProcessImage], of k: Int) -> [String] {
        var refused: [String] = []
        let key = { (file: ProcessImage.MemoryFile) in "\(file.device):\(file.inode)" }
        for j in (images[k].memoryFiles ?? []).indices {
            let file = images[k].memoryFiles?[j]
            guard let file else { continue }
            var held: ProcessImage.MemoryFile.Held?
            search: for earlier in images[..<k] {
                for (index, other) in (earlier.memoryFiles ?? []).enumerated()
                where other.sameAs == nil && key(other) == key(file) {
                    held = .init(pid: earlier.pid, index: index)
                    break search
                }
            }
            if let held {
                images[k].memoryFiles?[j].sameAs = held
                images[k].memoryFiles?[j].contents = Data()
                images[k].memoryFiles?[j].dataRanges = []
                continue
            }
            // An earlier process maps it as plain shared memory (no descriptor of it there):
            // that process would make its own object first.
            if let earlier = images[..<k].first(where: { image in
                image.mappings.contains { $0.backing == .sharedAnonymous && "\($0.device):\($0.inode)" == key(file) }
            }) {
                refused.append(
                    "process \(images[k].pid) holds \(file.what) (inode \(file.inode)) by a descriptor that process "
                        + "\(earlier.pid) maps without one: a restart cannot make them one object again")
            }
        }
        // A later process maps plain shared memory that an earlier one holds as a memory file
        // it does not map shared (the later one maps the earlier's shared mapping of it).
        for mapping in images[k].mappings where mapping.backing == .sharedAnonymous {
            let mine = "\(mapping.device):\(mapping.inode)"
            for earlier in images[..<k] {
                guard let file = earlier.memoryFiles?.first(where: { key($0) == mine }) else { continue }
                let mapsIt = earlier.mappings.contains {
                    $0.backing == .memoryFile && $0.protection.contains(.shared) && "\($0.device):\($0.inode)" == mine
                }
                if !mapsIt {
                    refused.append(
                        "process \(images[k].pid) maps \(file.what) (inode \(file.inode)) at "
                            + "0x\(String(mapping.start, radix: 16)) that process \(earlier.pid) holds only by a "
                            + "descriptor: a restart cannot make them one object again")
                }
                break
            }
        }
        return refused
    }

    /// Records the pages process `k` shares copy-on-write with its parent (`copyOnWrite`): in
    /// its private mappings that a fork of the parent leaves (`Mapping.isForkCopy`), each
    /// anonymous page present (or swapped) in both at the same address with the same page frame
    /// (or swap slot). Page frames show to root alone (CAP_SYS_ADMIN); elsewhere none is seen,
    /// and a restart gives each process its own copy, as before.
    static func findCopyOnWrite(_ images: inout [ProcessImage], of k: Int) {
        let child = images[k]
        guard let parentPid = child.position?.parent, let parent = images.first(where: { $0.pid == parentPid }),
            let own = try? Pagemap(pid: child.pid), let theirs = try? Pagemap(pid: parent.pid)
        else { return }
        var runs: [[UInt64]] = []
        for mapping in child.mappings where parent.mappings.contains(where: { mapping.isForkCopy(of: $0) }) {
            var address = mapping.start
            while address < mapping.end {
                let count = Int(min(Page.count(of: mapping.end - address), 1 << 16))
                guard let mine = try? own.entries(from: address, count: count),
                    let other = try? theirs.entries(from: address, count: count), mine.count == count,
                    other.count == count
                else { break }
                for i in 0..<count where sharesFrame(mine[i], other[i]) {
                    let page = address + UInt64(i * Page.size)
                    if let last = runs.last, last[1] == page {
                        runs[runs.count - 1][1] = page + UInt64(Page.size)
                    } else {
                        runs.append([page, page + UInt64(Page.size)])
                    }
                }
                address += UInt64(count * Page.size)
            }
        }
        images[k].copyOnWrite = runs.isEmpty ? nil : runs
    }

    /// Whether two pagemap entries are one anonymous page: present or swapped in both, with the
    /// same frame (swap slot), not a file's page (bit 61), a frame root alone sees (non-zero).
    static func sharesFrame(_ a: UInt64, _ b: UInt64) -> Bool {
        let kind = PagemapBit.present | PagemapBit.swapped | PagemapBit.fileOrShared
        return a & kind == b & kind && a & (PagemapBit.present | PagemapBit.swapped) != 0
            && a & PagemapBit.fileOrShared == 0 && a & PagemapBit.frameMask != 0
            && a & PagemapBit.frameMask == b & PagemapBit.frameMask
    }

    /// Marks the descriptors of process `k` whose open file description an earlier process
    /// has open too (a fork's inheritance: one offset, one set of status flags), naming the
    /// earliest such descriptor.
    static func findInherited(_ images: inout [ProcessImage], of k: Int) {
        let pid = images[k].pid
        for d in images[k].descriptors.indices {
            let descriptor = images[k].descriptors[d]
            search: for earlier in images[..<k] {
                for other in earlier.descriptors where other.target == descriptor.target && other.inherited == nil {
                    if (try? ProcessDescriptor.shareOpenFile(earlier.pid, other.fd, pid, descriptor.fd)) == true {
                        images[k].descriptors[d].inherited = .init(pid: earlier.pid, fd: other.fd)
                        break search
                    }
                }
            }
        }
    }
}
