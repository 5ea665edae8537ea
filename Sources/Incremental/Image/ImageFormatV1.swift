import Foundation

/// The first image format, `chpox.image/1` (written until 2026-12): read and upgraded, never
/// written. Its types mirror that JSON field for field and are frozen here, apart from the
/// types of today's format, so that a change there cannot change how old images read.
/// Tests hold it against a real /1 image (`Tests/LiveProcessTests/Restore/Golden`).
enum ImageFormatV1 {
    static let format = "chpox.image/1"

    struct Image: Decodable {
        var format: String
        var pid: Int32
        var command: [String]
        var executable: String
        var workingDirectory: String
        var umask: UInt32
        var credentials: Credentials
        var limits: [Limit]
        var addressSpace: AddressSpace
        var mappings: [Mapping]
        var threads: [Thread]
        var signalActions: [Action]
        var intervalTimers: [Timer]?
        var sharedPendingSignals: [[UInt8]]
        var descriptors: [Descriptor]
        var unsupported: [String]
        var capture: Capture
    }

    /// Ids as /proc/PID/status lists them: real, effective, saved, filesystem.
    struct Credentials: Decodable { var uid: [UInt32], gid: [UInt32], groups: [UInt32] }
    struct Limit: Decodable { var resource: Int32, name: String, soft: UInt64, hard: UInt64 }
    struct AddressSpace: Decodable {
        var startCode, endCode, startData, endData, startBrk, brk, startStack, argStart, argEnd, envStart,
            envEnd: UInt64
        var auxv: [UInt64]
    }
    struct Mapping: Decodable {
        var start, end: UInt64
        /// "rwxp" / "rwxs".
        var protection: String
        var backing: String
        var offset: UInt64
        var device: String
        var inode: UInt64
        var path: String
        var flags: [String]
        var residentPages: UInt64?
    }
    struct Thread: Decodable {
        struct State: Decodable {
            var tid: Int32
            /// user_regs_struct's 27 words.
            var registers: [UInt64]
            var xstate: [UInt8]
            var signalMask: UInt64
            var rseq: Rseq?
            var pendingSignals: [[UInt8]]
        }
        struct Rseq: Decodable { var address: UInt64, size: UInt32, signature: UInt32, flags: UInt32 }
        var state: State
        var clearAddress: UInt64?
        /// stack_t: address, flags, size.
        var alternateStack: [UInt64]?
    }
    struct Action: Decodable { var signal: Int32, handler: UInt64, flags: UInt64, restorer: UInt64, mask: UInt64 }
    struct Timer: Decodable { var which: Int32, intervalMicroseconds: UInt64, valueMicroseconds: UInt64 }
    struct Descriptor: Decodable {
        var fd: Int32
        var kind: String
        var target: String
        var flags: Int32
        var offset: Int64
        var contents: Data?
        var size: Int64?
    }
    struct Capture: Decodable {
        var tracker: String
        var pauseNanoseconds, totalPauseNanoseconds: Int64
        var preCopyRounds: Int
        var pagesCopiedWhileRunning, pagesCopiedFrozen: UInt64
        var kernel: String
    }

    /// A field of the old image that today's cannot hold.
    struct Unreadable: Error, CustomStringConvertible {
        var description: String
    }
}

