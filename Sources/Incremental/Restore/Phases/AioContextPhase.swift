#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
import Syscall
import Tracee

/// The image's AIO contexts, made again once its memory is in place: io_setup with as many
/// slots, the kernel's tail brought to the recorded one by writes to /dev/null (synchronous,
/// each completes one event: a tail before the head takes a full turn first, so the kernel
/// counts its completed events as it did), the recorded head and events written into the ring,
/// then the ring moved to its address (the kernel follows a ring's mremap, so the context id is
/// what it was). The ring's address is reserved first so that io_setup cannot put it there.
public struct AioContextPhase: RestartPhase {
    public var contexts: [ProcessImage.AioContext]

    public var name: String { "AIO contexts" }
    public var steps: [String] {
        contexts.map {
            "io_setup(\($0.setupEvents)) for \($0.events) events, tail \($0.tail), head \($0.head), "
                + "ring moved to 0x\(String($0.start, radix: 16))"
        }
    }

    public init(image: ProcessImage) {
        // In the order of the kernel's ids (the ring's first word), so that they come out alike.
        contexts = (image.aioContexts ?? []).sorted { Self.word($0.ring, 0) < Self.word($1.ring, 0) }
    }

    /// Requests submitted by one io_submit at most.
    static let batch = 256
    /// IOCB_CMD_PWRITE.
    static let writeCommand: UInt16 = 1

    static func word(_ ring: Data, _ index: Int) -> UInt32 {
        guard ring.count >= 4 * (index + 1) else { return 0 }
        return ring.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4 * index, as: UInt32.self) }
    }

    public func run(in session: RestartSession) throws {
        for context in contexts { try make(context, session.calls) }
    }

    private func make(_ context: ProcessImage.AioContext, _ calls: RemoteCalls) throws {
        let at = "0x\(String(context.start, radix: 16))"
        let size = context.end - context.start
        let memory = ProcessMemory(pid: calls.pid)
        try calls.call(
            .mmap, context.start, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0,
            to: "reserve the AIO ring's place at \(at)")
        let ring = try calls.withFrame { () throws(TraceeError) -> UInt64 in
            let slot = try calls.words([0])
            try calls.call(.ioSetup, context.setupEvents, slot, to: "make the AIO context of \(at) (io_setup)")
            return try calls.words(at: slot, count: 1)[0]
        }
        let header = try Self.header(of: ring, memory)
        guard header.events == context.events else {
            throw TraceeError.unsupported(
                pid: calls.pid,
                reason: "the AIO context of \(at) had \(context.events) events; io_setup(\(context.setupEvents)) "
                    + "made \(header.events) here (another number of CPUs)")
        }
        try advanceTail(of: ring, to: context, calls)
        var bytes = [UInt8](context.ring)
        guard bytes.count == Int(size) else {
            throw TraceeError.unsupported(pid: calls.pid, reason: "the AIO ring of \(at) was saved with another size")
        }
        withUnsafeBytes(of: context.head.littleEndian) { bytes.replaceSubrange(8..<12, with: $0) }
        try calls.write(Array(bytes[8..<12]), at: ring + 8)
        let eventsStart = ProcessImage.AioContext.headerSize
        try calls.write(Array(bytes[eventsStart...]), at: ring + UInt64(eventsStart))
        let made = try Self.header(of: ring, memory)
        guard made.head == context.head, made.tail == context.tail else {
            throw TraceeError.unsupported(
                pid: calls.pid,
                reason: "the AIO context of \(at) came out with head \(made.head), tail \(made.tail) "
                    + "instead of \(context.head), \(context.tail)")
        }
        try calls.call(
            .mremap, ring, size, size, CHPOX_MREMAP_MAYMOVE | CHPOX_MREMAP_FIXED, context.start,
            to: "move the AIO ring to \(at)")
    }

    /// The new context's kernel tail brought to the recorded one: each write to /dev/null
    /// completes at once and moves it by one; the head follows, up to the recorded one, to make
    /// room (what io_getevents would do).
    private func advanceTail(
        of ring: UInt64, to context: ProcessImage.AioContext, _ calls: RemoteCalls
    ) throws(TraceeError) {
        let (head, tail, events) = (Int(context.head), Int(context.tail), Int(context.events))
        guard head != 0 || tail != 0 else { return }
        let count = tail < head ? events + tail : tail
        let null = try calls.withFrame { () throws(TraceeError) in
            try calls.call(
                .openat, AT_FDCWD, try calls.string("/dev/null"), O_WRONLY | O_CLOEXEC, 0,
                to: "open /dev/null to move an AIO tail")
        }
        defer { _ = try? calls.result(of: .close, null) }
        try calls.withFrame { () throws(TraceeError) in
            let buffer = try calls.reserve(16)
            var iocb = [UInt8](repeating: 0, count: 64)
            func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
                withUnsafeBytes(of: value.littleEndian) { iocb.replaceSubrange(offset..<(offset + $0.count), with: $0) }
            }
            put(Self.writeCommand, at: 16)
            put(UInt32(null), at: 20)
            put(buffer, at: 24)
            put(UInt64(1), at: 32)
            let request = try calls.bytes(iocb, alignment: 8)
            let pointers = try calls.words(Array(repeating: request, count: min(Self.batch, max(1, events - 1))))
            var done = 0
            while done < count {
                let wanted = min(count - done, Self.batch, max(1, events - 1))
                let submitted = try calls.call(
                    .ioSubmit, ring, wanted, pointers, to: "complete requests to move an AIO tail (io_submit)")
                guard submitted > 0 else {
                    throw .unsupported(pid: calls.pid, reason: "io_submit took no request while moving an AIO tail")
                }
                done += submitted
                try calls.write(withUnsafeBytes(of: UInt32(min(done, head)).littleEndian) { Array($0) }, at: ring + 8)
            }
        }
    }

    struct Header {
        var events: UInt32
        var head: UInt32
        var tail: UInt32
    }

    static func header(of ring: UInt64, _ memory: ProcessMemory) throws(TraceeError) -> Header {
        let words = try memory.words(at: ring, count: 2)
        let data = Data(words.flatMap { word in withUnsafeBytes(of: word.littleEndian) { Array($0) } })
        return Header(events: word(data, 1), head: word(data, 2), tail: word(data, 3))
    }
}
