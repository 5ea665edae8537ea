#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// A child started with posix_spawn(3): signals and waiting.
public struct ChildProcess: Sendable {
    public let pid: pid_t

    /// A child of this process made otherwise (a tracee's fork with CLONE_PARENT), to wait for.
    public init(child pid: pid_t) { self.pid = pid }

    /// Starts `path` with `arguments` (argv[1...]); stdin and stdout come from the given
    /// descriptors when given; no other descriptor of the caller is inherited but stderr.
    /// With `newSession`, the child gets a session of its own (setsid), out of reach of
    /// signals sent to the caller's process group or terminal. The child starts with no
    /// signal blocked and every signal at its default action: a caller's own mask (a test
    /// runner blocks dozens) must not leak into the programs it starts.
    public static func spawn(
        _ path: String, _ arguments: [String], stdin: FileDescriptor? = nil, stdout: FileDescriptor? = nil,
        stderr: FileDescriptor? = nil, newSession: Bool = false, environment: [String]? = nil
    ) throws(Errno) -> ChildProcess {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        let flags = Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        posix_spawnattr_setflags(&attributes, newSession ? flags | chpox_posix_spawn_setsid() : flags)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin { posix_spawn_file_actions_adddup2(&actions, stdin.rawValue, 0) }
        if let stdout { posix_spawn_file_actions_adddup2(&actions, stdout.rawValue, 1) }
        if let stderr { posix_spawn_file_actions_adddup2(&actions, stderr.rawValue, 2) }
        _ = chpox_posix_spawn_closefrom(&actions, 3)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp = environment.map { $0.map { strdup($0) } + [nil] }
        defer { for pointer in envp ?? [] { free(pointer) } }
        var pid: pid_t = 0
        let result =
            envp.map { posix_spawn(&pid, path, &actions, &attributes, argv, $0) }
            ?? posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        guard result == 0 else { throw Errno(rawValue: result) }
        return ChildProcess(child: pid)
    }

    /// Starts `path` as a child with process id `pid` (clone3 with set_tid: root, and the pid
    /// free, else EEXIST or EPERM); it inherits stdin, stdout and stderr only.
    public static func spawn(
        _ path: String, _ arguments: [String], pid: pid_t, environment: [String]
    ) throws(Errno) -> ChildProcess {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp = environment.map { strdup($0) } + [nil]
        defer { for pointer in envp { free(pointer) } }
        let result = chpox_spawn_with_pid(path, argv, envp, pid)
        guard result > 0 else { throw Errno(rawValue: Int32(-result)) }
        return ChildProcess(child: pid_t(result))
    }

    /// Starts `path` as the first process (pid 1) of a new PID namespace (clone3 with
    /// CLONE_NEWPID: root); it inherits stdin, stdout and stderr only. Its pid here is returned.
    public static func spawnInPidNamespace(
        _ path: String, _ arguments: [String], environment: [String]
    ) throws(Errno) -> ChildProcess {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp = environment.map { strdup($0) } + [nil]
        defer { for pointer in envp { free(pointer) } }
        let result = chpox_spawn_in_pid_namespace(path, argv, envp)
        guard result > 0 else { throw Errno(rawValue: Int32(-result)) }
        return ChildProcess(child: pid_t(result))
    }

    /// Sends `signal` (kill(2)).
    public func send(_ signal: Int32) throws(Errno) {
        try Signal.send(signal, to: pid)
    }

    /// How a child ended.
    public enum Termination: Equatable, Sendable {
        case exited(Int32)
        case signalled(Int32)
    }

    /// Collects every child and tracee of this process that ends (waitpid -1 with __WALL)
    /// until `pid` has: a tracer must collect its dead tracees before their parent can.
    public static func reapAll(until pid: pid_t) {
        var status: Int32 = 0
        while true {
            let ended = waitpid(-1, &status, Int32(bitPattern: 0x4000_0000))  // __WALL
            if ended == pid || (ended < 0 && errno != EINTR) { return }
        }
    }

    /// Runs `path` with `arguments` to its end, `input` on its stdin: how it ended and what it
    /// wrote on stdout and stderr together (at most `limit` bytes kept). SIGPIPE is ignored in
    /// this process from then on (the children it spawns get the default action back).
    public static func run(
        _ path: String, _ arguments: [String], input: [UInt8] = [], limit: Int = 1 << 20
    ) throws(Errno) -> (termination: Termination, output: [UInt8]) {
        let stdin = try FileDescriptor.pipe()
        let stdout: (read: FileDescriptor, write: FileDescriptor)
        do { stdout = try FileDescriptor.pipe() } catch {
            stdin.read.close()
            stdin.write.close()
            throw error
        }
        let child: ChildProcess
        do {
            child = try spawn(path, arguments, stdin: stdin.read, stdout: stdout.write, stderr: stdout.write)
        } catch {
            for end in [stdin.read, stdin.write, stdout.read, stdout.write] { end.close() }
            throw error
        }
        stdin.read.close()
        stdout.write.close()
        // The child reads its input whole before it writes (nft -f -): the input goes first.
        // One that exits without reading it must give EPIPE here, not kill this process.
        signal(SIGPIPE, SIG_IGN)
        input.withUnsafeBytes { raw in _ = try? stdin.write.writeAll(raw) }
        stdin.write.close()
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { raw in (try? stdout.read.read(into: raw)) ?? 0 }
            if count <= 0 { break }
            if output.count < limit { output += buffer[0..<min(count, limit - output.count)] }
        }
        stdout.read.close()
        return (try child.wait(), output)
    }

    /// Waits for the child to end (waitpid(2)).
    public func wait() throws(Errno) -> Termination {
        var status: Int32 = 0
        _ = try retryingInterrupts { waitpid(pid, &status, 0) }.get()
        let signal = status & 0x7f
        return signal == 0 ? .exited((status >> 8) & 0xff) : .signalled(signal)
    }
}
