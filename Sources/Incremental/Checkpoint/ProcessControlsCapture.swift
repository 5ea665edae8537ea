import Foundation
import Tracee

/// The per-process settings a restart gives back (`ProcessImage.Controls`), and the
/// per-process state it cannot, as lines of the image's `unsupported` list.
enum ProcessControlsCapture {
    /// /proc's two and what the injector read inside the process.
    static func controls(_ pid: Int32, injected: ProcessControls) throws(TraceeError) -> ProcessImage.Controls {
        let oom = try number(pid, "oom_score_adj")
        let login = try number(pid, "loginuid")
        guard let oomScoreAdjust = Int32(exactly: oom), let loginUID = UInt32(exactly: login) else {
            throw .malformed(file: "/proc/\(pid)/oom_score_adj", reason: "oom_score_adj \(oom), loginuid \(login)")
        }
        var controls = ProcessImage.Controls(
            oomScoreAdjust: oomScoreAdjust, loginUID: loginUID, dumpable: injected.dumpable,
            transparentHugePagesDisabled: injected.transparentHugePagesDisabled,
            childSubreaper: injected.childSubreaper,
            membarrierRegistrations: injected.membarrierRegistrations ?? 0)
        // A kernel before 6.3 cannot list them: the image says so and every restart says it
        // made none (registrations are rare: JIT runtimes, liburcu), rather than refuse every
        // process on such a kernel.
        if injected.membarrierRegistrations == nil { controls.membarrierUnknown = true }
        if injected.parentDeathSignal != 0 { controls.parentDeathSignal = injected.parentDeathSignal }
        return controls
    }

    /// What a restart would run without: a root directory cpx cannot reach by a path.
    static func unsupported(_ pid: Int32, injected: ProcessControls) throws(TraceeError) -> [String] {
        var lines: [String] = []
        if let root = ProcFS.link(pid, "root"), root != "/", !root.hasPrefix("/") || root.hasSuffix(" (deleted)") {
            lines.append("it runs chrooted in \(root), which cpx cannot reach by a path: a restart could not chroot it")
        }
        return lines
    }

    /// The root directory as /proc shows it to cpx when the process called chroot; nil for "/".
    /// (Its other paths, read the same way, are cpx's: a restart opens them before it chroots.)
    static func rootDirectory(_ pid: Int32) -> String? {
        guard let root = ProcFS.link(pid, "root"), root != "/", root.hasPrefix("/"), !root.hasSuffix(" (deleted)")
        else { return nil }
        return root
    }

    /// The process's capability sets (its main thread's); each other thread's ids and capability
    /// sets where they differ from the main thread's (each thread has its own, and a restart gives
    /// each its own again); a line of `unsupported` for a thread with other supplementary groups
    /// (a restart sets those once, for every thread).
    static func capabilities(
        _ pid: Int32, threads: [Int32]
    ) throws(TraceeError) -> (
        capabilities: ProcessImage.Capabilities, threads: [Int32: ProcessImage.Credentials], unsupported: [String]
    ) {
        let main = try ProcFS.status(pid)
        func sets(_ status: ProcFS.Status) -> ProcessImage.Capabilities {
            let sets = status.capabilities
            return ProcessImage.Capabilities(
                inheritable: sets.inheritable, permitted: sets.permitted, effective: sets.effective,
                bounding: sets.bounding, ambient: sets.ambient)
        }
        var own: [Int32: ProcessImage.Credentials] = [:]
        var otherGroups: [Int32] = []
        for tid in threads where tid != pid {
            let thread = try ProcFS.status(pid, thread: tid)
            if thread.groups != main.groups { otherGroups.append(tid) }
            guard
                (thread.userIDs, thread.groupIDs) != (main.userIDs, main.groupIDs)
                    || thread.capabilities != main.capabilities
            else { continue }
            guard let user = ProcessImage.Credentials.IDs(thread.userIDs),
                let group = ProcessImage.Credentials.IDs(thread.groupIDs)
            else {
                throw .malformed(file: "/proc/\(pid)/task/\(tid)/status", reason: "Uid: or Gid: does not list four ids")
            }
            own[tid] = .init(user: user, group: group, groups: thread.groups, capabilities: sets(thread))
        }
        let unsupported =
            otherGroups.isEmpty
            ? []
            : [
                "threads \(otherGroups.map(String.init).joined(separator: ", ")) hold other supplementary groups "
                    + "than the main thread's: a restart gives every thread the process's"
            ]
        return (sets(main), own, unsupported)
    }

    static func number(_ pid: Int32, _ name: String) throws(TraceeError) -> Int64 {
        let text = String(decoding: try ProcFS.bytes(pid, name), as: UTF8.self)
        guard let value = Int64(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw .malformed(file: "/proc/\(pid)/\(name)", reason: "'\(text)' is not a number")
        }
        return value
    }
}
