/// A process tree in an image: the first process (the one `cpx` was given) holds the others in
/// `tree`, each with its place in the tree; their pages are in address spaces of the
/// generation's page map (`AddressSpaces`), the first process's in space 0.
extension ProcessImage {
    /// Where a process sits in its tree.
    public struct TreePosition: Codable, Sendable, Equatable {
        /// Its parent's pid (PPid): a process of the tree, or for the first one whatever ran it.
        public var parent: Int32
        /// Its process group and session (the pid of their leader).
        public var processGroup: Int32
        public var session: Int32
        /// The address space of the page map holding its pages (`AddressSpaces`).
        public var space: UInt64
        /// It was stopped (SIGSTOP, job control) and is restarted stopped.
        public var stopped: Bool
        /// The signal that stopped it (SIGSTOP, SIGTSTP...), as its parent's waitpid reports it.
        public var stopSignal: Int32? = nil
        /// The earlier process of the tree whose descriptor table it shares (clone(2) with
        /// CLONE_FILES): the first process of the tree that has that table. A restart forks it
        /// sharing that table again, and it makes none of its descriptors itself: they are that
        /// process's. nil: a table of its own (and in images from before tables were shared).
        public var descriptorTableOf: Int32? = nil

        enum CodingKeys: String, CodingKey {
            case parent, processGroup, session, space, stopped, stopSignal, descriptorTableOf
        }

        public init(parent: Int32, processGroup: Int32, session: Int32, space: UInt64, stopped: Bool) {
            (self.parent, self.processGroup, self.session) = (parent, processGroup, session)
            (self.space, self.stopped) = (space, stopped)
        }
    }

    /// A child of a process of the tree that had exited and was not reaped yet (a zombie): it
    /// is recreated as one, with its exit status, for its parent to reap.
    public struct Zombie: Codable, Sendable, Equatable {
        public var pid: Int32
        public var parent: Int32
        /// Its wait(2) status: exit code << 8, or the signal that killed it (| 0x80 with a core).
        public var status: Int32
        /// Its process group and session, where it had its own.
        public var processGroup: Int32? = nil
        public var session: Int32? = nil

        enum CodingKeys: String, CodingKey { case pid, parent, status, processGroup, session }

        public init(pid: Int32, parent: Int32, status: Int32) {
            (self.pid, self.parent, self.status) = (pid, parent, status)
        }
    }

    /// Every process of the image: this one, then the rest of its tree.
    public var processes: [ProcessImage] { [self] + (tree ?? []) }

    /// The address space of this process's pages (0 for a process alone).
    public var space: UInt64 { position?.space ?? 0 }
}

extension ProcessImage.Descriptor {
    /// A descriptor of another process of the tree whose open file description this one is.
    public struct Inherited: Codable, Sendable, Equatable {
        public var pid: Int32
        public var fd: Int32

        enum CodingKeys: String, CodingKey { case pid, fd }

        public init(pid: Int32, fd: Int32) { (self.pid, self.fd) = (pid, fd) }
    }
}
