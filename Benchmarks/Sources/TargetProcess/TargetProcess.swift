#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// A DirtyTarget child process (Sources/DirtyTarget): `pages` written pages (or, `mixed`, a
/// third each zero, text and random), dirtying K more on request. It dies with the benchmark
/// (PR_SET_PDEATHSIG) and when `kill()`ed.
///
/// Spawned with posix_spawn rather than Foundation's `Process`: that one hands the child a
/// socket whose closing tells it the child exited, and then reaps it with waitpid from a
/// thread of its own, which races ptrace's waits in this process (and a checkpoint refuses a
/// process holding a socket). The target keeps only stdin and stdout (pipes) and stderr: it
/// closes every other descriptor it inherits as it starts.
public final class TargetProcess: @unchecked Sendable {
    public let pages: Int
    public let pid: Int32
    private let toTarget: Int32
    private let fromTarget: Int32
    private var reaped = false
    /// The address of its first page.
    public private(set) var base: UInt64 = 0
    public var size: UInt64 { UInt64(pages) * 4096 }

    public enum TargetError: Error {
        case spawn(String, Int32)
        case `protocol`(String)
    }

    /// Starts `DirtyTarget PAGES [mixed]` ($CHPOX_DIRTY_TARGET, else beside this executable,
    /// where `run-ratios` builds it) and waits until it has written its pages. `quiet`: its
    /// stderr is /dev/null, not ours (a checkpoint keeps a regular file the process holds open
    /// for writing, and a restart puts it back as it was: our log, when stderr is one).
    public init(pages: Int, mixed: Bool = false, quiet: Bool = false) throws {
        self.pages = pages
        let path = ProcessInfo.processInfo.environment["CHPOX_DIRTY_TARGET"] ?? Self.binDirectory + "/DirtyTarget"
        let arguments = ["\(pages)"] + (mixed ? ["mixed"] : [])
        let (child, input, output) = try Self.spawn(path, arguments, quiet: quiet)
        pid = child
        toTarget = input
        fromTarget = output
        let ready = readLine().split(separator: " ")
        guard ready.count == 3, ready[0] == "ready", let address = UInt64(ready[1], radix: 16) else {
            kill()
            throw TargetError.protocol("\(path): expected 'ready ADDRESS PAGES', got '\(ready.joined(separator: " "))'")
        }
        base = address
    }

    deinit {
        kill()
        close(toTarget)
        close(fromTarget)
    }

    private func readLine() -> String { Self.readLine(fromTarget) }

    /// One line from `fd` (without its newline), read a byte at a time so that nothing past it
    /// is taken from the pipe.
    static func readLine(_ fd: Int32) -> String {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while Glibc.read(fd, &byte, 1) == 1 && byte != 10 { line.append(byte) }
        return String(decoding: line, as: UTF8.self)
    }

    /// Starts `path ARGUMENTS` with pipes for its stdin and stdout (stderr is ours, or /dev/null
    /// when `quiet`); returns its pid and our ends: the one we write, the one we read.
    static func spawn(
        _ path: String, _ arguments: [String], quiet: Bool = false
    ) throws(TargetError) -> (pid: pid_t, input: Int32, output: Int32) {
        var input: [Int32] = [0, 0], output: [Int32] = [0, 0]
        guard pipe(&input) == 0 else { throw TargetError.spawn(path, errno) }
        guard pipe(&output) == 0 else {
            let error = errno
            close(input[0]); close(input[1])
            throw TargetError.spawn(path, error)
        }
        // Our ends must not reach the target, or it would never see end of file on stdin.
        for fd in input + output { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, input[0], 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        if quiet { posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0) }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let status = posix_spawn(&child, path, &actions, nil, argv, environ)
        close(input[0])
        close(output[1])
        guard status == 0 else {
            close(input[1]); close(output[0])
            throw TargetError.spawn(path, status)
        }
        return (child, input[1], output[0])
    }

    /// Writes `count` distinct random pages of the target; returns once it has.
    public func dirty(_ count: Int) {
        let command = Array("d \(count)\n".utf8)
        let written = command.withUnsafeBytes { write(toTarget, $0.baseAddress, $0.count) }
        precondition(written == command.count, "cannot write to DirtyTarget: \(String(cString: strerror(errno)))")
        let answer = readLine()
        precondition(answer == "ok", "DirtyTarget answered '\(answer)'")
    }

    /// Kills it (SIGKILL) and reaps it, returning its memory now rather than at exit.
    public func kill() {
        guard !reaped else { return }
        reaped = true
        _ = Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// The directory of the running benchmark executable, where SwiftPM puts the products.
    public static var binDirectory: String {
        let exe =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent
    }

    /// uffd-wp (and the checkpointer's final stop) spawn `chpox-inject`: beside this
    /// executable, where `run-ratios` builds it, unless $CHPOX_INJECT names one.
    public static func locateInjector() {
        guard getenv("CHPOX_INJECT") == nil else { return }
        let candidate = binDirectory + "/chpox-inject"
        if access(candidate, X_OK) == 0 { setenv("CHPOX_INJECT", candidate, 1) }
    }

    /// `Restorer` starts `chpox-restore-stub`: beside this executable, where `run-ratios`
    /// builds it, unless $CHPOX_RESTORE_STUB names one.
    public static func locateRestoreStub() {
        guard getenv("CHPOX_RESTORE_STUB") == nil else { return }
        let candidate = binDirectory + "/chpox-restore-stub"
        if access(candidate, X_OK) == 0 { setenv("CHPOX_RESTORE_STUB", candidate, 1) }
    }
}
