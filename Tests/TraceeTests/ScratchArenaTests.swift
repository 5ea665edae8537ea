import Testing
import Tracee

/// The scratch allocator behind every remote call's arguments: slots never overlap, never pass
/// the end, and come back in stack order.
@Suite struct ScratchArenaTests {
    @Test func slotsAreAlignedAndNeverOverlap() throws {
        var arena = ScratchArena(base: 0x7000_1000, size: 4096)
        var slots: [(UInt64, Int)] = []
        for (count, alignment) in [(13, 1), (8, 8), (600, 1), (104, 8), (3, 16), (128, 64)] {
            let address = try arena.allocate(count, alignment: alignment)
            #expect(address % UInt64(alignment) == 0, "\(count) bytes aligned to \(alignment)")
            #expect(address >= 0x7000_1000)
            #expect(address + UInt64(count) <= 0x7000_2000)
            slots.append((address, count))
        }
        for (k, a) in slots.enumerated() {
            for b in slots[(k + 1)...] {
                #expect(a.0 + UInt64(a.1) <= b.0 || b.0 + UInt64(b.1) <= a.0, "\(a) and \(b) overlap")
            }
        }
    }

    @Test func aRequestThatDoesNotFitThrowsAndTakesNothing() throws {
        var arena = ScratchArena(base: 0x1000, size: 1024)
        _ = try arena.allocate(1000, alignment: 1)
        let used = arena.mark
        #expect(throws: ScratchError(requested: 25, available: 24, size: 1024)) { try arena.allocate(25, alignment: 1) }
        #expect(arena.mark == used)
        #expect(try arena.allocate(24, alignment: 1) == 0x1000 + 1000)
        #expect(throws: ScratchError.self) { try arena.allocate(1, alignment: 1) }
        var none = ScratchArena.none
        #expect(throws: ScratchError.self) { try none.allocate(1) }
    }

    @Test func releasingToAMarkFreesOnlyWhatCameAfter() throws {
        var arena = ScratchArena(base: 0x1000, size: 4096)
        let kept = try arena.allocate(512)
        let mark = arena.mark
        let first = try arena.allocate(600)
        arena.release(to: mark)
        // The same room again, and still past what was kept.
        #expect(try arena.allocate(600) == first)
        #expect(first >= kept + 512)
    }
}
