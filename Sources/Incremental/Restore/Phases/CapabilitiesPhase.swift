import CLinux
import Syscall
import Tracee

/// The process's capability sets as they were, on every thread: last of the phases that need
/// privilege, after the credentials (setresuid to a user other than root empties the permitted,
/// effective and ambient sets) and the scheduling (which may need CAP_SYS_NICE). Each thread
/// makes the calls itself, as capset acts on the calling thread: its inheritable set first
/// (while it may still hold CAP_SETPCAP), then the bounding set narrowed, the ambient set
/// raised, and the permitted and effective sets lowered to the image's.
///
/// It only ever takes away what the stub has, never grants: a set the restart cannot reach
/// from there (a permitted capability the stub lacks, a bounding set wider than ld-chpox's) is
/// refused with the reason. So an image gets no capability its user would not have under
/// the ids it restarts with, and those are at most its store owner's (`ImageAuthority`).
public struct CapabilitiesPhase: RestartPhase {
    /// nil in images from before they were kept: every thread keeps the stub's.
    public var capabilities: ProcessImage.Capabilities?

    public var name: String { "capabilities" }
    public var steps: [String] {
        (capabilities.map { ["every thread: " + $0.summary] } ?? [])
            + threadCapabilities.sorted { $0.key < $1.key }.map { "thread \($0.key): \($0.value.summary)" }
    }

    /// The sets of threads whose own differ from the process's, by their tid in the image.
    public var threadCapabilities: [Int32: ProcessImage.Capabilities]
    let pid: Int32

    public init(image: ProcessImage) {
        capabilities = image.credentials.capabilities
        pid = image.pid
        threadCapabilities = Dictionary(
            image.threads.compactMap { thread in thread.credentials?.capabilities.map { (thread.tid, $0) } },
            uniquingKeysWith: { first, _ in first })
    }

    public func run(in session: RestartSession) throws {
        for (saved, tid) in session.threadsBySavedID(main: pid) {
            guard let target = threadCapabilities[saved] ?? capabilities else { continue }
            try set(target, on: tid, session)
        }
    }

    /// Capability bit 8, which lets a thread narrow its bounding set and raise its inheritable one.
    static let setPCAP: UInt64 = 1 << 8

    private func set(_ target: ProcessImage.Capabilities, on tid: Int32, _ session: RestartSession) throws {
        let pid = session.pid, calls = session.calls
        var now = try Self.current(pid, thread: tid)
        guard now != target else { return }
        func refuse(_ reason: String) -> TraceeError {
            .unsupported(
                pid: pid, reason: "cannot give it its capabilities (\(target.summary)): " + reason)
        }
        let missing = target.permitted & ~now.permitted
        guard missing == 0 else {
            throw refuse(
                "it held \(Self.names(missing)), which the restart lacks (the stub holds permitted "
                    + "0x\(String(now.permitted, radix: 16)) as uid \(try ProcFS.status(pid).userIDs.first ?? 0)); "
                    + "a restart never grants a capability: restart it as root, or from a process that holds them")
        }
        let wider = target.bounding & ~now.bounding
        guard wider == 0 else {
            throw refuse(
                "its bounding set held \(Self.names(wider)), which ld-chpox's lacks: a bounding set only ever "
                    + "narrows; restart it from a process whose bounding set holds them")
        }
        if target.inheritable != now.inheritable {
            try capset(inheritable: target.inheritable, permitted: now.permitted, effective: now.effective, tid, calls)
            now = try Self.current(pid, thread: tid)
        }
        let dropped = now.bounding & ~target.bounding
        if dropped != 0 {
            guard now.effective & Self.setPCAP != 0 else {
                throw refuse(
                    "its bounding set lacked \(Self.names(dropped)), and narrowing the stub's needs CAP_SETPCAP, "
                        + "which it does not hold as the image's user: restart it as root")
            }
            for capability in Self.bits(dropped) {
                try calls.call(
                    .prctl, CHPOX_PR_CAPBSET_DROP, capability, 0, 0, 0, on: tid,
                    to: "drop \(Self.names(1 << UInt64(capability))) from the bounding set of thread \(tid)")
            }
        }
        if now.ambient != target.ambient {
            try calls.call(
                .prctl, CHPOX_PR_CAP_AMBIENT, CHPOX_PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, on: tid,
                to: "clear the ambient capabilities of thread \(tid)")
            for capability in Self.bits(target.ambient) {
                try calls.call(
                    .prctl, CHPOX_PR_CAP_AMBIENT, CHPOX_PR_CAP_AMBIENT_RAISE, capability, 0, 0, on: tid,
                    to: "raise ambient \(Self.names(1 << UInt64(capability))) of thread \(tid)")
            }
        }
        try capset(
            inheritable: target.inheritable, permitted: target.permitted, effective: target.effective, tid, calls)
        let after = try Self.current(pid, thread: tid)
        guard after == target else {
            throw refuse("thread \(tid) holds \(after.summary) after setting them")
        }
    }

    /// capset(2) on the calling thread `tid` (header pid 0), version 3: two data structs, the
    /// low and the high 32 capabilities.
    private func capset(
        inheritable: UInt64, permitted: UInt64, effective: UInt64, _ tid: Int32, _ calls: RemoteCalls
    ) throws(TraceeError) {
        let header = chpox_cap_header(version: UInt32(CHPOX_LINUX_CAPABILITY_VERSION_3), pid: 0)
        let data = [0, 32].map { (shift: UInt64) in
            chpox_cap_data(
                effective: UInt32(truncatingIfNeeded: effective >> shift),
                permitted: UInt32(truncatingIfNeeded: permitted >> shift),
                inheritable: UInt32(truncatingIfNeeded: inheritable >> shift))
        }
        try calls.withFrame { () throws(TraceeError) in
            try calls.call(
                .capset, try calls.value(header), try calls.value(data), on: tid,
                to: "set the capabilities of thread \(tid) (inheritable 0x\(String(inheritable, radix: 16)), "
                    + "permitted 0x\(String(permitted, radix: 16)), effective 0x\(String(effective, radix: 16)))")
        }
    }

    static func current(_ pid: Int32, thread tid: Int32) throws(TraceeError) -> ProcessImage.Capabilities {
        ProcessImage.Capabilities(try ProcFS.status(pid, thread: tid).capabilities)
    }

    /// The capability numbers set in `mask`, lowest first.
    static func bits(_ mask: UInt64) -> [Int] { (0..<64).filter { mask & (1 << UInt64($0)) != 0 } }

    /// "CAP_SETPCAP, CAP_SYS_ADMIN": the capabilities in `mask` by name (a number for one
    /// newer than CAP_CHECKPOINT_RESTORE).
    static func names(_ mask: UInt64) -> String {
        bits(mask).map { $0 < capabilityNames.count ? "CAP_" + capabilityNames[$0] : "capability \($0)" }
            .joined(separator: ", ")
    }

    /// linux/capability.h, in number order.
    static let capabilityNames = [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE",
    ]
}

extension ProcessImage.Capabilities {
    /// What /proc says of a thread, as the image records it.
    init(_ sets: ProcFS.CapabilitySets) {
        self.init(
            inheritable: sets.inheritable, permitted: sets.permitted, effective: sets.effective,
            bounding: sets.bounding, ambient: sets.ambient)
    }
}
