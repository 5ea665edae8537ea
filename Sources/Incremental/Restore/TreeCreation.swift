#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Syscall
import Tracee

/// Creating the processes of a tree: each forked by its parent's stub once the parent's memory
/// is rebuilt (so that it starts with that memory, and keeps the pages it shared copy-on-write),
/// with its saved pid (clone3 set_tid), then given its session and process group.
extension RestartSession {
    /// A new process forked from this stub with pid `pid` (which must be free), frozen before
    /// its first instruction. It dies with this stub until the restart ends (PR_SET_PDEATHSIG).
    /// `exitSignal` 0: its end signals nothing (reaped with __WALL), and ptrace reports it as a clone.
    /// `sharingDescriptors`: it shares this stub's descriptor table (CLONE_FILES), as the image's
    /// process shared its parent's (`TreeLayout.descriptorTables`). Forked once this stub has a
    /// trampoline, it makes its calls there too (its stack pointer is this stub's, whose stack is
    /// gone).
    func fork(pid: Int32, exitSignal: Int32 = SIGCHLD, sharingDescriptors: Bool = false) throws -> FrozenProcess {
        try process.traceForks()
        let result = try withScratch(size: 256) { (calls) throws(TraceeError) -> Int in
            var arguments = chpox_clone_args()
            arguments.exit_signal = UInt64(exitSignal)
            if sharingDescriptors { arguments.flags = 0x0000_0400 }  // CLONE_FILES
            arguments.set_tid = try calls.bytes(ThreadPhase.tidBytes(pid), alignment: 8)
            arguments.set_tid_size = 1
            return try calls.result(of: .clone3, try calls.value(arguments), MemoryLayout<chpox_clone_args>.size)
        }
        try calls.check(
            result,
            "fork process \(pid)" + (sharingDescriptors ? " sharing its descriptor table" : "")
                + " (its pid must be free)")
        let child = try exitSignal == SIGCHLD ? process.adoptForkedChild() : process.adoptClonedProcess()
        if let trampoline { child.useSyscallInstruction(at: trampoline.address) }
        do {
            try RemoteCalls(child, purpose: "restart").call(
                .prctl, CHPOX_PR_SET_PDEATHSIG, SIGKILL, to: "tie process \(pid) to its parent")
        } catch {
            _ = kill(child.pid, SIGKILL)
            throw error
        }
        return child
    }

    /// A process for pidfds of a process that has exited to refer to (`deadPidfd`): forked
    /// from this stub (the root's) with CLONE_PARENT, so that its end signals ld-chpox (or the
    /// namespace's init), which reaps it, and no process of the image; frozen, at any free pid.
    /// Returns it and its pid in the tree's PID namespace.
    func forkDeadProcess() throws -> (process: FrozenProcess, inner: Int32) {
        try process.traceForks()
        // Its memory is the image's by now: the arguments go in the trampoline's scratch pages.
        let result = try calls.withFrame { () throws(TraceeError) -> Int in
            var arguments = chpox_clone_args()
            arguments.flags = 0x0000_8000  // CLONE_PARENT: no exit_signal (clone3 refuses one); it takes the stub's
            return try calls.result(of: .clone3, try calls.value(arguments), MemoryLayout<chpox_clone_args>.size)
        }
        try calls.check(result, "fork a process for the pidfds of a process that has exited")
        let child = try process.adoptClonedProcess()
        do {
            try RemoteCalls(child, purpose: "restart").call(
                .prctl, CHPOX_PR_SET_PDEATHSIG, SIGKILL, to: "tie process \(child.pid) to ld-chpox")
        } catch {
            _ = kill(child.pid, SIGKILL)
            throw error
        }
        return (child, Int32(result))
    }

