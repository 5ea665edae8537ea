/// How the processes of an image are created and what they share, decided from the images
/// alone: who forks whom, which session and process group each one makes or joins, and which
/// process creates each pipe that several of them have ends of.
public struct TreeLayout: Sendable {
    /// How a process gets its session and process group once created (before it forks its own
    /// children, which inherit them).
    public enum Groups: Sendable, Equatable {
        /// Its parent's (for the first process: ld-chpox's).
        case inherited
        /// setsid(): it led its session (and so its group).
        case newSession
        /// setpgid(0, 0): it led its process group.
        case ownGroup
        /// setpgid(0, leader), once every process exists: a group another process leads.
        case join(leader: Int32)
    }

    /// The process `cpx` was given, which ld-chpox starts (the others are forked).
    public var first: Int32?
    /// Each process's parent in the tree (absent for the first one).
    public var parents: [Int32: Int32] = [:]
    public var groups: [Int32: Groups] = [:]
    /// The process that creates each pipe: the first with a descriptor of it.
    public var pipeCreators: [UInt64: Int32] = [:]
    /// Pipes more than one process opens ends of.
    public var sharedPipes: Set<UInt64> = []
    /// The processes that open ends of each pipe themselves (not inherited from an earlier one).
    public var pipeEnds: [UInt64: Set<Int32>] = [:]
    /// Shared anonymous memory (MAP_SHARED, shmem) that process and address map from another
    /// process's mapping of the same object.
    public var sharedMemory: [Int32: [UInt64: SharedMemory]] = [:]
    /// Which process makes each UNIX socket.
    public var sockets: SocketLayout
    /// Which process makes each pseudo-terminal pair.
    public var terminals: PseudoTerminalLayout
    /// Process groups whose leader had exited (the group lived on in its other members, live
    /// or zombies), and the process that forks a keeper for each: a process with the group's
    /// pid that makes the group (setpgid) and leads it while its members are put in it, then
    /// exits and is reaped, so that the group lives on without its leader as it did.
    public var groupKeepers: [Int32: Int32] = [:]
    /// The processes that share an earlier one's descriptor table (CLONE_FILES), and that one
    /// (`TreePosition.descriptorTableOf`): each is forked by its parent sharing the parent's
    /// table, which is that table, and makes none of its descriptors.
    public var descriptorTables: [Int32: Int32] = [:]

    /// The mappings each process keeps from its parent as fork left them ([start, end)): those
    /// holding pages it shared copy-on-write with the parent (`ProcessImage.copyOnWrite`), each
    /// a fork's copy of one of the parent's (`Mapping.isForkCopy`). Every process is forked by
    /// its parent once the parent's memory is rebuilt (`Restorer.restart`); it keeps these
    /// instead of mapping them anew, and with them the pages it shared (`MemoryLayoutPhase`).
    public var inheritedMappings: [Int32: [Range<UInt64>]] = [:]

    /// A mapping of shared memory another process of the tree creates.
    public struct SharedMemory: Sendable, Equatable {
        /// The process whose mapping creates the object, and where.
        public var creator: Int32
        public var start: UInt64, end: UInt64
        /// Where this mapping starts in the object the creator's mapping makes.
        public var offset: UInt64
    }

    public init(image: ProcessImage) {
        let processes = image.processes
        sockets = SocketLayout(processes)
        terminals = PseudoTerminalLayout(processes)
        first = processes.first?.pid
        let byPid = Dictionary(processes.map { ($0.pid, $0) }, uniquingKeysWith: { first, _ in first })
        (sharedMemory, _) = Self.sharedMemory(processes)
        for (k, process) in processes.enumerated() {
            guard let position = process.position else {
                groups[process.pid] = .inherited
                continue
            }
            if k > 0 { parents[process.pid] = position.parent }
            if k > 0, let table = position.descriptorTableOf { descriptorTables[process.pid] = table }
            let parentGroup = k > 0 ? byPid[position.parent]?.position?.processGroup : nil
            if position.session == process.pid {
                groups[process.pid] = .newSession
            } else if position.processGroup == process.pid {
                groups[process.pid] = .ownGroup
            } else if k > 0, position.processGroup == parentGroup, case .join(let leader) = groups[position.parent] {
                // Its parent joins its group only once every process exists, after forking it.
                groups[process.pid] = .join(leader: leader)
            } else if k == 0 || position.processGroup == parentGroup {
                groups[process.pid] = .inherited
            } else {
                groups[process.pid] = .join(leader: position.processGroup)
            }
            for descriptor in process.descriptors where descriptor.inherited == nil {
                guard let inode = descriptor.pipe?.inode else { continue }
                pipeEnds[inode, default: []].insert(process.pid)
                if let creator = pipeCreators[inode] {
                    if creator != process.pid { sharedPipes.insert(inode) }
                } else {
                    pipeCreators[inode] = process.pid
                }
            }
        }
        groupKeepers = Self.groupKeepers(processes, zombies: image.zombies ?? [], groups: groups)
        for process in processes.dropFirst() {
            guard let runs = process.copyOnWrite, let parent = process.position.flatMap({ byPid[$0.parent] })
            else { continue }
            let kept = process.mappings.filter { mapping in
                parent.mappings.contains { mapping.isForkCopy(of: $0) }
                    && runs.contains { $0.count == 2 && $0[0] < mapping.end && mapping.start < $0[1] }
            }
            if !kept.isEmpty { inheritedMappings[process.pid] = kept.map { $0.start..<$0.end } }
        }
    }