extension ImageFormatV1.Image {
    /// The same image in today's types.
    func upgraded() throws -> ProcessImage {
        func ids(_ list: [UInt32], _ what: String) throws -> ProcessImage.Credentials.IDs {
            guard let ids = ProcessImage.Credentials.IDs(list) else {
                throw ImageFormatV1.Unreadable(
                    description: "\(what) ids \(list) are not four (real, effective, saved, filesystem)")
            }
            return ids
        }
        let mappings = try mappings.map { m throws -> ProcessImage.Mapping in
            guard let protection = ProcessImage.Protection(maps: m.protection) else {
                throw ImageFormatV1.Unreadable(
                    description:
                        "mapping 0x\(String(m.start, radix: 16)): protection '\(m.protection)' is not like r-xp")
            }
            guard let backing = ProcessImage.Mapping.Backing(rawValue: m.backing) else {
                throw ImageFormatV1.Unreadable(
                    description: "mapping 0x\(String(m.start, radix: 16)): unknown backing '\(m.backing)'")
            }
            return .init(
                start: m.start, end: m.end, protection: protection, backing: backing, offset: m.offset,
                device: m.device,
                inode: m.inode, path: m.path, flags: m.flags, residentPages: m.residentPages)
        }
        let threads = try threads.map { t throws -> ProcessImage.ThreadImage in
            guard t.state.registers.count == 27 else {
                throw ImageFormatV1.Unreadable(
                    description: "thread \(t.state.tid): \(t.state.registers.count) registers, not 27")
            }
            var stack: ProcessImage.SignalStack?
            if let words = t.alternateStack {
                guard words.count == 3 else {
                    throw ImageFormatV1.Unreadable(
                        description: "thread \(t.state.tid): alternate stack \(words) is not three words")
                }
                stack = .init(address: words[0], flags: words[1], size: words[2])
            }
            return .init(
                tid: t.state.tid, registers: .init(words: t.state.registers), xstate: Data(t.state.xstate),
                signalMask: t.state.signalMask,
                rseq: t.state.rseq.map {
                    .init(address: $0.address, size: $0.size, signature: $0.signature, flags: $0.flags)
                },
                pendingSignals: t.state.pendingSignals.map(ProcessImage.SignalInfo.init), clearAddress: t.clearAddress,
                signalStack: stack)
        }
        let descriptors = try descriptors.map { d throws -> ProcessImage.Descriptor in
            guard let kind = ProcessImage.Descriptor.Kind(rawValue: d.kind) else {
                throw ImageFormatV1.Unreadable(description: "descriptor \(d.fd): unknown kind '\(d.kind)'")
            }
            return .init(
                fd: d.fd, kind: kind, target: d.target, flags: d.flags, offset: d.offset, contents: d.contents,
                size: d.size)
        }
        let a = addressSpace
        return ProcessImage(
            pid: pid, command: command, executable: executable, workingDirectory: workingDirectory, umask: umask,
            credentials: .init(
                user: try ids(credentials.uid, "user"), group: try ids(credentials.gid, "group"),
                groups: credentials.groups),
            limits: limits.map { .init(resource: $0.resource, name: $0.name, soft: $0.soft, hard: $0.hard) },
            addressSpace: .init(
                startCode: a.startCode, endCode: a.endCode, startData: a.startData, endData: a.endData,
                startBrk: a.startBrk,
                brk: a.brk, startStack: a.startStack, argStart: a.argStart, argEnd: a.argEnd, envStart: a.envStart,
                envEnd: a.envEnd, auxv: a.auxv),
            mappings: mappings, threads: threads,
            signalActions: signalActions.map {
                .init(signal: $0.signal, handler: $0.handler, flags: $0.flags, restorer: $0.restorer, mask: $0.mask)
            },
            intervalTimers: (intervalTimers ?? []).map {
                .init(
                    which: $0.which, intervalMicroseconds: $0.intervalMicroseconds,
                    valueMicroseconds: $0.valueMicroseconds)
            },
            sharedPendingSignals: sharedPendingSignals.map(ProcessImage.SignalInfo.init), descriptors: descriptors,
            unsupported: unsupported,
            capture: .init(
                tracker: capture.tracker, pauseNanoseconds: capture.pauseNanoseconds,
                totalPauseNanoseconds: capture.totalPauseNanoseconds,
                preCopyRounds: capture.preCopyRounds, pagesCopiedWhileRunning: capture.pagesCopiedWhileRunning,
                pagesCopiedFrozen: capture.pagesCopiedFrozen, kernel: capture.kernel))
    }
}
