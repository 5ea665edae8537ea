import Syscall

/// The control-group hierarchies mounted here (/proc/self/mountinfo), and where a line of
/// /proc/PID/cgroup ("4:memory:/a/b", "11:name=x:/c", "0::/d") is among them.
public struct ControlGroupMounts: Sendable {
    struct Mount: Sendable {
        var root: String
        var point: String
        var type: String
        var options: Set<String>
    }

    let mounts: [Mount]

    /// This process's view.
    public init() {
        let text = (try? ProcFS.bytes(CurrentProcess.id, "mountinfo")).map { String(decoding: $0, as: UTF8.self) }
        self.init(mountInfo: text ?? "")
    }

    public init(mountInfo: String) {
        mounts = mountInfo.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ").map(String.init)
            guard let dash = fields.firstIndex(of: "-"), dash >= 5, fields.count >= dash + 4 else { return nil }
            return Mount(
                root: Self.decoded(fields[3]), point: Self.decoded(fields[4]), type: fields[dash + 1],
                options: Set(fields[dash + 3].split(separator: ",").map(String.init)))
        }
    }

    /// A group found: the mount point of its hierarchy and its path below it, as components.
    public struct Group: Sendable, Equatable {
        public var mount: String
        public var components: [String]
        public init(mount: String, components: [String]) { (self.mount, self.components) = (mount, components) }
        public var directory: String { ([mount] + components).joined(separator: "/") }
    }

    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case unreadable(String)
        case notMounted(String)
        case outside(String, mount: String)
        /// A group of a hierarchy with controllers that no longer exists: its settings are gone.
        case gone(String, directory: String)

        public var description: String {
            switch self {
            case .unreadable(let line): return "its control group line '\(line)' is not one chpox can place"
            case .notMounted(let line): return "the hierarchy of control group \(line) is not mounted here"
            case .outside(let line, let mount):
                return "control group \(line) is outside the part of its hierarchy mounted at \(mount)"
            case .gone(let line, let directory):
                return "control group \(line) no longer exists (\(directory)), and its settings (limits, devices) "
                    + "are not saved: make it again as it was"
            }
        }
    }

    /// Where the group `line` names is (it may not exist); a path with "." or ".." is refused.
    public func group(_ line: String) throws(Failure) -> Group {
        let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard fields.count == 3, fields[2].hasPrefix("/") else { throw .unreadable(line) }
        let path = fields[2]
        let components = path.split(separator: "/").map(String.init)
        guard !components.contains(where: { $0 == ".." || $0 == "." }) else { throw .unreadable(line) }
        let controllers = Set(fields[1].split(separator: ",").map(String.init))
        let unified = fields[0] == "0" && controllers.isEmpty
        guard
            let mount = mounts.first(where: { mount in
                unified ? mount.type == "cgroup2" : mount.type == "cgroup" && controllers.isSubset(of: mount.options)
            })
        else { throw .notMounted(line) }
        let root = mount.root.split(separator: "/").map(String.init)
        guard components.starts(with: root) else { throw .outside(line, mount: mount.point) }
        return Group(mount: mount.point, components: Array(components.dropFirst(root.count)))
    }

    /// "\040" and the like back to their bytes.
    static func decoded(_ field: String) -> String {
        var bytes: [UInt8] = []
        var rest = Array(field.utf8)[...]
        while let byte = rest.first {
            let digits = String(decoding: rest.dropFirst().prefix(3), as: UTF8.self)
            if byte == 92, rest.count >= 4, let value = UInt8(digits, radix: 8) {
                bytes.append(value)
                rest = rest.dropFirst(4)
            } else {
                bytes.append(byte)
                rest = rest.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
