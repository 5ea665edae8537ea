import Store
import TargetProcess

/// Text-like page contents, like a heap of log lines: each line is one of 256 six-word
/// templates followed by four free words, all drawn from a fixed 1024-word vocabulary with a
/// skew towards the common ones. LZ4 shrinks it about 2.7x on 64 KiB blocks (the benchmarks
/// report the exact ratio). Each page opens with its number and version, so no two pages of a
/// data set are alike and every page is a new chunk the first time it is stored.
enum TextPages {
    static let vocabulary: [[UInt8]] = {
        var random = SplitMix64(seed: 0xC4F0_0B1E)
        let letters = Array("etaoinshrdlcumwfgypbvkjxqz".utf8)
        return (0..<1024).map { _ in
            let length = 2 + Int(random.next() % 9)
            // Skewed letter choice, so words share fragments the way natural language does.
            return (0..<length).map { _ in letters[skewed(random.next(), below: letters.count)] }
        }
    }()

    static let templates: [[UInt8]] = {
        var random = SplitMix64(seed: 0x7E3D_1A7E)
        return (0..<256).map { _ in
            Array(
                (0..<6).map { _ in vocabulary[skewed(random.next(), below: vocabulary.count)] }.joined(separator: [0x20]
                ))
        }
    }()

    /// A number below `count`, small ones more likely (the square of a uniform fraction).
    @inline(__always)
    static func skewed(_ random: UInt64, below count: Int) -> Int {
        let u = random & 0xFFFF
        return Int((u * u * UInt64(count)) >> 32)
    }

    /// Fills `page` (one page) with the text of page `number`, `version`.
    static func fill(_ page: UnsafeMutableRawBufferPointer, number: UInt64, version: UInt64) {
        precondition(page.count == pageSize)
        var random = SplitMix64(seed: number &* 0x1_0000_0001 ^ version &* 0x5851_F42D_4C95_7F2D)
        var at = 0
        func emit(_ bytes: [UInt8]) {
            for byte in bytes where at < pageSize {
                page[at] = byte
                at += 1
            }
        }
        emit(Array("page \(number) version \(version)\n".utf8))
        while at < pageSize {
            emit(templates[skewed(random.next(), below: templates.count)])
            for _ in 0..<4 {
                emit([0x20])
                emit(vocabulary[skewed(random.next(), below: vocabulary.count)])
            }
            emit([0x0A])
        }
    }
}

/// A set of pages held in memory: their numbers and their bytes, page `k` of `bytes` being page
/// `numbers[k]`. Allocated once per process and never freed (the benchmarks share them).
final class PageSet: @unchecked Sendable {
    let numbers: [UInt64]
    let bytes: UnsafeMutableRawBufferPointer

    init(numbers: [UInt64], version: UInt64) {
        self.numbers = numbers
        bytes = .allocate(byteCount: numbers.count * pageSize, alignment: pageSize)
        for (k, number) in numbers.enumerated() {
            TextPages.fill(
                UnsafeMutableRawBufferPointer(rebasing: bytes[(k * pageSize)..<((k + 1) * pageSize)]),
                number: number, version: version)
        }
    }

    var count: Int { numbers.count }
    var byteCount: Int { bytes.count }

    func page(_ k: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[(k * pageSize)..<((k + 1) * pageSize)])
    }
}
