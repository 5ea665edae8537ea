#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Incremental
import Testing

/// The restart plan of the fixture's made-up process, read without any process: every phase
/// in order, and what each decided from the image (InspectFixture says what the image holds).
@Suite struct RestartPlanTests {
    static func plan(generation: Int = 0) throws -> (RestartPlan, ProcessImage) {
        let image = try ProcessImage(
            decoding: InspectFixture.image(generation: generation), generation: UInt64(generation))
        return (RestartPlan(image: image, generation: UInt64(generation)), image)
    }

    @Test func phasesComeInTheOrderARestartNeedsThem() throws {
        let (plan, _) = try Self.plan()
        #expect(plan.processes.count == 1)
        let process = try #require(plan.processes.first)
        #expect(process.pid == 1001)
        #expect(process.parent == nil)
        #expect(
            process.phases.map(\.name) == [
                "audit login uid", "file access", "memory layout", "page fill", "AIO contexts", "descriptors",
                "UNIX sockets",
                "pseudo-terminals",
                "IPv4 and IPv6 sockets", "file locks", "event descriptors", "descriptors shared with other processes",
                "I/O signal owners", "TCP connections resumed", "mm fields", "threads", "signals and timers",
                "root directory", "seccomp", "limits and credentials", "scheduling", "capabilities", "files written",
                "POSIX locks and leases", "process controls", "POSIX timers", "registers",
            ])
        #expect(plan.steps.first == "process 1001")
        #expect(plan.steps.contains("    clone thread 1002, tid address 0x7f0000001010, alternate signal stack"))
    }

    /// The fixture is an image from before scheduling and capabilities were kept: a restart
    /// leaves the stub's. One that records them sets them, the standard scheduling unsaid.
    @Test func schedulingAndCapabilitiesAreSetOnlyWhereTheImageRecordsThem() throws {
        var (plan, image) = try Self.plan()
        #expect(try #require(plan.processes[0].phase(SchedulingPhase.self)).threads.isEmpty)
        #expect(try #require(plan.processes[0].phase(CapabilitiesPhase.self)).steps.isEmpty)
        image.threads[0].scheduling = .init(policy: 2, flags: 1, nice: -5, priority: 3)
        image.threads[1].scheduling = .standard
        image.credentials.capabilities = .init(
            inheritable: 0, permitted: 0x1ff, effective: 0x1fe, bounding: 0x1ff, ambient: 0)
        plan = RestartPlan(image: image, generation: 0)
        let scheduling = try #require(plan.processes[0].phase(SchedulingPhase.self))
        #expect(scheduling.threads.map(\.tid) == [1001, 1002])
        #expect(scheduling.steps == ["thread 1001: SCHED_RR priority 3 reset-on-fork, nice -5"])
        #expect(
            try #require(plan.processes[0].phase(CapabilitiesPhase.self)).steps == [
                "every thread: inheritable 0x0, permitted 0x1ff, effective 0x1fe, bounding 0x1ff, ambient 0x0"
            ])
    }

    @Test func memoryLayoutMapsEveryMappingAtItsPlaceWithItsProtection() throws {
        let (plan, _) = try Self.plan()
        let layout = try #require(plan.processes[0].phase(MemoryLayoutPhase.self))
        typealias Setup = MemoryLayoutPhase.MappingSetup
        #expect(
            layout.mappings == [
                Setup(
                    start: 0x40_0000, size: 4096, protection: PROT_READ | PROT_EXEC, flags: MAP_FIXED | MAP_PRIVATE,
                    source: .file(path: "/usr/bin/fixture", writable: false, offset: 0)),
                Setup(
                    start: 0x40_1000, size: 4096, protection: PROT_READ | PROT_WRITE, flags: MAP_FIXED | MAP_PRIVATE,
                    source: .file(path: "/usr/bin/fixture", writable: false, offset: 0)),
                Setup(
                    start: 0x1000_0000, size: 16 * 4096, protection: PROT_READ | PROT_WRITE,
                    flags: MAP_FIXED | MAP_PRIVATE, source: .anonymous),
                Setup(
                    start: 0x2000_0000, size: 4 * 4096, protection: PROT_READ | PROT_WRITE,
                    flags: MAP_FIXED | MAP_PRIVATE, source: .anonymous),
                Setup(
                    start: 0x7fff_f000_0000, size: 8 * 4096, protection: PROT_READ | PROT_WRITE,
                    flags: MAP_FIXED | MAP_PRIVATE, source: .anonymous),
            ])
        #expect(layout.vdso == .success(.unmapped), "the fixture records no vDSO")
        let fill = try #require(plan.processes[0].phase(PageFillPhase.self))
        #expect(fill.fileBackedPages == [0x400..<0x401, 0x401..<0x402])
        #expect(fill.writesZeroPage(at: 0x401))
        #expect(!fill.writesZeroPage(at: 0x1_0000), "anonymous memory is zero already")
    }

    @Test func pipesDuplicatesAndDeletedFilesAreRecreatedAsRecorded() throws {
        var (_, image) = try Self.plan()
        typealias Entry = DescriptorPhase.Entry
        typealias Descriptor = ProcessImage.Descriptor
        let bytes = Data("queued".utf8)
        var read = Descriptor(fd: 3, kind: .pipe, target: "pipe:[77]", flags: O_RDONLY, offset: 0)
        read.pipe = .init(inode: 77, capacity: 1 << 20, contents: bytes)
        var write = Descriptor(fd: 4, kind: .pipe, target: "pipe:[77]", flags: O_WRONLY | O_NONBLOCK, offset: 0)
        write.pipe = .init(inode: 77, capacity: 1 << 20)
        var dup = write
        dup.fd = 5
        dup.duplicateOf = 4
        let attributes = Descriptor.DeletedFile(
            permissions: 0o645, owner: 0, group: 0, modified: [1, 2], dataRanges: [[0, 4096]])
        var deleted = Descriptor(
            fd: 6, kind: .deletedFile, target: "/tmp/x (deleted)", flags: O_RDWR, offset: 9, contents: Data(count: 8192)
        )
        deleted.deletedAttributes = attributes
        var link = deleted
        link.fd = 7
        link.contents = nil
        link.deletedAttributes?.sameFileAs = 6
        image.descriptors = [read, write, dup, deleted, link]
        let plan = RestartPlan(image: image, generation: 0)
        let phase = try #require(plan.processes[0].phase(DescriptorPhase.self))
        #expect(phase.pipes == [.init(inode: 77, capacity: 1 << 20, path: nil, contents: bytes)])
        #expect(
            phase.entries == [
                Entry(
                    fd: 3, closeOnExec: false,
                    setup: .pipeEnd(inode: 77, access: O_RDONLY, statusFlags: 0, created: true)),
                Entry(
                    fd: 4, closeOnExec: false,
                    setup: .pipeEnd(inode: 77, access: O_WRONLY, statusFlags: O_NONBLOCK, created: true)),
                Entry(fd: 5, closeOnExec: false, setup: .duplicate(of: 4)),
                Entry(
                    fd: 6, closeOnExec: false,
                    setup: .recreate(
                        contents: Data(count: 4096), size: 8192, flags: O_RDWR, offset: 9, attributes: attributes)),
                Entry(fd: 7, closeOnExec: false, setup: .sameDeletedFile(as: 6, flags: O_RDWR, offset: 9)),
            ])
    }

    @Test func descriptorsAreDecidedByKind() throws {
        var (plan, image) = try Self.plan()
        let descriptors = try #require(plan.processes[0].phase(DescriptorPhase.self))
        typealias Entry = DescriptorPhase.Entry
        #expect(descriptors.closed == [2])
        #expect(
            descriptors.entries == [
                Entry(fd: 0, closeOnExec: false, setup: .reopen(path: "/dev/null", flags: 0o100000, offset: nil)),
                Entry(
                    fd: 1, closeOnExec: false,
                    setup: .reopen(path: "/var/log/fixture.log", flags: 0o102001, offset: 4096)),
                Entry(fd: 3, closeOnExec: false, setup: .pipeWithoutPeer(readEnd: false)),
            ])
        #expect(descriptors.workingDirectory == "/srv")
        #expect(descriptors.umask == 0o022)
        let written = try #require(plan.processes[0].phase(WrittenFilesPhase.self))
        #expect(written.files == [.init(fd: 1, path: "/var/log/fixture.log", size: 4096)])

        // Terminals and pipes: stdio at 0-2 stays ld-chpox's, a terminal elsewhere is its stdout.
        var terminal = image.descriptors[2]
        terminal.fd = 5
        terminal.kind = .terminal
        terminal.flags = O_RDWR | O_CLOEXEC
        var pipe = image.descriptors[2]
        pipe.fd = 2
        pipe.flags = O_RDONLY
        image.descriptors += [terminal, pipe]
        plan = RestartPlan(image: image, generation: 0)
        let more = try #require(plan.processes[0].phase(DescriptorPhase.self))
        #expect(more.closed == [])
        #expect(
            more.entries.suffix(2) == [
                Entry(fd: 5, closeOnExec: true, setup: .stdio(1)), Entry(fd: 2, closeOnExec: false, setup: .stdio(2)),
            ])
    }

    /// POSIX locks are taken on one descriptor of each open file, an inherited one included (the
    /// process owns them, whoever opened the file); a lease on the open file's own descriptor.
    @Test func posixLocksAndLeasesAreTakenOnceOnTheirFile() throws {
        var (_, image) = try Self.plan()
        typealias RangeLock = ProcessImage.Descriptor.RangeLock
        var locked = image.descriptors[1]
        locked.fd = 7
        locked.posixLocks = [
            .init(exclusive: false, start: 10, length: 5), .init(exclusive: true, start: 100, length: 0),
        ]
        var duplicate = locked
        duplicate.fd = 8
        duplicate.duplicateOf = 7
        var inherited = locked
        inherited.fd = 9
        inherited.posixLocks = [.init(exclusive: true, start: 0, length: 1)]
        inherited.inherited = .init(pid: 900, fd: 4)
        var leased = image.descriptors[1]
        leased.fd = 10
        leased.lease = "write"
        var inheritedLease = leased
        inheritedLease.fd = 11
        inheritedLease.inherited = .init(pid: 900, fd: 5)
        image.descriptors += [locked, duplicate, inherited, leased, inheritedLease]
        let phase = try #require(RestartPlan(image: image, generation: 0).processes[0].phase(RecordLockPhase.self))
        let path = locked.target
        #expect(
            phase.locks == [
                .init(fd: 7, path: path, lock: RangeLock(exclusive: false, start: 10, length: 5)),
                .init(fd: 7, path: path, lock: RangeLock(exclusive: true, start: 100, length: 0)),
                .init(fd: 9, path: path, lock: RangeLock(exclusive: true, start: 0, length: 1)),
            ])
        #expect(phase.leases == [.init(fd: 10, path: path, write: true)])
        #expect(phase.steps.first == "fd 7: POSIX read lock on \(path), from byte 10 for 5 bytes")
    }

    @Test func threadsSignalsCredentialsAndRegistersComeFromTheImage() throws {
        let (plan, _) = try Self.plan()
        let process = plan.processes[0]
        let threads = try #require(process.phase(ThreadPhase.self))
        #expect(threads.threads.map(\.tid) == [1001, 1002])
        let signals = try #require(process.phase(SignalPhase.self))
        #expect(signals.actions.map(\.signal) == [10, 15])
        #expect(signals.timers.map(\.intervalMicroseconds) == [5000])
        #expect(signals.sharedPending.count == 1)
        #expect(signals.steps.contains("queue signal 12 to the process"))
        let credentials = try #require(process.phase(CredentialsPhase.self))
        #expect(credentials.limits.map(\.name) == ["nofile", "stack"])
        #expect(credentials.changesIds(asUser: 0), "root restarting uid 1000's image sets its ids")
        #expect(!credentials.changesIds(asUser: 1000), "the user itself has them already")
        let registers = try #require(process.phase(RegistersPhase.self))
        #expect(registers.main?.tid == 1001)
        #expect(registers.main?.registers.rip == 0x40_0100)
    }

    /// A shell pipeline's tree: the shell (1001), the loop reading what `seq` (exited) left
    /// queued in its stdin and writing to `tee` (1003) through pipe 8, and `tee`. Each process
    /// opens the ends of the pipes it holds and no other; the loop keeps its stdin pipe with
    /// its bytes (its writer was in the tree and is gone): only the first process's stdio
    /// is ld-chpox's.
    /// A pty pair is made by the first process of the tree that holds it or leads the session
    /// it is the controlling terminal of (here the session leader, which holds none of its
    /// descriptors: tty00's child); the others take the master and open slaves from it.
    @Test func aTreesPtyIsMadeOnceAndSharedOut() throws {
        var (_, leader) = try Self.plan()
        typealias Descriptor = ProcessImage.Descriptor
        typealias Entry = PseudoTerminalPhase.Entry
        let state = Descriptor.PseudoTerminal.State(
            flags: [0x500, 0x5, 0xbf, 0x8a3b], line: 0, controlCharacters: Array(repeating: 0, count: 19),
            speeds: [15, 15], window: [24, 80, 0, 0], locked: false, packet: false, masterExclusive: false,
            slaveExclusive: false, slaveClosed: false, owner: 0, group: 5, permissions: 0o620, session: 1001,
            foregroundGroup: 1001)
        func pty(_ fd: Int32, master: Bool, duplicateOf: Int32? = nil) -> Descriptor {
            var descriptor = Descriptor(
                fd: fd, kind: master ? .ptyMaster : .ptySlave, target: master ? "/dev/ptmx" : "/dev/pts/3",
                flags: O_RDWR | O_CLOEXEC, offset: 0)
            descriptor.pty = .init(index: 3, state: master ? state : nil)
            descriptor.duplicateOf = duplicateOf
            return descriptor
        }
        func child(_ pid: Int32, space: UInt64, _ descriptors: [Descriptor]) -> ProcessImage {
            var image = leader
            image.pid = pid
            image.threads = Array(image.threads.prefix(1))
            image.threads[0].tid = pid
            image.position = .init(parent: 1001, processGroup: 1001, session: 1001, space: space, stopped: false)
            image.descriptors = descriptors
            return image
        }
        leader.position = .init(parent: 1, processGroup: 1001, session: 1001, space: 0, stopped: false)
        leader.descriptors = []
        leader.tree = [
            child(1002, space: 1, [pty(5, master: false), pty(6, master: true), pty(7, master: true, duplicateOf: 6)])
        ]
        let plan = RestartPlan(image: leader, generation: 0)
        #expect(plan.layout.terminals.pairs[3]?.creator == 1001)
        let phases = try plan.processes.map { try #require($0.phase(PseudoTerminalPhase.self)) }
        #expect(phases.map { $0.made.map(\.index) } == [[3], []])
        #expect(phases[0].entries.isEmpty)
        #expect(phases[0].controlling?.index == 3)
        #expect(phases[0].controlling?.foregroundGroup == 1001)
        #expect(phases[1].controlling == nil)
        #expect(
            phases[0].steps == [
                "make pty /dev/pts/3 (24x80)",
                "make /dev/pts/3 its controlling terminal, foreground process group 1001",
            ])
        #expect(
            phases[1].entries == [
                Entry(fd: 5, closeOnExec: true, index: 3, master: false, flags: O_RDWR, duplicateOf: nil),
                Entry(fd: 6, closeOnExec: true, index: 3, master: true, flags: O_RDWR, duplicateOf: nil),
                Entry(fd: 7, closeOnExec: true, index: 3, master: true, flags: O_RDWR, duplicateOf: 6),
            ])
        let descriptors = try #require(plan.processes[1].phase(DescriptorPhase.self))
        #expect(descriptors.entries.isEmpty, "a pty's descriptors, duplicates too, are the pty phase's")
    }

    @Test func aTreesPipesGoToTheProcessesHoldingThemWithTheirBytes() throws {
        var (_, shell) = try Self.plan()
        typealias Descriptor = ProcessImage.Descriptor
        typealias Entry = DescriptorPhase.Entry
        func end(_ fd: Int32, _ inode: UInt64, _ access: Int32, queued: String = "") -> Descriptor {
            var descriptor = Descriptor(fd: fd, kind: .pipe, target: "pipe:[\(inode)]", flags: access, offset: 0)
            descriptor.pipe = .init(inode: inode, capacity: 65536, contents: Data(queued.utf8))
            return descriptor
        }
        func child(_ pid: Int32, space: UInt64, _ descriptors: [Descriptor]) -> ProcessImage {
            var image = shell
            image.pid = pid
            image.threads = Array(image.threads.prefix(1))
            image.threads[0].tid = pid
            image.position = .init(parent: 1001, processGroup: 1001, session: 1001, space: space, stopped: false)
            image.descriptors = descriptors
            return image
        }
        shell.position = .init(parent: 1, processGroup: 1001, session: 1001, space: 0, stopped: false)
        shell.descriptors = [end(0, 5, O_RDONLY)]  // ld-chpox's stdin at the restart
        shell.tree = [
            child(1002, space: 1, [end(0, 7, O_RDONLY, queued: "1\n2\n3\n"), end(1, 8, O_WRONLY)]),
            child(1003, space: 2, [end(0, 8, O_RDONLY)]),
        ]
        let plan = RestartPlan(image: shell, generation: 0)
        let phases = try plan.processes.map { try #require($0.phase(DescriptorPhase.self)) }
        #expect(phases.map(\.foreignPipes) == [[], [], [8]], "the shell waits for no pipe it has no end of")
        #expect(phases.map(\.exportedPipes) == [[], [8], []])
        #expect(phases[0].entries == [Entry(fd: 0, closeOnExec: false, setup: .stdio(0))])
        #expect(
            phases[1].pipes == [
                .init(inode: 7, capacity: 65536, path: nil, contents: Data("1\n2\n3\n".utf8)),
                .init(inode: 8, capacity: 65536, path: nil, contents: Data()),
            ])
        #expect(
            phases[1].entries == [
                Entry(
                    fd: 0, closeOnExec: false,
                    setup: .pipeEnd(inode: 7, access: O_RDONLY, statusFlags: 0, created: true)),
                Entry(
                    fd: 1, closeOnExec: false,
                    setup: .pipeEnd(inode: 8, access: O_WRONLY, statusFlags: 0, created: true)),
            ])
        #expect(phases[2].pipes.isEmpty)
        #expect(
            phases[2].entries == [
                Entry(
                    fd: 0, closeOnExec: false,
                    setup: .pipeEnd(inode: 8, access: O_RDONLY, statusFlags: 0, created: true))
            ])
    }

    /// A socketpair's two ends (one at two numbers), and a stream whose peer was closed with
    /// data left in it: one pair each, each end with its queue, its numbers and its state.
    @Test func socketPairsAreMadeOncePerPairWithEachEndsQueue() throws {
        var (_, image) = try Self.plan()
        typealias Descriptor = ProcessImage.Descriptor
        func socket(_ fd: Int32, _ inode: UInt64, peer: UInt64, flags: Int32, queue: [String]?) -> Descriptor {
            var descriptor = Descriptor(fd: fd, kind: .socket, target: "socket:[\(inode)]", flags: flags, offset: 0)
            descriptor.socket = .init(inode: inode, type: peer == 0 ? .stream : .datagram, peer: peer)
            descriptor.socket?.queue = queue.map { $0.map { Data($0.utf8) } }
            return descriptor
        }
        var orphan = socket(7, 30, peer: 0, flags: O_RDWR, queue: ["left"])
        orphan.socket?.readShutdown = true
        orphan.socket?.writeShutdown = true
        orphan.socket?.resetPending = true
        image.descriptors = [
            socket(3, 10, peer: 11, flags: O_RDWR | O_CLOEXEC, queue: ["a", "", "ccc"]),
            socket(4, 11, peer: 10, flags: O_RDWR | O_NONBLOCK, queue: []),
            socket(5, 10, peer: 11, flags: O_RDWR, queue: nil), orphan,
        ]
        let plan = RestartPlan(image: image, generation: 0)
        #expect(try #require(plan.processes[0].phase(DescriptorPhase.self)).entries.isEmpty, "SocketPhase's")
        let sockets = try #require(plan.processes[0].phase(SocketPhase.self))
        #expect(sockets.pairs == [[10, 11], [30, 0]])
        #expect(sockets.made.map(\.socket.inode) == [10, 11, 30])
        #expect(sockets.made[0].descriptors.map(\.fd) == [3, 5])
        #expect(sockets.made[0].socket.queue == ["a", "", "ccc"].map { Data($0.utf8) })
        #expect(sockets.made[1].statusFlags == O_NONBLOCK)
        #expect(sockets.taken.isEmpty)
        #expect(sockets.holderBase == 1003)
        #expect(
            sockets.steps == [
                "fd 3 (close-on-exec), fd 5: UNIX datagram socket paired with socket 11, 3 messages (4 bytes) queued",
                "fd 4: UNIX datagram socket paired with socket 10, non-blocking",
                "fd 7: UNIX stream socket, its peer closed, 4 bytes queued, shut down for reading and writing, "
                    + "a connection reset pending",
            ])
    }

    /// A pair whose ends are in a parent and its child is made by the parent, which keeps the
    /// child's end for it; the child takes it. A named datagram socket and one connected to it
    /// are made together too.
    @Test func socketsConnectedAcrossProcessesAreMadeByTheFirst() throws {
        var (_, image) = try Self.plan()
        typealias Descriptor = ProcessImage.Descriptor
        func socket(
            _ fd: Int32, _ inode: UInt64, peer: UInt64, _ type: ProcessImage.UnixSocket.SocketType
        )
            -> Descriptor
        {
            var descriptor = Descriptor(fd: fd, kind: .socket, target: "socket:[\(inode)]", flags: O_RDWR, offset: 0)
            descriptor.socket = .init(inode: inode, type: type, peer: peer)
            return descriptor
        }
        var server = socket(6, 40, peer: 0, .datagram)
        server.socket?.unconnected = true
        server.socket?.name = Data("/tmp/server".utf8)
        image.descriptors = [socket(3, 10, peer: 11, .stream), server]
        var child = image
        child.pid = image.pid + 1
        child.position = .init(parent: image.pid, processGroup: image.pid, session: image.pid, space: 1, stopped: false)
        var client = socket(4, 41, peer: 40, .datagram)
        client.socket?.oneWay = true
        child.descriptors = [socket(5, 11, peer: 10, .stream), client]
        image.position = .init(parent: 1, processGroup: image.pid, session: image.pid, space: 0, stopped: false)
        image.tree = [child]
        let plan = RestartPlan(image: image, generation: 0)
        let parent = try #require(plan.processes[0].phase(SocketPhase.self))
        let son = try #require(plan.processes[1].phase(SocketPhase.self))
        #expect(parent.made.map(\.socket.inode) == [10, 40, 41, 11])
        #expect(parent.made.map(\.holder) == [image.pid, image.pid, child.pid, child.pid])
        #expect(parent.pairs == [[10, 11]])
        #expect(son.made.isEmpty)
        #expect(son.taken.map(\.socket.inode) == [41, 11])
        #expect(son.taken.map { $0.descriptors.map(\.fd) } == [[4], [5]])
        #expect(plan.layout.sockets.refusals.isEmpty)
    }
}
