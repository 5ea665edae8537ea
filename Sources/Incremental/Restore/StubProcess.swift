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
}
