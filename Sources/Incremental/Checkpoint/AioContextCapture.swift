import Foundation
import Syscall
import Tracee

/// AIO contexts (io_setup): each is a ring the kernel maps from its "[aio]" file, whose address
/// is the context id and whose first page holds struct aio_ring. The ring is read whole while
/// the process is stopped; a restart makes a context with as many slots, moves its ring to the
/// same address (the kernel follows a ring's mremap) and gives it the same head, tail and
/// completed events. A ring that does not look as the kernel makes it is refused.
///
/// A request the kernel has not completed yet is in no ring and cannot be seen from outside
/// the kernel: a restart would never complete it. Requests on files the kernel handles
/// synchronously (regular files without O_DIRECT, /dev/null, pipes) are complete when
/// io_submit returns. Direct I/O under way completes into the frozen process's ring: its tail
/// is read again 20 ms later, and a move refuses the context. A request that may wait for
/// ever (IOCB_CMD_POLL on a file with nothing to report) is not detected (nor by CRIU 4.2,
/// whose parasite says "XXX: wait aio completion").
enum AioContextCapture {
    static func isRing(_ region: MemoryRegion) -> Bool { region.path.hasPrefix("/[aio]") }

    struct Captured {
        var contexts: [ProcessImage.AioContext] = []
        var unsupported: [String] = []
    }

    static func capture(_ pid: Int32, regions: [MemoryRegion]) throws(TraceeError) -> Captured {
        var captured = Captured()
        for region in regions where isRing(region) {
            let at = "an AIO context (io_setup) at 0x\(String(region.start, radix: 16))"
            guard region.readable, region.writable, !region.executable, region.shared else {
                captured.unsupported.append("\(at): its ring is \(region.protection), not rw-s (mprotect)")
                continue
            }
            let words = try ProcessMemory(pid: pid).words(at: region.start, count: Int(region.size / 8))
            let ring = words.flatMap { word in withUnsafeBytes(of: word.littleEndian) { Array($0) } }
            if let reason = refusal(ring, size: region.size) {
                captured.unsupported.append("\(at): \(reason)")
                continue
            }
            // A request still under way (direct I/O) completes into the ring of the frozen
            // process: its tail moves. Looked at again after a while, a moved tail refuses it
            // (the completion would be lost to the restart).
            CurrentProcess.sleep(microseconds: 20_000)
            let later = try ProcessMemory(pid: pid).words(at: region.start, count: 2)
            if later.count == 2, UInt32(truncatingIfNeeded: later[1] >> 32) != field(ring, 3) {
                captured.unsupported.append(
                    "\(at): a request completed while it was frozen: requests are in flight, and their "
                        + "completions would be lost to a restart (checkpoint it when its I/O is done)")
                continue
            }
            captured.contexts.append(
                .init(
                    start: region.start, end: region.end, events: field(ring, 1), head: field(ring, 2),
                    tail: field(ring, 3), ring: Data(ring)))
        }
        return captured
    }

    /// Word `index` of struct aio_ring (0 id, 1 nr, 2 head, 3 tail, 4 magic, 5 compat,
    /// 6 incompat, 7 header length).
    static func field(_ ring: [UInt8], _ index: Int) -> UInt32 {
        ring.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4 * index, as: UInt32.self) }
    }

    /// Why `ring` is not one a restart can make again: its header is not the kernel's, or its
    /// head or tail lies outside it (a program wrote there).
    static func refusal(_ ring: [UInt8], size: UInt64) -> String? {
        typealias Context = ProcessImage.AioContext
        guard ring.count >= Context.headerSize else { return "its ring is smaller than its header" }
        let slots = Context.slots(inRingOf: size)
        let (nr, head, tail) = (field(ring, 1), field(ring, 2), field(ring, 3))
        guard field(ring, 4) == Context.magic, field(ring, 5) == Context.compatFeatures,
            field(ring, 6) == Context.incompatFeatures, field(ring, 7) == UInt32(Context.headerSize)
        else { return "its ring header is not the kernel's (magic, features or header length differ)" }
        guard nr == slots else { return "its ring says \(nr) events where \(size) bytes hold \(slots)" }
        guard head < nr, tail < nr else { return "its ring's head \(head) or tail \(tail) is outside its \(nr) events" }
        return nil
    }
}
