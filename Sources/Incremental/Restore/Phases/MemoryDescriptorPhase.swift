#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Tracee

/// The mm fields the kernel keeps for the process (`prctl(PR_SET_MM_MAP)`): code, data, brk,
/// stack, arguments, environment, the auxiliary vector and the executable (/proc/PID/exe).
public struct MemoryDescriptorPhase: RestartPhase {
    public var addressSpace: ProcessImage.AddressSpace
    public var executable: String

    public var name: String { "mm fields" }
    public var steps: [String] {
        [
            "brk 0x\(String(addressSpace.brk, radix: 16)), stack 0x\(String(addressSpace.startStack, radix: 16)), "
                + "\(addressSpace.auxv.count / 2) auxv entries, executable \(executable) (PR_SET_MM_MAP)"
        ]
    }

    public init(image: ProcessImage) {
        addressSpace = image.addressSpace
        executable = image.executable
    }

    public func run(in session: RestartSession) throws {
        let calls = session.calls
        let space = addressSpace
        let exe = try session.openRecorded(
            executable, flags: O_RDONLY | O_CLOEXEC, to: "open the executable \(executable)")
        defer { _ = try? calls.result(of: .close, exe) }
        try calls.withFrame { () throws(TraceeError) in
            let auxv = try calls.words(space.auxv)
            let layout = chpox_prctl_mm_map(
                start_code: space.startCode, end_code: space.endCode, start_data: space.startData,
                end_data: space.endData, start_brk: space.startBrk, brk: space.brk,
                start_stack: space.startStack, arg_start: space.argStart, arg_end: space.argEnd,
                env_start: space.envStart, env_end: space.envEnd, auxv: auxv,
                auxv_size: UInt32(space.auxv.count * 8), exe_fd: UInt32(exe))
            let at = try calls.value(layout)
            try calls.call(
                .prctl, CHPOX_PR_SET_MM, CHPOX_PR_SET_MM_MAP, at, MemoryLayout<chpox_prctl_mm_map>.size, 0,
                to: "set the memory descriptor (PR_SET_MM_MAP)")
        }
    }
}
