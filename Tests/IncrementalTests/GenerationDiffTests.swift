@testable import Incremental
import Store
import Testing

/// How `dumpinfo --diff` pairs the mappings of two generations.
@Suite struct GenerationDiffTests {
    static func mapping(
        _ start: UInt64, _ end: UInt64, _ protection: ProcessImage.Protection = [.read, .write], path: String = ""
    ) -> ProcessImage.Mapping {
        ProcessImage.Mapping(
            start: start, end: end, protection: protection, backing: .anonymous, offset: 0, device: "00:00", inode: 0,
            path: path, flags: [])
    }

    static func kinds(_ old: [ProcessImage.Mapping], _ new: [ProcessImage.Mapping], changed: [UInt64] = []) -> [String]
    {
        GenerationDiff.mappingChanges(old, new, changed: changed, oldMap: .empty).map {
            "\($0.kind.rawValue) \(String($0.mapping.start, radix: 16))"
                + ($0.before.map { " was \(String($0.start, radix: 16))-\(String($0.end, radix: 16))" } ?? "")
        }
    }

    @Test func aBoundaryThatMovedIsAChangeNotARemovalAndAnAddition() {
        // An arena grew into its guard area: both continue, reshaped.
        let old = [Self.mapping(0x1000_0000, 0x1009_0000), Self.mapping(0x1009_0000, 0x1400_0000, [])]
        let new = [Self.mapping(0x1000_0000, 0x100a_0000), Self.mapping(0x100a_0000, 0x1400_0000, [])]
        #expect(
            Self.kinds(old, new) == [
                "changed 10000000 was 10000000-10090000", "changed 100a0000 was 10090000-14000000",
            ])
    }

    @Test func unrelatedMappingsAreAddedAndRemoved() {
        let old = [Self.mapping(0x1000_0000, 0x1001_0000), Self.mapping(0x2000_0000, 0x2001_0000, path: "/a")]
        let new = [Self.mapping(0x1000_0000, 0x1001_0000), Self.mapping(0x2000_8000, 0x2001_8000, path: "/b")]
        // Same extent and no page changed: not listed; the file mapping at another place and path is new.
        #expect(Self.kinds(old, new) == ["removed 20000000", "added 20008000"])
        // A changed page of an unchanged mapping lists it as `pages`.
        #expect(
            Self.kinds(old, new, changed: [0x1000_0000 / 4096 + 3]) == [
                "pages 10000000", "removed 20000000", "added 20008000",
            ])
    }
}

extension GenerationDiffTests {
    @Test func pagesOutsideEveryMappingAreFoundInOneSweep() {
        let ranges = [PageRange(first: 10, count: 5), PageRange(first: 0, count: 3), PageRange(first: 12, count: 10)]
        #expect(GenerationDiff.outside([0, 2, 3, 9, 10, 14, 15, 21, 22, 40], ranges) == [3, 9, 22, 40])
        #expect(GenerationDiff.outside([1, 2], []) == [1, 2])
    }
}