    /// A zombie child of this stub: forked with pid `zombie.pid`, then let go straight into
    /// exit_group with its exit code, or into kill of itself with the signal that ended it.
    /// Returns once it is a zombie (its parent, frozen, has not reaped it).
    func forkZombie(_ zombie: ProcessImage.Zombie) throws {
        let child = try fork(pid: zombie.pid)
        let calls = RemoteCalls(child, purpose: "restart")
        if zombie.session == zombie.pid {
            try calls.call(.setsid, to: "make zombie \(zombie.pid) lead a session")
        } else if zombie.processGroup == zombie.pid {
            try calls.call(.setpgid, 0, 0, to: "make zombie \(zombie.pid) lead a process group")
        } else if let group = zombie.processGroup, group != image.position?.processGroup, tree.pids[group] != nil {
            try calls.call(.setpgid, 0, try tree.inner(group), to: "put zombie \(zombie.pid) in group \(group)")
        }
        let signal = zombie.status & 0x7f
        if signal != 0 && signal != SIGKILL && signal != SIGSTOP {  // its default action, whatever the stub catches
            let reset = { (calls: RemoteCalls) throws(TraceeError) in
                try calls.call(
                    .rtSigaction, signal, try calls.words([0, 0, 0, 0]), 0, 8,
                    to: "put signal \(signal) of zombie \(zombie.pid) back to its default action")
            }
            if let trampoline {  // forked with this stub's trampoline and scratch, its stack gone
                try reset(RemoteCalls(child, scratch: Self.scratch(of: trampoline.address), purpose: "restart"))
            } else {
                try RemoteCalls.onStack(of: child, size: 64, purpose: "restart", reset)
            }
        }
        if signal == 0 {
            try child.release(into: SystemCall.exitGroup.rawValue, [Int((zombie.status >> 8) & 0xff)])
        } else {
            let own = tree.namespace ? zombie.pid : child.pid  // kill names itself by its pid inside
            try child.release(into: SystemCall.kill.rawValue, [Int(own), Int(signal)])
        }
        for _ in 0..<2000 {
            if (try? ProcFS.state(child.pid)) == "Z" { return }
            CurrentProcess.sleep(microseconds: 1000)
        }
        throw TraceeError.unsupported(pid: child.pid, reason: "it did not end as zombie \(zombie.pid) was")
    }

    /// A keeper of process group `group`, whose leader had exited (`TreeLayout.groupKeepers`):
    /// a child of this stub with pid `group` that makes the group, in this stub's session, for
    /// its members to join. Its end signals nothing to this stub (exit signal 0: no SIGCHLD
    /// the image did not have), and `endGroupKeeper` reaps it.
    func forkGroupKeeper(_ group: Int32) throws -> FrozenProcess {
        let keeper = try fork(pid: group, exitSignal: 0)
        do {
            try RemoteCalls(keeper, purpose: "restart").call(
                .setpgid, 0, 0, to: "make process group \(group) again (its leader had exited)")
        } catch {
            _ = kill(keeper.pid, SIGKILL)
            keeper.thaw()
            throw error
        }
        tree.pids[group] = keeper.pid
        return keeper
    }

    /// Ends `keeper` of process group `group`, once every member is in the group: it exits and
    /// this stub reaps it, so that pid `group` is free and the group lives on without its leader.
    func endGroupKeeper(_ keeper: FrozenProcess, of group: Int32) throws {
        let inner = try tree.inner(group)
        tree.pids[group] = nil
        try keeper.release(into: SystemCall.exitGroup.rawValue, [0])
        try calls.call(.wait4, inner, 0, Int(__WALL), 0, to: "reap the keeper of process group \(group)")
    }

    /// Opens `path`, a file of another process of the tree under /proc (its descriptor of a
    /// pipe, its mapping of shared memory), with the stub's own filesystem ids: those it took
    /// for the image's owner (`FileAccessPhase`) reach no other process's /proc files. The
    /// path is made here, never read from the image. Returns the descriptor in the stub.
    func openOfTree(_ path: String, flags: Int32, to what: String) throws -> Int32 {
        let previous = try calls.result(of: .setfsuid, 0)
        defer { _ = try? calls.result(of: .setfsuid, previous) }
        return Int32(
            try calls.withFrame { () throws(TraceeError) in
                try calls.call(.openat, AT_FDCWD, try calls.string(path), flags | O_CLOEXEC, 0, to: what)
            })
    }

    /// Makes the session or process group of `groups` (a `join` once its leader exists).
    func setGroups(_ groups: TreeLayout.Groups) throws {
        switch groups {
        case .inherited: return
        case .newSession: try calls.call(.setsid, to: "make process \(image.pid) lead a new session")
        case .ownGroup: try calls.call(.setpgid, 0, 0, to: "make process \(image.pid) lead a process group")
        case .join(let leader):
            try calls.call(
                .setpgid, 0, try tree.inner(leader), to: "put process \(image.pid) in process group \(leader)")
        }
    }
}
