import CLinux
import Tracee

/// Last: the trampoline unmaps itself (the call returns to an unmapped page, but the thread
/// is stopped at its exit and never runs there), and the main thread gets its saved registers,
/// XSAVE area and signal mask. Nothing of the stub's is left.
public struct RegistersPhase: RestartPhase {
    public var main: ProcessImage.ThreadImage?
    /// The process's own parent-death signal, set where the stub's was (0: none).
    public var parentDeathSignal: Int32

    public var name: String { "registers" }
    public var steps: [String] {
        [
            parentDeathSignal == 0
                ? "clear the stub's parent-death signal" : "parent-death signal \(parentDeathSignal), not the stub's",
            "unmap the trampoline",
            main.map {
                "main thread: rip 0x\(String($0.registers.rip, radix: 16)), "
                    + "rsp 0x\(String($0.registers.rsp, radix: 16))"
            }
                ?? "no thread saved",
        ]
    }

    public init(image: ProcessImage) {
        main = image.threads.first
        parentDeathSignal = image.controls?.parentDeathSignal ?? 0
    }

    public func run(in session: RestartSession) throws {
        guard let main else { throw TraceeError.unsupported(pid: session.pid, reason: "the image has no thread") }
        // The stub dies with ld-chpox until here (PR_SET_PDEATHSIG); the restarted process
        // does not.
        try session.calls.call(
            .prctl, CHPOX_PR_SET_PDEATHSIG, parentDeathSignal, to: "set the parent-death signal to \(parentDeathSignal)"
        )
        if let trampoline = session.trampoline {
            _ = try session.calls.result(of: .munmap, trampoline.address, trampoline.size)
        }
        try session.process.restore(main.state, into: session.pid)
    }
}
