import Store

/// What a restart will do, decided from the image alone, before any process exists: the checks
/// that may refuse it, then for each process to create the phases that rebuild it, in order.
/// `ld-chpox` runs it (`Restorer.restart`); tests build and read it without a live process.
///
/// Today a plan holds one process. Process trees add one `ProcessPlan` per process, parents
/// before their children (`parent` names the one that forks it), and objects several processes
/// share (a pipe between two of them) become phases of the process that creates them, with the
/// others receiving them in their own descriptor phase.
public struct RestartPlan: Sendable {
    /// Refusals and the files to cut back, checked before a stub is started.
    public var preflight: Preflight
    /// The processes to create, each before the ones it is parent of.
    public var processes: [ProcessPlan]

    public init(image: ProcessImage, generation: UInt64) {
        preflight = Preflight(image: image, generation: generation)
        processes = [ProcessPlan(image: image)]
    }

    /// Every step, one line each, process by process: what `ld-chpox` will create, in order.
    public var steps: [String] {
        var lines: [String] = []
        for process in processes {
            lines.append("process \(process.pid)" + (process.parent.map { " (child of \($0))" } ?? ""))
            for phase in process.phases {
                lines.append("  " + phase.name)
                lines += phase.steps.map { "    " + $0 }
            }
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
    public var phases: [any RestartPhase]

    public init(image: ProcessImage, parent: Int32? = nil) {
        pid = image.pid
        self.parent = parent
        phases = [
            LoginPhase(image: image),
            FileAccessPhase(image: image),
            MemoryLayoutPhase(image: image),
            PageFillPhase(image: image),
            DescriptorPhase(image: image),
            SocketPhase(image: image),
            FileLockPhase(image: image),
            EventDescriptorPhase(image: image),
            MemoryDescriptorPhase(image: image),
            ThreadPhase(image: image),
            SignalPhase(image: image),
            CredentialsPhase(image: image),
            WrittenFilesPhase(image: image),
            ProcessControlsPhase(image: image),
            RegistersPhase(image: image),
        ]
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
