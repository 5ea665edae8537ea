#if canImport(Glibc)
import Glibc
#endif
import Syscall

/// The chpox-inject helper, run as its own process in its own session: whatever runs inside a
/// target (a remote system call) is done there, so that killing the checkpointer at any
/// instant cannot leave a thread with borrowed registers. The helper answers in lines and
/// ignores every signal but SIGKILL.
public final class Injector {
    /// `$CHPOX_INJECT`, else chpox-inject beside the running executable, else
    /// /usr/local/bin/chpox-inject.
    public static func path() -> String { helperPath("chpox-inject", override: "CHPOX_INJECT") }

    /// Where one of chpox's helper programs is: `$override`, else beside the running
    /// executable (where the build and the install put them), else /usr/local/bin.
    public static func helperPath(_ name: String, override: String) -> String {
        if let explicit = getenv(override) { return String(cString: explicit) }
        if let exe = ProcFS.link(CurrentProcess.id, "exe") {
            let candidate = String(exe[..<(exe.lastIndex(of: "/") ?? exe.endIndex)]) + "/" + name
            if FileDescriptor.currentDirectory.isExecutable(candidate) { return candidate }
        }
        return "/usr/local/bin/" + name
    }

    private let child: ChildProcess
    private let toChild: FileDescriptor
    private let fromChild: FileDescriptor
    private var finished = false

    /// Starts `chpox-inject <arguments>`.
    public init(_ arguments: [String], pid: Int32) throws(TraceeError) {
        let injector = Self.path()
        do {
            let input = try FileDescriptor.pipe()
            let output = try FileDescriptor.pipe()
            child = try ChildProcess.spawn(
                injector, arguments, stdin: input.read, stdout: output.write, newSession: true)
            input.read.close()
            output.write.close()
            toChild = input.write
            fromChild = output.read
        } catch {
            throw .unsupported(
                pid: pid,
                reason: "cannot start \(injector): \(error) (install chpox-inject beside cpx, or set CHPOX_INJECT)")
        }
    }

    deinit { finish() }

    /// The next line of the answer, without its newline; nil at end of file.
    public func readLine() -> String? {
        var line: [UInt8] = []
        var byte: [UInt8] = [0]
        while true {
            guard let n = try? byte.withMutableRawBytes({ (raw) throws(Errno) in try fromChild.read(into: raw) }),
                n == 1
            else {
                return line.isEmpty ? nil : String(decoding: line, as: UTF8.self)
            }
            if byte[0] == 10 { return String(decoding: line, as: UTF8.self) }
            line.append(byte[0])
        }
    }

    /// Sends one line to the helper.
    public func send(_ line: String) {
        _ = try? Array((line + "\n").utf8).withRawBytes { (raw) throws(Errno) in try toChild.writeAll(raw) }
    }

    /// Closes both pipes and reaps the helper.
    public func finish() {
        guard !finished else { return }
        finished = true
        toChild.close()
        fromChild.close()
        _ = try? child.wait()
    }

    /// Runs `chpox-inject state PID`: the handlers, tid addresses and program break of a
    /// process that is not stopped by the caller (the helper stops it for the time it takes).
    public static func readState(of pid: Int32) throws(TraceeError) -> InjectedState {
        let injector = try Injector(["state", "\(pid)"], pid: pid)
        defer { injector.finish() }
        var lines: [String] = []
        while let line = injector.readLine() {
            if line == "end" { return try InjectedState(lines: lines, pid: pid) }
            if line.hasPrefix("error ") { throw Self.failure(String(line.dropFirst(6)), pid: pid) }
            lines.append(line)
        }
        throw .unsupported(pid: pid, reason: "chpox-inject ended before answering")
    }

    /// The helper's "error TEXT" as the error it names.
    static func failure(_ text: String, pid: Int32) -> TraceeError {
        if text.hasPrefix("no process with pid") { return .noSuchProcess(pid: pid) }
        if text.contains("zombie") { return .zombie(pid: pid) }
        if text.contains("permission denied") { return .permissionDenied(pid: pid, operation: "stop") }
        return .unsupported(pid: pid, reason: "chpox-inject: \(text)")
    }
}
