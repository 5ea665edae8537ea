#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// A TreeTarget child (Sources/TreeTarget): `processes` processes sharing `sharedPages`
/// copy-on-write, each with `privatePages` of its own, all filled with incompressible bytes;
/// on request each writes 1% of the pages it maps. The first process is our child; it dies with
/// the benchmark (PR_SET_PDEATHSIG) and when `kill()`ed, and its children die with it.
public final class TreeTargetProcess: @unchecked Sendable {
    public let processes: Int
    public let sharedPages: Int
    public let privatePages: Int
    /// The first process: the root of the tree.
    public let pid: Int32
    /// Every process of the tree, the first one first.
    public private(set) var pids: [Int32] = []
    private let toTarget: Int32
    private let fromTarget: Int32
    private var reaped = false

    /// Starts `TreeTarget PROCESSES SHARED PRIVATE` ($CHPOX_TREE_TARGET, else beside this
    /// executable, where `run-ratios` builds it) and waits until every process has filled its pages.
    public init(processes: Int, sharedPages: Int, privatePages: Int) throws {
        self.processes = processes
        self.sharedPages = sharedPages
        self.privatePages = privatePages
        let path = ProcessInfo.processInfo.environment["CHPOX_TREE_TARGET"] ?? TargetProcess.binDirectory + "/TreeTarget"
        let (child, input, output) = try TargetProcess.spawn(path, ["\(processes)", "\(sharedPages)", "\(privatePages)"])
        pid = child
        toTarget = input
        fromTarget = output
        let ready = TargetProcess.readLine(fromTarget).split(separator: " ")
        let pids = ready.dropFirst().compactMap { Int32($0) }
        guard ready.first == "ready", pids.count == processes, pids.first == pid else {
            kill()
            throw TargetProcess.TargetError.protocol(
                "\(path): expected 'ready' and \(processes) pids, got '\(ready.joined(separator: " "))'")
        }
        self.pids = pids
    }

    deinit {
        kill()
        close(toTarget)
        close(fromTarget)
    }

    /// Every process writes 1% of the pages it maps; returns the pages written over the tree.
    @discardableResult
    public func dirtyOnePercent() -> Int {
        let command = Array("d\n".utf8)
        let written = command.withUnsafeBytes { write(toTarget, $0.baseAddress, $0.count) }
        precondition(written == command.count, "cannot write to TreeTarget: \(String(cString: strerror(errno)))")
        let answer = TargetProcess.readLine(fromTarget).split(separator: " ")
        guard answer.count == 2, answer[0] == "ok", let pages = Int(answer[1]) else {
            preconditionFailure("TreeTarget answered '\(answer.joined(separator: " "))'")
        }
        return pages
    }

    /// Resident memory of the tree, in bytes, from each process's /proc/PID/smaps_rollup:
    /// `rss` counts a page shared by n processes n times, `pss` counts it once (1/n in each).
    public func residentMemory() -> (rss: Int, pss: Int) {
        var rss = 0, pss = 0
        for pid in pids {
            guard let rollup = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { continue }
            for line in rollup.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count >= 2, let kib = Int(fields[1]) else { continue }
                if fields[0] == "Rss:" { rss += kib * 1024 }
                if fields[0] == "Pss:" { pss += kib * 1024 }
            }
        }
        return (rss, pss)
    }

    /// Kills the first process (SIGKILL) and reaps it; its children get SIGKILL as it dies
    /// (PR_SET_PDEATHSIG), and are waited for here so that their memory is back before the next target.
    public func kill() {
        guard !reaped else { return }
        reaped = true
        _ = Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        for child in pids.dropFirst() {
            _ = Glibc.kill(child, SIGKILL)
            // Not our children (init reaps them): wait until each is gone or a zombie, which
            // has given its memory back.
            for _ in 0..<2000 {
                guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
                      let close = stat.lastIndex(of: ")"), !stat[close...].hasPrefix(") Z") else { break }
                usleep(1000)
            }
        }
    }
}
