import Incremental
import Store
import Syscall
import Tracee

/// `dumpinfo --generation N`: the process at one generation, as text (threads, descriptors,
/// signal handlers; registers with `regs`, the memory map with `maps`) or as
/// `chpox.generation/1` JSON, which always holds everything. Addresses, registers and masks
/// are hex strings in JSON ("0x7ffd…"): 64-bit values do not fit a JSON number exactly.
public enum GenerationReports {
    public struct Document: Codable, Sendable {
        public var schema = "chpox.generation/\(StoreReports.schemaVersion)"
        public var store: String
        public var chain: String
        public var generation: UInt64
        public var id: String
        public var created: String
        public var createdNanoseconds: Int64
        public var kind: String
        public var parent: String?
        public var pagesWritten: UInt64
        public var zeroPages: UInt64
        public var newChunks: UInt64
        public var storedBytes: UInt64
        /// Pages the rebuilt page map holds.
        public var storedPages: UInt64
        /// nil for generations written by something other than cpx.
        public var process: Process?
        /// The regular files the tree wrote, kept with the generation (or why not); nil when none.
        public var files: [ProcessImage.RecordedFile]? = nil
    }

    public struct Process: Codable, Sendable {
        public var pid: Int32
        public var command: [String]
        public var executable: String
        public var workingDirectory: String
        public var umask: String
        public var credentials: Credentials
        public var capture: Capture
        public var threads: [Thread]
        public var mappings: [Mapping]
        public var descriptors: [Descriptor]
        public var signalActions: [SignalAction]
        public var intervalTimers: [Timer]
        public var pendingSignals: [String]
        public var limits: [Limit]
        public var unsupported: [String]
        /// TCP connections of the tree whose peer is outside it; `held`: a rule holds them
        /// now (`cpx --kill`), nil where the rules cannot be read.
        public var outsideConnections: [OutsideConnection]?
        /// TCP connections of the tree recorded to be made again closed at the restart (`cpx
        /// --tcp-close`); `held` is absent.
        public var closedConnections: [OutsideConnection]?
        /// UNIX sockets of the tree whose peer was outside it, named external (`cpx
        /// --external-unix`): reconnected or closed at the restart.
        public var externalUnixSockets: [ExternalUnixSocket]? = nil
    }

    public struct ExternalUnixSocket: Codable, Sendable {
        public var pid: Int32
        public var fd: Int32
        public var inode: UInt64
        public var type: String
        /// "reconnect" or "close".
        public var action: String
        /// The path its peer was bound to; absent for an unnamed peer.
        public var path: String?
        /// A process that held the peer at the checkpoint.
        public var peerPid: Int32?

        /// Those of `processes`, one per socket (its first descriptor).
        static func of(_ processes: [ProcessImage]) -> [ExternalUnixSocket] {
            var seen: Set<UInt64> = []
            return processes.flatMap { process in
                process.descriptors.compactMap { descriptor -> ExternalUnixSocket? in
                    guard let socket = descriptor.socket, let external = socket.external,
                        seen.insert(socket.inode).inserted
                    else { return nil }
                    return ExternalUnixSocket(
                        pid: process.pid, fd: descriptor.fd, inode: socket.inode, type: socket.type.rawValue,
                        action: external.action.rawValue, path: external.path, peerPid: external.peerPid)
                }
            }
        }
    }

    public struct OutsideConnection: Codable, Sendable {
        public var pid: Int32
        public var fd: Int32
        public var connection: String
        public var held: Bool?
    }

