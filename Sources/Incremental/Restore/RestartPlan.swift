#if canImport(Glibc)
import Glibc
#endif
import Store

/// What a restart will do, decided from the image alone, before any process exists: the checks
/// that may refuse it, then for each process to create the phases that rebuild it, in order.
/// `ld-chpox` runs it (`Restorer.restart`); tests build and read it without a live process.
///
/// A plan holds one `ProcessPlan` per process of the image's tree, parents before their
/// children (`parent` names the one that forks it). Each process is created in that order,
/// forked by its parent's stub once the parent's memory is rebuilt, and rebuilds its own memory
/// at once (its first phases, up to `ProcessPlan.inStep`): so it starts with its parent's
/// memory and keeps the pages it shared copy-on-write, as fork left them. Then the other
/// phases run in step: phase k of every process, in order, before phase k+1 of any. So what
/// one process creates for others (a pipe between two of them, an open file they share) exists
/// when a later process's phase takes it (`TreeLayout` decides who creates what).
public struct RestartPlan: Sendable {
    /// Refusals and the files to cut back, checked before a stub is started.
    public var preflight: Preflight
    /// Who forks whom, sessions and groups, and who creates each shared pipe.
    public var layout: TreeLayout
    /// The processes to create, each before the ones it is parent of.
    public var processes: [ProcessPlan]
    /// Children that had exited unreaped: recreated as zombies once their parents exist.
    public var zombies: [ProcessImage.Zombie]

    /// `lazy`: a process that is not forked within the restart and forks no other of the tree
    /// (a single process) has its anonymous memory filled by a page server as it runs
    /// (`ld-chpox --lazy`). A tree is filled whole: a parent's children start with its memory,
    /// and a child forked so holds its parent's pages where its own must be written over them
    /// (a userfaultfd only fills missing pages: lazily it would keep its parent's bytes).
    public init(image: ProcessImage, generation: UInt64, lazy: Bool = false) {
        preflight = Preflight(image: image, generation: generation)
        let layout = TreeLayout(image: image)
        self.layout = layout
        let parents = Set(layout.parents.values)
        processes = image.processes.map {
            ProcessPlan(
                image: $0, layout: layout, lazy: lazy && !parents.contains($0.pid) && layout.parents[$0.pid] == nil)
        }
        zombies = image.zombies ?? []
    }

    /// Every step, one line each, process by process: what `ld-chpox` will create, in order.
    public var steps: [String] {
        var lines: [String] = []
        for process in processes {
            lines.append(
                "process \(process.pid)"
                    + (process.parent.map { " (forked by \($0) once its memory is rebuilt)" } ?? "")
                    + (process.descriptorTableOf.map { ", sharing the descriptor table of \($0)" } ?? "")
                    + (process.groupsNote.map { ", \($0)" } ?? "") + (process.stopped ? ", left stopped" : ""))
            for phase in process.phases {
                lines.append("  " + phase.name)
                lines += phase.steps.map { "    " + $0 }
            }
        }
        for (group, forker) in layout.groupKeepers.sorted(by: { $0.key < $1.key }) {
            lines.append(
                "process group \(group) (its leader had exited): made by a keeper process \(group) forked by "
                    + "\(forker), which exits once its members are in it")
        }
        for zombie in zombies {
            lines.append(
                "zombie \(zombie.pid) (forked by \(zombie.parent)): "
                    + (zombie.status & 0x7f == 0
                        ? "exits with code \((zombie.status >> 8) & 0xff)" : "killed by signal \(zombie.status & 0x7f)")
            )
        }
        return lines
    }
}

/// One process of a restart: the stub that becomes it, and the phases that rebuild it there.
public struct ProcessPlan: Sendable {
    /// The pid it had (and is given again where free).
    public var pid: Int32
    /// The process of the plan that creates it; nil for the one ld-chpox starts.
    public var parent: Int32?
    /// How it gets its session and process group once created.
    public var groups: TreeLayout.Groups
    /// The address space of the page map holding its pages.
    public var space: UInt64
    /// Sent `stopSignal` as it is let go: it was stopped.
    public var stopped: Bool
    public var stopSignal: Int32
    /// The process whose descriptor table it shares (forked sharing it: `TreeLayout.descriptorTables`).
    public var descriptorTableOf: Int32?
    public var phases: [any RestartPhase]
    /// The phases before this one (its login uid, file access, memory layout and page fill)
    /// it runs alone as soon as it is forked, before it forks its children; the others run in
    /// step with the other processes'.
    public var inStep: Int { (phases.firstIndex { $0 is PageFillPhase } ?? -1) + 1 }

    public init(image: ProcessImage, layout: TreeLayout? = nil, lazy: Bool = false) {
        pid = image.pid
        parent = layout?.parents[image.pid]
        groups = layout?.groups[image.pid] ?? .inherited
        space = image.space
        stopped = image.position?.stopped ?? false
        stopSignal = image.position?.stopSignal ?? SIGSTOP
        let tableOf = layout?.descriptorTables[image.pid]
        descriptorTableOf = tableOf
        // What it shares with an earlier process is taken from that one, after every process
        // made its own (`SharedDescriptorPhase`); the other phases see only its own. A process
        // that shares another's whole table has none of its own: that one makes them all,
        // and this one sees them (and must not touch them: it would change the other's too).
        var own = image
        own.descriptors = image.descriptors.filter { $0.inherited == nil && tableOf == nil }
        var shared = image
        if tableOf != nil { shared.descriptors = [] }
        phases = [
            LoginPhase(image: image),
            FileAccessPhase(image: image),
            MemoryLayoutPhase(image: image, layout: layout),
            PageFillPhase(image: image, lazy: lazy),
            AioContextPhase(image: image),
            DescriptorPhase(image: own, layout: layout, tableOf: tableOf),
            SocketPhase(image: own, layout: layout),
            PseudoTerminalPhase(image: own, layout: layout),
            InetSocketPhase(image: own),
            FileLockPhase(image: own),
            EventDescriptorPhase(image: own),
            SharedDescriptorPhase(image: shared),
            SignalOwnerPhase(image: own),
            TcpResumePhase(image: own),
            MemoryDescriptorPhase(image: image),
            ThreadPhase(image: image),
            SignalPhase(image: image),
            RootDirectoryPhase(image: image),
            SeccompPhase(image: image),
            CredentialsPhase(image: image),
            SchedulingPhase(image: image),
            CapabilitiesPhase(image: image),
            WrittenFilesPhase(image: own),
            RecordLockPhase(image: image),
            ProcessControlsPhase(image: image),
            TimerPhase(image: image),
            RegistersPhase(image: image),
        ]
    }

    /// Its session or group, in words; nil when it inherits its parent's.
    var groupsNote: String? {
        switch groups {
        case .inherited: return nil
        case .newSession: return "leads a new session"
        case .ownGroup: return "leads a process group"
        case .join(let leader): return "joins process group \(leader)"
        }
    }

    /// The phase of type `P`, for a reader of the plan.
    public func phase<P: RestartPhase>(_ type: P.Type) -> P? {
        phases.lazy.compactMap { $0 as? P }.first
    }
}

/// One phase of rebuilding a process in its stub. Its decisions are made from the image when
/// it is created; `run` carries them out by system calls inside the stub.
public protocol RestartPhase: Sendable {
    /// What the phase is, in a few words.
    var name: String { get }
    /// What it will create or set, one line each, in order.
    var steps: [String] { get }
    func run(in session: RestartSession) throws
}
