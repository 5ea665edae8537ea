#if canImport(Glibc)
import Glibc
#endif
import Syscall
import Tracee

/// The process a restart turns into the saved one: `chpox-restore-stub`, which only waits.
enum StubProcess {
    /// $CHPOX_RESTORE_STUB, else chpox-restore-stub beside the running executable.
    static var path: String { Injector.helperPath("chpox-restore-stub", override: "CHPOX_RESTORE_STUB") }

    /// Starts the stub with pid `pid` where that is free (clone3 with set_tid; root), else any
    /// pid unless `requireSamePid`. glibc's own rseq registration is turned off in it: the
    /// image's is registered instead.
    static func start(pid: Int32, generation: UInt64, requireSamePid: Bool) throws(CheckpointError) -> ChildProcess {
        let environment = ["GLIBC_TUNABLES=glibc.pthread.rseq=0", "CHPOX_RESTORE_PARENT=\(CurrentProcess.id)"]
        do {
            do {
                return try ChildProcess.spawn(path, [], pid: pid, environment: environment)
            } catch  where !requireSamePid {
                return try ChildProcess.spawn(path, [], environment: environment)
            }
        } catch {
            if requireSamePid {
                throw .cannotRestart(
                    generation: generation,
                    reason: "pid \(pid) cannot be had (\(error): in use, or ld-chpox is not root); "
                        + "run without --require-same-pid to take a new one")
            }
            throw .output(
                path: path,
                reason: "cannot start the restore stub: \(error) (install chpox-restore-stub beside ld-chpox)")
        }
    }

    /// Starts the init of a new PID namespace (`chpox-restore-stub --init`; root), which forks
    /// the stub with pid `pid` inside it. Returns the init (ld-chpox's child: what `--wait`
    /// waits for) and the stub's pid here.
    static func startInPidNamespace(pid: Int32, generation: UInt64) throws(CheckpointError) -> (ChildProcess, Int32) {
        let environment = ["CHPOX_RESTORE_PARENT=\(CurrentProcess.id)"]
        let initProcess: ChildProcess
        do {
            initProcess = try ChildProcess.spawnInPidNamespace(path, ["--init", "\(pid)"], environment: environment)
        } catch {
            throw .cannotRestart(
                generation: generation,
                reason: "its pids are taken, and a new PID namespace to restart it in cannot be made: \(error)")
        }
        for _ in 0..<4000 {
            if let stub = (try? ProcFS.children(initProcess.pid))?.first { return (initProcess, stub) }
            if (try? ProcFS.state(initProcess.pid)) ?? "Z" == "Z" { break }
            CurrentProcess.sleep(microseconds: 500)
        }
        try? initProcess.send(SIGKILL)
        let ended = try? initProcess.wait()
        throw .output(
            path: path,
            reason:
                "the init of the new PID namespace started no restore stub (it ended: \(ended.map { "\($0)" } ?? "?")); "
                + "install chpox-restore-stub beside ld-chpox")
    }
}
