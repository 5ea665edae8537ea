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
        var space = addressSpace
        if let running = session.runningVDSO { space.auxv = Self.auxv(space.auxv, vdsoAt: running) }
        let exe = try session.openRecorded(
            executable, flags: O_RDONLY | O_CLOEXEC, to: "open the executable \(executable)")
        defer { _ = try? calls.result(of: .close, exe) }
        try calls.withFrame { [space] () throws(TraceeError) in
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

    /// The auxiliary vector type of the vDSO's address (AT_SYSINFO_EHDR).
    static let sysinfoHeader: UInt64 = 33

    /// `auxv` (type, value words) with AT_SYSINFO_EHDR set to `start`: where the image's vDSO is
    /// a proxy, what looks the vDSO up from now on (getauxval, a dlopened library) finds the
    /// running kernel's.
    static func auxv(_ auxv: [UInt64], vdsoAt start: UInt64) -> [UInt64] {
        var auxv = auxv
        for k in stride(from: 0, to: auxv.count - 1, by: 2) where auxv[k] == sysinfoHeader { auxv[k + 1] = start }
        return auxv
    }
}