    public struct Credentials: Codable, Sendable {
        public var uid: [UInt32]; public var gid: [UInt32]; public var groups: [UInt32]
    }
    public struct Capture: Codable, Sendable {
        public var tracker: String
        public var pauseMicroseconds: Int64
        public var totalPauseMicroseconds: Int64
        public var preCopyRounds: Int
        public var pagesCopiedWhileRunning: UInt64
        public var pagesCopiedFrozen: UInt64
        public var kernel: String
    }
    public struct Thread: Codable, Sendable {
        public var tid: Int32
        public var instructionPointer: String
        public var stackPointer: String
        public var fsBase: String
        public var blockedSignals: [String]
        public var pendingSignals: [String]
        public var alternateStack: AlternateStack?
        /// Every general register by its user_regs_struct name.
        public var registers: [String: String]
        public var xsaveBytes: Int
    }
    public struct AlternateStack: Codable, Sendable {
        public var address: String; public var size: UInt64; public var flags: UInt64
    }
    public struct Mapping: Codable, Sendable {
        public var start: String
        public var end: String
        public var size: UInt64
        public var protection: String
        public var backing: String
        public var path: String
        public var offset: UInt64
        public var flags: [String]
        public var residentPages: UInt64?
        public var storedPages: UInt64
    }
    public struct Descriptor: Codable, Sendable {
        public var fd: Int32
        public var kind: String
        public var target: String
        public var flags: String
        public var offset: Int64
        public var size: Int64?
    }
    public struct SignalAction: Codable, Sendable {
        public var signal: Int32
        public var name: String
        public var handler: String
        public var flags: String
        public var mask: [String]
    }
    public struct Timer: Codable, Sendable {
        public var timer: String; public var intervalMicroseconds: UInt64; public var valueMicroseconds: UInt64
    }
    /// A limit's values; nil is unlimited.
    public struct Limit: Codable, Sendable {
        public var name: String; public var soft: UInt64?; public var hard: UInt64?
    }

    public static func document(_ detail: GenerationDetail, store: String) -> Document {
        let s = detail.statistics
        return Document(
            store: store, chain: detail.chain, generation: detail.entry.generation, id: detail.entry.manifest.hex,
            created: Format.time(nanoseconds: detail.entry.createdNanoseconds),
            createdNanoseconds: detail.entry.createdNanoseconds,
            kind: detail.entry.kind == .full ? "full" : "delta", parent: detail.parent?.hex,
            pagesWritten: s.pagesWritten,
            zeroPages: s.zeroPages, newChunks: s.newChunks, storedBytes: s.storedBytes,
            storedPages: UInt64(detail.map.pages.count),
            process: detail.image.map {
                process($0, storedPages: detail.storedPages, outside: detail.outsideConnections)
            }, files: detail.image?.files)
    }

    static func process(
        _ image: ProcessImage, storedPages: [UInt64],
        outside: [(connection: ProcessImage.OutsideConnection, held: Bool?)] = []
    ) -> Process {
        let c = image.capture
        let closed = ProcessImage.closedConnections(image.processes)
        let externals = ExternalUnixSocket.of(image.processes)
        var process = Process(
            pid: image.pid, command: image.command, executable: image.executable,
            workingDirectory: image.workingDirectory,
            umask: GenerationDiff.octal(image.umask),
            credentials: .init(
                uid: image.credentials.user.all, gid: image.credentials.group.all, groups: image.credentials.groups),
            capture: .init(
                tracker: c.tracker, pauseMicroseconds: c.pauseNanoseconds / 1000,
                totalPauseMicroseconds: c.totalPauseNanoseconds / 1000,
                preCopyRounds: c.preCopyRounds, pagesCopiedWhileRunning: c.pagesCopiedWhileRunning,
                pagesCopiedFrozen: c.pagesCopiedFrozen, kernel: c.kernel),
            threads: image.threads.map { thread in
                let r = thread.registers
                var registers: [String: String] = [:]
                for (name, value) in zip(ProcessImage.Registers.names, r.words) {
                    registers[name] = Format.address(value)
                }
                return Thread(
                    tid: thread.tid, instructionPointer: Format.address(r.rip), stackPointer: Format.address(r.rsp),
                    fsBase: Format.address(r.fsBase), blockedSignals: SignalNames.names(mask: thread.signalMask),
                    pendingSignals: SignalNames.names(siginfo: thread.pendingSignals.map(\.bytes)),
                    alternateStack: thread.signalStack.map {
                        AlternateStack(address: Format.address($0.address), size: $0.size, flags: $0.flags)
                    },
                    registers: registers, xsaveBytes: thread.xstate.count)
            },
            mappings: zip(image.mappings, storedPages).map { m, stored in
                Mapping(
                    start: Format.address(m.start), end: Format.address(m.end), size: m.end - m.start,
                    protection: m.protection.description,
                    backing: m.backing.rawValue, path: m.path, offset: m.offset, flags: m.flags,
                    residentPages: m.residentPages,
                    storedPages: stored)
            },
            descriptors: image.descriptors.map {
                Descriptor(
                    fd: $0.fd, kind: $0.kind.rawValue, target: $0.target, flags: OpenFlags.describe($0.flags),
                    offset: $0.offset, size: $0.size)
            },
            signalActions: image.signalActions.map {
                SignalAction(
                    signal: $0.signal, name: SignalNames.name($0.signal), handler: SignalNames.handler($0.handler),
                    flags: SignalNames.describe(actionFlags: $0.flags), mask: SignalNames.names(mask: $0.mask))
            },
            intervalTimers: (image.intervalTimers ?? []).map {
                Timer(
                    timer: GenerationDiff.timerName($0.which), intervalMicroseconds: $0.intervalMicroseconds,
                    valueMicroseconds: $0.valueMicroseconds)
            },
            pendingSignals: SignalNames.names(siginfo: image.sharedPendingSignals.map(\.bytes)),
            limits: image.limits.map {
                Limit(name: $0.name, soft: $0.soft == .max ? nil : $0.soft, hard: $0.hard == .max ? nil : $0.hard)
            },
            unsupported: image.unsupported,
            outsideConnections: outside.isEmpty
                ? nil
                : outside.map {
                    OutsideConnection(
                        pid: $0.connection.pid, fd: $0.connection.fd, connection: $0.connection.connection.description,
                        held: $0.held)
                },
            closedConnections: closed.isEmpty
                ? nil
                : closed.map {
                    OutsideConnection(pid: $0.pid, fd: $0.fd, connection: $0.connection.description, held: nil)
                })
        if !externals.isEmpty { process.externalUnixSockets = externals }
        return process
    }

