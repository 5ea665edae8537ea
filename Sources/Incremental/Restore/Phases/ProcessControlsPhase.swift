import CLinux
import Syscall
import Tracee

/// After the credentials, which clear the dumpable flag: oom_score_adj (written from outside),
/// then inside the process its membarrier registrations, THP-disable and child-subreaper flags,
/// and last the dumpable flag. Each is set only where it differs from what the stub has; one
/// the kernel refuses stops the restart with the reason.
public struct ProcessControlsPhase: RestartPhase {
    /// nil for an image from before they were kept: the stub keeps ld-chpox's.
    public var controls: ProcessImage.Controls?

    /// The MEMBARRIER_CMD_REGISTER_* commands (linux/membarrier.h) a restart makes again:
    /// GLOBAL_EXPEDITED, PRIVATE_EXPEDITED, PRIVATE_EXPEDITED_SYNC_CORE, PRIVATE_EXPEDITED_RSEQ.
    static let membarrierRegistrations: [Int32] = [1 << 2, 1 << 4, 1 << 6, 1 << 8]

    public var name: String { "process controls" }
    public var steps: [String] {
        guard let controls else { return [] }
        return ["oom_score_adj \(controls.oomScoreAdjust)"]
            + (controls.membarrierRegistrations != 0
                ? ["membarrier registrations 0x\(String(controls.membarrierRegistrations, radix: 16))"] : [])
            + (controls.transparentHugePagesDisabled ? ["transparent huge pages disabled"] : [])
            + (controls.childSubreaper ? ["child subreaper"] : [])
            + ["dumpable \(controls.dumpable)"]
    }

    public init(image: ProcessImage) { controls = image.controls }

    public func run(in session: RestartSession) throws {
        guard let controls else { return }
        let pid = session.pid, calls = session.calls
        try setOOMScoreAdjust(controls.oomScoreAdjust, pid: pid)
        let unknown = controls.membarrierRegistrations & ~Self.membarrierRegistrations.reduce(0, |)
        guard unknown == 0 else {
            throw TraceeError.unsupported(
                pid: pid, reason: "it made membarrier registrations 0x\(String(unknown, radix: 16)), unknown to chpox")
        }
        if controls.membarrierUnknown == true {
            session.notices.append(
                "membarrier registrations not restored: the kernel that checkpointed it (before Linux 6.3) "
                    + "could not list them")
        }
        for command in Self.membarrierRegistrations where controls.membarrierRegistrations & command != 0 {
            try calls.call(
                .membarrier, command, 0, 0, to: "make membarrier registration 0x\(String(command, radix: 16))")
        }
        if controls.transparentHugePagesDisabled {
            try calls.call(.prctl, CHPOX_PR_SET_THP_DISABLE, 1, 0, 0, 0, to: "disable transparent huge pages")
        }
        if controls.childSubreaper {
            try calls.call(.prctl, CHPOX_PR_SET_CHILD_SUBREAPER, 1, to: "make it a child subreaper")
        }
        guard try calls.call(.prctl, CHPOX_PR_GET_DUMPABLE, to: "read the dumpable flag") != controls.dumpable else {
            return
        }
        // 2 (root-only core dumps) is the kernel's to give, from fs.suid_dumpable, never prctl's.
        guard controls.dumpable == 0 || controls.dumpable == 1 else {
            throw TraceeError.unsupported(
                pid: pid, reason: "its dumpable flag was \(controls.dumpable), which prctl cannot set")
        }
        try calls.call(.prctl, CHPOX_PR_SET_DUMPABLE, controls.dumpable, to: "set the dumpable flag")
    }

    /// Written from outside; raising it needs no privilege, lowering it below what ld-chpox
    /// started with needs CAP_SYS_RESOURCE.
    func setOOMScoreAdjust(_ value: Int32, pid: Int32) throws {
        guard try ProcessControlsCapture.number(pid, "oom_score_adj") != Int64(value) else { return }
        let path = "/proc/\(pid)/oom_score_adj"
        do throws(Errno) {
            let file = try FileDescriptor.open(path, [.writeOnly])
            defer { file.close() }
            try Array("\(value)".utf8).withRawBytes { (raw) throws(Errno) in try file.writeAll(raw) }
        } catch {
            throw TraceeError.unsupported(
                pid: pid,
                reason: "cannot set its oom_score_adj to \(value): \(error)"
                    + (error == .permissionDenied
                        ? " (lowering it below ld-chpox's own needs CAP_SYS_RESOURCE: restart it with the privilege, "
                            + "or from a process whose oom_score_adj is not above \(value))" : ""))
        }
        let now = try ProcessControlsCapture.number(pid, "oom_score_adj")
        guard now == Int64(value) else {
            throw TraceeError.unsupported(pid: pid, reason: "its oom_score_adj is \(now) after setting it to \(value)")
        }
    }
}