    /// Why the descriptor tables `processes` share (`TreePosition.descriptorTableOf`) cannot be
    /// shared again, one line each; empty when they can. A restart makes a shared table only by
    /// forking a process from its parent with CLONE_FILES: the parent must have that table
    /// (be the process it names, or share it too). And a process that shares a table keeps no
    /// descriptors of its own while its memory is made (deleted files its private mappings
    /// hold, memory files): those would take the numbers of the other's in the one table.
    public static func descriptorTableRefusals(_ processes: [ProcessImage]) -> [String] {
        var refused: [String] = []
        let byPid = Dictionary(processes.map { ($0.pid, $0) }, uniquingKeysWith: { first, _ in first })
        for (k, process) in processes.enumerated() {
            guard let table = process.position?.descriptorTableOf else { continue }
            let shares = "process \(process.pid) shares its descriptor table with process \(table) (clone CLONE_FILES)"
            guard k > 0, let parent = process.position?.parent else {
                refused.append("\(shares), a process outside the tree: a restart would give it its own")
                continue
            }
            guard let owner = byPid[table], owner.position?.descriptorTableOf == nil,
                processes[..<k].contains(where: { $0.pid == table })
            else {
                refused.append("\(shares), which is not an earlier process of the tree with a table of its own")
                continue
            }
            let parentTable = parent == table ? table : byPid[parent]?.position?.descriptorTableOf
            if parentTable != table {
                refused.append(
                    "\(shares) but not with its parent \(parent): a restart shares a table only by forking with "
                        + "CLONE_FILES from a process that has it, and would give it its own")
            }
            if !(process.deletedFiles ?? []).isEmpty || !(process.memoryFiles ?? []).isEmpty {
                refused.append(
                    "\(shares) and holds deleted files or memory files (memfd, shared memory by a descriptor): "
                        + "a restart keeps those at descriptors of its own while its memory is made, which would "
                        + "take the numbers of the other's in the one table")
            }
        }
        return refused
    }

    /// The groups of `processes` and `zombies` that none of them leads (`groupKeepers`), each
    /// with the parent of its first member: a process in the group's session.
    static func groupKeepers(
        _ processes: [ProcessImage], zombies: [ProcessImage.Zombie], groups: [Int32: Groups]
    ) -> [Int32: Int32] {
        // The first process runs in ld-chpox's group, not its saved one: none is made for that.
        let pids = Set(processes.map(\.pid) + zombies.map(\.pid) + [processes.first?.position?.processGroup ?? 0])
        let byPid = Dictionary(processes.map { ($0.pid, $0) }, uniquingKeysWith: { first, _ in first })
        var keepers: [Int32: Int32] = [:]
        for process in processes.dropFirst() {
            guard case .join(let leader) = groups[process.pid], !pids.contains(leader),
                let parent = process.position?.parent
            else { continue }
            if keepers[leader] == nil { keepers[leader] = parent }
        }
        for zombie in zombies {
            guard let group = zombie.processGroup, group != zombie.pid, zombie.session != zombie.pid,
                !pids.contains(group), let parent = byPid[zombie.parent]?.position, group != parent.processGroup
            else { continue }
            if keepers[group] == nil { keepers[group] = zombie.parent }
        }
        return keepers
    }

    /// Which mappings of shared anonymous memory map another process's (the first to map the
    /// object, by device and inode, creates it), and a line for each one that cannot be mapped
    /// from it (it reaches beyond the first process's mapping of the object).
    static func sharedMemory(_ processes: [ProcessImage]) -> ([Int32: [UInt64: SharedMemory]], [String]) {
        var creators: [String: (pid: Int32, mapping: ProcessImage.Mapping)] = [:]
        var shared: [Int32: [UInt64: SharedMemory]] = [:]
        var refused: [String] = []
        for process in processes {
            // A shared mapping of a memory file makes its object for the plain shared memory
            // mappings of later processes too (their processes hold no descriptor of it).
            let memoryFile = { (mapping: ProcessImage.Mapping) in
                mapping.backing == .memoryFile && mapping.protection.contains(.shared)
            }
            for mapping in process.mappings where mapping.backing == .sharedAnonymous || memoryFile(mapping) {
                let key = "\(mapping.device):\(mapping.inode)"
                guard let creator = creators[key] else {
                    creators[key] = (process.pid, mapping)
                    continue
                }
                guard !memoryFile(mapping) else { continue }  // its process has the object itself
                guard creator.pid != process.pid else { continue }  // one process mapping it twice: two objects
                let first = creator.mapping
                let size = mapping.end - mapping.start
                guard mapping.offset >= first.offset, mapping.offset + size <= first.offset + (first.end - first.start)
                else {
                    refused.append(
                        "process \(process.pid) maps shared memory (MAP_SHARED at 0x\(String(mapping.start, radix: 16))) "
                            + "beyond what process \(creator.pid) maps of it: it cannot be shared again")
                    continue
                }
                shared[process.pid, default: [:]][mapping.start] = SharedMemory(
                    creator: creator.pid, start: first.start, end: first.end, offset: mapping.offset - first.offset)
            }
        }
        return (shared, refused)
    }

    /// The pipes process `pid` has ends of that another process creates (not every shared
    /// pipe of the tree: the others are none of its business, and it would wait for them).
    func foreignPipes(of pid: Int32) -> Set<UInt64> {
        Set(
            pipeCreators.filter {
                $0.value != pid && sharedPipes.contains($0.key) && pipeEnds[$0.key]?.contains(pid) == true
            }.keys)
    }

    /// The pipes process `pid` creates that other processes have ends of too.
    func exportedPipes(of pid: Int32) -> Set<UInt64> {
        Set(pipeCreators.filter { $0.value == pid && sharedPipes.contains($0.key) }.keys)
    }
}
