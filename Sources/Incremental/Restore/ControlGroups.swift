import Syscall
import Tracee

/// The control groups an image's process (or one of its threads) ran in, found on this
/// machine: for each hierarchy where it ran elsewhere than ld-chpox (than its process, for a
/// thread), the file that moves it there, and the groups to make first where a cleanup removed
/// them (its own, and the groups below it the checkpoint saw). Only root moves processes between control groups, and only for an image
/// from a store only root can write: a cgroup is a grant (limits, devices, accounting) an image
/// must not choose for itself (docs/threat-model.md).
public struct ControlGroupPlacement: Sendable, Equatable {
    /// The files to write the pid to, one per hierarchy, in order: `cgroup.procs` for a process
    /// (all its threads); for a thread, `tasks` (cgroup v1) or `cgroup.threads` (v2, whose
    /// groups must be threaded: the kernel refuses the write otherwise).
    public var files: [String]
    /// Groups that do not exist now, made before the move, parents first.
    public var missing: [ControlGroupMounts.Group]

    /// Where `saved` (lines of /proc/PID/cgroup) and `below` (groups under them) are, for the
    /// lines of `saved` that differ from `own` (ld-chpox's, or for a `thread` its process's);
    /// throws the reason one cannot be found: a hierarchy that is not mounted, a path that
    /// leaves its hierarchy.
    public static func resolve(
        saved: [String], below: [String], own: [String], mounts: ControlGroupMounts, thread: Bool = false
    ) throws(ControlGroupMounts.Failure) -> ControlGroupPlacement {
        var placement = ControlGroupPlacement(files: [], missing: [])
        for line in saved where !own.contains(line) {
            let group = try mounts.group(line)
            let file = !thread ? "cgroup.procs" : line.hasPrefix("0::") ? "cgroup.threads" : "tasks"
            placement.files.append(group.directory + "/" + file)
            try placement.noteIfMissing(group, line)
        }
        // Only below the groups it is moved into: where it runs in ld-chpox's, nothing is made.
        let moved = saved.filter { !own.contains($0) }
        for line in below where moved.contains(where: { line.hasPrefix($0 + "/") }) {
            try placement.noteIfMissing(try mounts.group(line), line)
        }
        return placement
    }

    /// Whether a group of `line`'s hierarchy is the same group when made again: one of a named
    /// hierarchy without controllers ("11:name=x:/a") holds nothing but its processes; one with
    /// controllers (v1 "4:memory:/a", or v2) has settings (limits, devices) chpox does not save.
    static func makeable(_ line: String) -> Bool {
        let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        return fields.count == 3 && fields[0] != "0"
            && fields[1].split(separator: ",").allSatisfy { $0.hasPrefix("name=") }
    }

    private mutating func noteIfMissing(
        _ group: ControlGroupMounts.Group, _ line: String
    ) throws(ControlGroupMounts.Failure) {
        for count in 1...max(group.components.count, 1) where count <= group.components.count {
            let step = ControlGroupMounts.Group(mount: group.mount, components: Array(group.components.prefix(count)))
            if !missing.contains(step)
                && (try? FileDescriptor.currentDirectory.status(of: step.directory, followingSymlinks: true)) == nil
            {
                guard Self.makeable(line) else { throw .gone(line, directory: step.directory) }
                missing.append(step)
            }
        }
    }

    /// Moves process `pid` (all its threads), or thread `pid` alone, into the groups, made first
    /// where missing (mode 0755, as cgroupfs makes them).
    public func move(_ pid: Int32) throws(Errno) {
        for group in missing {
            do {
                try FileDescriptor.currentDirectory.makeDirectory(group.directory, permissions: 0o755)
            } catch  where error == .exists {
                continue
            }
        }
        for file in files {
            let fd = try FileDescriptor.open(file, .writeOnly)
            defer { fd.close() }
            try Array("\(pid)\n".utf8).withRawBytes { (raw) throws(Errno) in try fd.writeAll(raw) }
        }
    }
}
