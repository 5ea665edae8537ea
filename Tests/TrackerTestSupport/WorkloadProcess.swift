#if canImport(Glibc)
import Glibc
#endif
import Syscall

/// A C workload (Tests/DirtyWorkload, Tests/ChurnWorkload) as a child process driven line
/// by line on its stdin and stdout.
public final class WorkloadProcess {
    public let child: ChildProcess
    private let commands: FileDescriptor
    private let answers: FileDescriptor
    private var pending: [UInt8] = []

    public var pid: Int32 { child.pid }

    /// The dirty-page workload, seeded.
    public convenience init(executable: String, seed: UInt64) throws {
        try self.init(executable: executable, arguments: ["\(seed)"])
    }

    /// `environment`: the whole environment of the process (nil: the test's own).
    public init(executable: String, arguments: [String], environment: [String]? = nil) throws {
        // A workload that dies makes writes to its stdin fail with EPIPE, not kill the tests.
        signal(SIGPIPE, SIG_IGN)
        let input = try FileDescriptor.pipe()
        let output = try FileDescriptor.pipe()
        child = try ChildProcess.spawn(
            executable, arguments, stdin: input.read, stdout: output.write, environment: environment)
        input.read.close()
        output.write.close()
        commands = input.write
        answers = output.read
    }

    deinit {
        commands.close()
        answers.close()
        try? child.send(SIGKILL)
        _ = try? child.wait()
    }

    /// Sends one line without waiting for an answer.
    public func write(_ line: String) throws {
        try Array((line + "\n").utf8).withRawBytes { (raw) throws(Errno) in try commands.writeAll(raw) }
    }

    /// Sends one command and returns the answer line.
    public func send(_ command: String) throws -> String {
        try Array((command + "\n").utf8).withRawBytes { (raw) throws(Errno) in try commands.writeAll(raw) }
        return try line()
    }

    public func round(_ n: Int) throws {
        let answer = try send("r \(n)")
        guard answer == "ok \(n)" else { throw WorkloadError.unexpected(answer) }
    }

    public func selfCheck() throws -> String { try send("c") }

    public func quit(_ command: String = "q") throws -> ChildProcess.Termination {
        _ = try? Array((command + "\n").utf8).withRawBytes { (raw) throws(Errno) in try commands.writeAll(raw) }
        return try child.wait()
    }

    /// The next line the workload prints.
    public func line() throws -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            if let newline = pending.firstIndex(of: 10) {
                let text = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                return text
            }
            let n = try buffer.withMutableRawBytes { (raw) throws(Errno) in try answers.read(into: raw) }
            if n == 0 { throw WorkloadError.exited }
            pending += buffer[0..<n]
        }
    }

    public enum WorkloadError: Error, CustomStringConvertible {
        case unexpected(String)
        case exited
        public var description: String {
            switch self {
            case .unexpected(let answer): "workload answered '\(answer)'"
            case .exited: "workload exited"
            }
        }
    }
}

/// The dirty-page tracker proofs' workload.
public typealias DirtyWorkloadProcess = WorkloadProcess
