import Testing
import Tracee

@testable import Incremental

/// `MemoryLayoutPhase.stretchesToUnmap`: the stub's memory goes in a few munmaps, and nothing
/// to keep (the trampoline, the kernel's pages, what a forked process keeps) is touched.
/// Checked on random layouts against the pages a model says must go.
@Suite struct StubDropTests {
    static let page: UInt64 = 4096

    static func region(_ start: UInt64, _ end: UInt64, _ path: String = "") -> MemoryRegion {
        let line =
            "\(String(start * page, radix: 16))-\(String(end * page, radix: 16)) r--p 00000000 00:00 0          \(path)"
        return try! MemoryRegion.parse(line, file: "test")[0]
    }

    /// Pages of `ranges` (byte ranges) as page numbers.
    static func pages(_ ranges: [Range<UInt64>]) -> Set<UInt64> {
        Set(ranges.flatMap { ($0.lowerBound / page)..<($0.upperBound / page) })
    }

    @Test func aTypicalStubGoesInAFewCalls() {
        // exe (3 mappings), libc (4), ld.so (4), stack; the trampoline (not listed: mapped after
        // the map was read) in the hole between exe and libs; vvar and
        // vdso right below the stack.
        let trampoline: UInt64 = 0x10000
        let stub = [
            Self.region(0x100, 0x101), Self.region(0x101, 0x103), Self.region(0x103, 0x104),
            Self.region(0x70000, 0x70010), Self.region(0x70010, 0x70100), Self.region(0x70100, 0x70110),
            Self.region(0x70120, 0x70122), Self.region(0x70200, 0x70201), Self.region(0x70201, 0x70220),
            Self.region(0x70220, 0x70225), Self.region(0x70225, 0x70226),
            Self.region(0x7f000, 0x7f021, "[stack]"), Self.region(0x7f100, 0x7f104, "[vvar]"),
            Self.region(0x7f104, 0x7f106, "[vdso]"),
        ]
        let stretches = MemoryLayoutPhase.stretchesToUnmap(
            stub, keeping: [(trampoline * Self.page)..<((trampoline + 5) * Self.page)])
        #expect(stretches.count == 2, "\(stretches)")  // below the trampoline, and between it and the vvar
        #expect(
            Self.pages(stretches).isSuperset(
                of: Self.pages(
                    stub.filter { !$0.isSpecial && $0.start != trampoline * Self.page }.map { $0.start..<$0.end }
                )))
        #expect(!stretches.contains { $0.overlaps((trampoline * Self.page)..<((trampoline + 5) * Self.page)) })
    }

    @Test func randomLayoutsLoseNothingAndTouchNothingKept() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var stub: [MemoryRegion] = []
            var at: UInt64 = 16
            for _ in 0..<Int.random(in: 1..<30, using: &generator) {
                at += UInt64.random(in: 0..<4, using: &generator)  // 0: adjacent
                let end = at + UInt64.random(in: 1..<6, using: &generator)
                let path = Int.random(in: 0..<8, using: &generator) == 0 ? "[vdso]" : ""
                stub.append(Self.region(at, end, path))
                at = end
            }
            // The trampoline: mapped after the stub's map was read, in a hole between its mappings
            // (or after them); sometimes listed among them.
            let holes = zip(stub, stub.dropFirst()).filter { $0.end < $1.start }.map { $0.end..<$1.start }
            let trampoline = holes.randomElement(using: &generator) ?? (at + 1) * Self.page..<(at + 2) * Self.page
            if Bool.random(using: &generator) {
                stub.append(Self.region(trampoline.lowerBound / Self.page, trampoline.upperBound / Self.page))
            }
            var kept: [Range<UInt64>] = []
            for region in stub where Int.random(in: 0..<6, using: &generator) == 0 && region.size > Self.page {
                kept.append(region.start..<(region.start + Self.page))  // the first page of it
            }
            let keep = stub.filter(\.isSpecial).map { $0.start..<$0.end } + [trampoline] + kept
            let stretches = MemoryLayoutPhase.stretchesToUnmap(stub, keeping: [trampoline] + kept)
            let mustGo = Self.pages(stub.filter { !$0.isSpecial }.map { $0.start..<$0.end })
                .subtracting(Self.pages(keep))
            let going = Self.pages(stretches)
            #expect(going.isSuperset(of: mustGo))
            #expect(going.isDisjoint(with: Self.pages(keep)))
            #expect(stretches.count <= keep.count + 1)
            #expect(zip(stretches, stretches.dropFirst()).allSatisfy { $0.upperBound < $1.lowerBound })
        }
    }
}