    public static func json(_ detail: GenerationDetail, store: String) -> String {
        StoreReports.json(document(detail, store: store))
    }

    /// The text for people. `regs`: every thread's registers; `maps`: every mapping.
    public static func text(_ detail: GenerationDetail, regs: Bool, maps: Bool) -> String {
        let entry = detail.entry
        var lines: [String] = []
        let lineage =
            entry.kind == .full ? "full" : "delta on " + (detail.parent.map { String($0.hex.prefix(12)) } ?? "?")
        lines.append(
            "\(detail.chain) generation \(entry.generation)  (\(lineage))  id \(entry.manifest.hex.prefix(12))")
        lines.append("created      \(Format.time(nanoseconds: entry.createdNanoseconds)) UTC")
        guard let image = detail.image else {
            lines.append(
                "pages        \(detail.map.pages.count) in its page map; "
                    + "no process image (written by something other than cpx)"
            )
            return lines.joined(separator: "\n")
        }
        let c = image.capture
        let mapped = image.mappings.reduce(UInt64(0)) { $0 + ($1.end - $1.start) }
        let resident = image.mappings.compactMap(\.residentPages)
        lines.append(
            "process      pid \(image.pid), \(image.threads.count) thread\(image.threads.count == 1 ? "" : "s")")
        lines.append("command      " + image.command.map(quoted).joined(separator: " "))
        lines.append("executable   \(image.executable)")
        lines.append("cwd          \(image.workingDirectory)  (umask \(GenerationDiff.octal(image.umask)))")
        if let root = image.rootDirectory { lines.append("root         \(root)  (chrooted)") }
        lines.append("credentials  " + GenerationDiff.describe(image.credentials))
        if let capabilities = image.credentials.capabilities {
            lines.append("capabilities " + capabilities.summary)
        }
        if let controls = image.controls { lines.append("controls     " + controls.summary) }
        let rounds = "\(c.preCopyRounds) pre-copy round\(c.preCopyRounds == 1 ? "" : "s")"
        lines.append(
            "captured     \(c.tracker.isEmpty ? "-" : c.tracker); pause \(milliseconds(c.pauseNanoseconds))"
                + " (every stop \(milliseconds(c.totalPauseNanoseconds)), \(rounds)); kernel \(c.kernel)"
        )
        lines.append(
            "memory       \(image.mappings.count) mappings, \(Format.bytes(mapped)) mapped"
                + (resident.count == image.mappings.count
                    ? ", \(Format.bytes(Page.bytes(resident.reduce(0, +)))) resident" : "")
                + ", \(detail.map.pages.count) pages stored"
                + " (\(detail.statistics.pagesWritten) written by this generation)"
        )
        lines.append("unsupported  " + (image.unsupported.isEmpty ? "none" : image.unsupported.joined(separator: ", ")))
        for (outside, held) in detail.outsideConnections {
            let state =
                switch held {
                case true?: "held now by a packet filter rule (cpx --kill); a restart releases it"
                case false?: "not held now (a restart finds the peer reset it unless it sent nothing)"
                case nil: "whether it is held now cannot be read here (needs root and nft)"
                }
            lines.append(
                "connection   \(outside.connection), fd \(outside.fd) of pid \(outside.pid), peer outside the tree: \(state)"
            )
        }
        for closed in ProcessImage.closedConnections(image.processes) {
            lines.append(
                "connection   \(closed.connection), fd \(closed.fd) of pid \(closed.pid): closed at the restart "
                    + "(cpx --tcp-close): the program finds it closed and must reconnect")
        }
        for external in ExternalUnixSocket.of(image.processes) {
            let peer =
                external.path ?? "an unnamed socket" + (external.peerPid.map { " of process \($0)" } ?? "")
            lines.append(
                "external     UNIX \(external.type) socket \(external.inode), fd \(external.fd) of pid \(external.pid), "
                    + "peer \(peer) outside the tree: "
                    + (external.action == "reconnect"
                        ? "connected to \(peer) again at the restart (cpx --external-unix)"
                        : "its peer closed at the restart (cpx --external-unix)"))
        }
        if image.processes.count > 1 || image.zombies?.isEmpty == false {
            // The rest of its tree: one line each, the first process first.
            for process in image.processes {
                let position = process.position
                lines.append(
                    "tree         pid \(process.pid)"
                        + (position.map { " parent \($0.parent), group \($0.processGroup), session \($0.session)" }
                            ?? "")
                        + ", \(process.threads.count) thread\(process.threads.count == 1 ? "" : "s"), "
                        + "\(process.mappings.count) mappings, \(process.descriptors.count) descriptors"
                        + (process.copyOnWrite.map { runs in
                            let pages = runs.reduce(0) { $0 + ($1.count == 2 ? Page.count(of: $1[1] - $1[0]) : 0) }
                            return ", \(pages) pages shared copy-on-write with its parent"
                        } ?? "")
                        + (position?.stopped == true ? ", stopped" : "") + "  "
                        + process.command.prefix(3).map(quoted).joined(separator: " "))
            }
            for zombie in image.zombies ?? [] {
                lines.append(
                    "tree         zombie \(zombie.pid) parent \(zombie.parent), wait status 0x\(String(zombie.status, radix: 16))"
                )
            }
        }

        lines.append("")
        lines.append("THREADS")
        var threads = TextTable(["TID", "RIP", "RSP", "FS_BASE", "BLOCKED", "PENDING", "ALTSTACK"], numeric: [0])
        for thread in image.threads {
            let s = thread.state
            threads.add([
                "\(s.tid)", Format.address(s.instructionPointer), Format.address(s.stackPointer),
                Format.address(s.fsBase),
                SignalNames.describe(mask: s.signalMask), SignalNames.describe(siginfo: s.pendingSignals),
                thread.signalStack.map { "\(Format.address($0.address)) +\($0.size)" } ?? "-",
            ])
        }
        lines.append(threads.render())
        for thread in image.threads {
            guard let scheduling = thread.scheduling, scheduling != .standard else { continue }
            lines.append("thread \(thread.tid) scheduling: \(scheduling.summary)")
        }
        for thread in image.threads {
            guard let seccomp = thread.seccomp else { continue }
            lines.append("thread \(thread.tid) seccomp: \(seccomp.summary)")
        }
        if regs {
            for thread in image.threads {
                lines.append("")
                lines.append("thread \(thread.tid) registers (XSAVE area \(thread.xstate.count) bytes)")
                let pairs = zip(ProcessImage.Registers.names, thread.registers.words).map { name, value in
                    name.padding(9) + Format.address(value).padding(20)
                }
                for row in stride(from: 0, to: pairs.count, by: 3) {
                    lines.append(("  " + pairs[row..<min(row + 3, pairs.count)].joined()).replacingTrailingSpaces())
                }
            }
        }

        if let files = image.files, !files.isEmpty {
            lines.append("")
            lines.append("FILES (kept with the generation: a restart puts them back as they were)")
            var table = TextTable(["SIZE", "CHUNKS", "STATE", "MODE", "PATH"], numeric: [0, 1])
            for f in files {
                table.add([
                    "\(f.size)", f.chunks.map { "\($0)" } ?? "-",
                    f.state.rawValue + (f.reason.map { " (\($0))" } ?? ""), "0" + String(f.permissions, radix: 8),
                    f.path,
                ])
            }
            lines.append(table.render())
        }

        lines.append("")
        lines.append("DESCRIPTORS")
        if image.descriptors.isEmpty {
            lines.append("none")
        } else {
            var fds = TextTable(["FD", "KIND", "FLAGS", "OFFSET", "TARGET"], numeric: [0, 3])
            for d in image.descriptors {
                fds.add([
                    "\(d.fd)", d.kind.rawValue, OpenFlags.describe(d.flags), "\(d.offset)",
                    d.target + (d.size.map { "  (size \($0))" } ?? "") + (d.event.map { "  (\($0.summary))" } ?? "")
                        + (d.socket.map { "  (\($0.summary))" } ?? "") + (d.inet.map { "  (\($0.summary))" } ?? ""),
                ])
            }
            lines.append(fds.render())
        }

        lines.append("")
        lines.append("SIGNAL HANDLERS")
        if image.signalActions.isEmpty {
            lines.append("none (every signal has its default action)")
        } else {
            var actions = TextTable(["SIGNAL", "HANDLER", "FLAGS", "MASK"])
            for a in image.signalActions {
                actions.add([
                    SignalNames.name(a.signal), SignalNames.handler(a.handler),
                    SignalNames.describe(actionFlags: a.flags),
                    SignalNames.describe(mask: a.mask),
                ])
            }
            lines.append(actions.render())
        }
        for timer in image.intervalTimers ?? [] {
            lines.append(
                "timer \(GenerationDiff.timerName(timer.which)): \(GenerationDiff.text(GenerationDiff.describe(timer)))"
            )
        }
        lines.append(
            "pending for the process: " + SignalNames.describe(siginfo: image.sharedPendingSignals.map(\.bytes)))

        lines.append("")
        if maps {
            lines.append("MEMORY MAP")
            var table = TextTable(
                ["START", "END", "SIZE", "PROT", "BACKING", "RESIDENT", "STORED", "PATH"], numeric: [2, 5, 6])
            for (m, stored) in zip(image.mappings, detail.storedPages) {
                table.add([
                    Format.address(m.start), Format.address(m.end), Format.bytes(m.end - m.start),
                    m.protection.description, m.backing.rawValue,
                    m.residentPages.map { "\($0)" } ?? "-", "\(stored)", m.path,
                ])
            }
            lines.append(table.render())
        } else {
            var byBacking: [String: (count: Int, bytes: UInt64, stored: UInt64)] = [:]
            for (m, stored) in zip(image.mappings, detail.storedPages) {
                let k = m.backing.rawValue
                byBacking[k] = (
                    (byBacking[k]?.count ?? 0) + 1, (byBacking[k]?.bytes ?? 0) + m.end - m.start,
                    (byBacking[k]?.stored ?? 0) + stored
                )
            }
            lines.append("MEMORY (by backing; --maps lists every mapping)")
            var table = TextTable(["BACKING", "MAPPINGS", "SIZE", "STORED PAGES"], numeric: [1, 2, 3])
            for k in byBacking.keys.sorted() {
                let v = byBacking[k]!
                table.add([k, "\(v.count)", Format.bytes(v.bytes), "\(v.stored)"])
            }
            lines.append(table.render())
        }
        return lines.joined(separator: "\n")
    }

    static func milliseconds(_ nanoseconds: Int64) -> String { Format.decimal(Double(nanoseconds) / 1e6) + " ms" }

    /// An argument as a shell would need it: quoted when it holds spaces or quotes.
    static func quoted(_ argument: String) -> String {
        guard argument.isEmpty || argument.contains(where: { " \t\n'\"\\$`".contains($0) }) else { return argument }
        return "'" + argument.replacing("'", with: "'\\''") + "'"
    }
}

extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}
