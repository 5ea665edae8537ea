import CLinux
import Syscall
import Tracee

/// Every thread's scheduling as it was: its nice value (setpriority), then its policy,
/// real-time priority and SCHED_RESET_ON_FORK (sched_setattr), each made by the thread itself.
/// After the credentials, so that the kernel judges the change with the ids and resource limits
/// the process has again: a real-time policy, or a nice value below the stub's, needs
/// CAP_SYS_NICE or the image's RLIMIT_RTPRIO / RLIMIT_NICE, as it did for the process itself;
/// an image whose user could not have set them is refused with the reason (an image never
/// grants more than its owner could: docs/threat-model.md).
public struct SchedulingPhase: RestartPhase {
    /// Each saved thread id and its scheduling; threads from images before it was kept are absent.
    public var threads: [(tid: Int32, scheduling: ProcessImage.Scheduling)]

    public var name: String { "scheduling" }
    public var steps: [String] {
        threads.filter { $0.scheduling != .standard }.map { "thread \($0.tid): \($0.scheduling.summary)" }
    }

    public init(image: ProcessImage) {
        threads = image.threads.compactMap { thread in thread.scheduling.map { (thread.tid, $0) } }
    }

    public func run(in session: RestartSession) throws {
        for (saved, scheduling) in threads {
            let tid = session.threadIDs[saved] ?? saved
            let target = ThreadScheduling(scheduling)
            // Compared as the image records it: under SCHED_OTHER sched_getattr answers the
            // thread's time slice as its runtime (Linux 6.6+), which the image does not keep.
            guard ProcessImage.Scheduling(try Self.current(tid, pid: session.pid)) != scheduling else { continue }
            do throws(TraceeError) {
                try set(target, scheduling, on: tid, session.calls)
            } catch {
                guard case .system(let errno, _, _) = error, errno == .permissionDenied || errno == .notPermitted
                else { throw error }
                throw TraceeError.unsupported(
                    pid: session.pid,
                    reason: "cannot give thread \(saved) its scheduling (\(scheduling.summary)): \(errno); "
                        + "a real-time policy or a nice value below the stub's needs CAP_SYS_NICE, or resource "
                        + "limits RLIMIT_RTPRIO / RLIMIT_NICE that allow it, with the ids it runs as: restart it "
                        + "as root, or let its user set it (limits.conf's rtprio and nice)")
            }
            let now = ProcessImage.Scheduling(try Self.current(tid, pid: session.pid))
            guard now == scheduling else {
                throw TraceeError.unsupported(
                    pid: session.pid,
                    reason: "thread \(saved) has scheduling \(now.summary) after setting \(scheduling.summary)")
            }
        }
    }

    /// The nice value first: sched_setattr sets it only under SCHED_OTHER and SCHED_BATCH, and a
    /// real-time thread keeps one too (it applies again if the thread leaves its policy).
    private func set(
        _ target: ThreadScheduling, _ scheduling: ProcessImage.Scheduling, on tid: Int32, _ calls: RemoteCalls
    ) throws(TraceeError) {
        // PRIO_PROCESS (0) with who 0: the calling thread.
        try calls.call(.setpriority, 0, 0, target.nice, on: tid, to: "set the nice value of thread \(tid)")
        try calls.withFrame { () throws(TraceeError) in
            try calls.call(
                .schedSetattr, 0, try calls.value(target.attributes), 0, on: tid,
                to: "set the scheduling of thread \(tid) (\(scheduling.summary))")
        }
    }

    static func current(_ tid: Int32, pid: Int32) throws(TraceeError) -> ThreadScheduling {
        do throws(Errno) {
            return try ThreadScheduling.of(thread: tid)
        } catch {
            throw TraceeError.from(error, pid: pid, "read the scheduling of thread \(tid) of")
        }
    }
}

extension ThreadScheduling {
    /// What the image recorded, as the kernel takes it.
    init(_ scheduling: ProcessImage.Scheduling) {
        let deadline = scheduling.deadline ?? []
        self.init(
            policy: scheduling.policy, flags: scheduling.flags, nice: scheduling.nice, priority: scheduling.priority,
            runtime: deadline.first ?? 0, deadline: deadline.count > 1 ? deadline[1] : 0,
            period: deadline.count > 2 ? deadline[2] : 0)
    }
}

extension ProcessImage.Scheduling {
    /// What the kernel says, as the image records it (SCHED_DEADLINE's budget under that policy
    /// alone: under SCHED_OTHER Linux 6.6+ answers the thread's time slice as its runtime).
    init(_ now: ThreadScheduling) {
        self.init(
            policy: now.policy, flags: now.flags, nice: now.nice, priority: now.priority,
            deadline: now.policy == 6 ? [now.runtime, now.deadline, now.period] : nil)
    }
}
