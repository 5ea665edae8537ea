/// A process and its descendants, as /proc lists them now.
public struct ProcessTree: Sendable, Equatable {
    /// The live processes: the first one, then its descendants, each after its parent
    /// (breadth first, children by pid).
    public var members: [Int32]
    /// Descendants that have exited and wait for their parent (zombies).
    public var zombies: [Int32]

    /// `pid` taken alone, whatever its children.
    public init(alone pid: Int32) {
        members = [pid]
        zombies = []
    }

    /// The tree under `pid` now.
    public init(of pid: Int32) throws(TraceeError) {
        members = [pid]
        zombies = []
        var next = 0
        while next < members.count {
            let parent = members[next]
            next += 1
            let children: [Int32]
            do { children = try ProcFS.children(parent) } catch {
                if parent == pid { throw error }
                continue  // it exited meanwhile: a later look sees it gone
            }
            for child in children {
                let state = (try? ProcFS.state(child)) ?? "X"
                if state == "Z" || state == "X" { zombies.append(child) } else { members.append(child) }
            }
        }
    }
}
