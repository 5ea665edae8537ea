import Syscall
import Tracee

/// The control groups a process runs in (/proc/PID/cgroup), the groups below them (a restart
/// makes those a cleanup removed: a program may count on an empty group it made), and those of
/// each thread that runs elsewhere than its process.
enum ControlGroupCapture {
    /// The most groups recorded below the process's: a process in a large subtree (a root
    /// shell in "/") gets none recorded, and a restart makes only its own groups.
    static let limit = 256

    static func lines(_ pid: Int32, thread: Int32? = nil) throws(TraceeError) -> [String] {
        let name = thread.map { "task/\($0)/cgroup" } ?? "cgroup"
        return String(decoding: try ProcFS.bytes(pid, name), as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// The groups below those `lines` name that exist now, parents first, as lines of the
    /// same form; none where they are more than `limit`, or in the root of a hierarchy.
    static func below(_ lines: [String], mounts: ControlGroupMounts = ControlGroupMounts()) -> [String] {
        var found: [String] = []
        for line in lines {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 3, let group = try? mounts.group(line), !group.components.isEmpty else { continue }
            var below: [String] = []  // paths relative to the group, parents first
            var pending = [""]
            while !pending.isEmpty && below.count <= limit {
                let path = pending.removeFirst()
                guard let directory = try? FileDescriptor.open(group.directory + path, [.readOnly, .directory])
                else { continue }
                defer { directory.close() }
                for name in ((try? directory.entries()) ?? []).sorted()
                where (try? directory.status(of: name))?.isDirectory == true {
                    below.append(path + "/" + name)
                    pending.append(path + "/" + name)
                }
            }
            if below.count <= limit { found += below.map { "\(fields[0]):\(fields[1]):\(fields[2])\($0)" } }
        }
        return found
    }

    /// The groups of thread `tid` of process `pid` where they are not `process` (the process's
    /// lines); nil where they are. A restart moves the thread into them (`ControlGroupPlacement`).
    static func threadLines(_ pid: Int32, thread tid: Int32, process: [String]) throws(TraceeError) -> [String]? {
        guard tid != pid else { return nil }
        let own = try lines(pid, thread: tid)
        return own == process ? nil : own
    }
}
