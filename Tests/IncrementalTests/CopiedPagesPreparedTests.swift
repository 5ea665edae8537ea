import Foundation
import Syscall
import Testing
import Tracee

@testable import Incremental

#if canImport(Glibc)
import Glibc
#endif

/// CopiedPages reading pages of this test process (process_vm_readv on itself): into a buffer
/// prepared beforehand when it holds them, which the copy then keeps alive, and into a fresh
/// one when it does not; the pages handed on are the process's either way.
@Suite struct CopiedPagesPreparedTests {
    static let pageCount = 64

    /// Pages of this process, each filled with a pattern of its own number.
    static func source() throws -> AnonymousMapping {
        let source = try AnonymousMapping(size: Page.bytes(pageCount), [.read, .write])
        for page in 0..<pageCount {
            source.bytes.page(at: page).initializeMemory(
                as: UInt8.self, repeating: UInt8(truncatingIfNeeded: page * 7 + 1))
        }
        return source
    }

    /// Two runs of `source`, a gap between them.
    static func runs(of source: AnonymousMapping) -> [PageRun] {
        let start = source.address
        return [
            PageRun(start: start, end: start + Page.bytes(UInt64(20))),
            PageRun(start: start + Page.bytes(UInt64(30)), end: start + Page.bytes(UInt64(pageCount))),
        ]
    }

    /// Every slice's bytes against `source`'s pages at the same addresses; the pages seen.
    static func check(_ copy: CopiedPages, against source: AnonymousMapping) throws -> Int {
        var seen = 0
        try copy.forEach { slice in
            for k in 0..<Int(slice.count) {
                let page = Int(slice.firstPage - Page.number(of: source.address)) + k
                #expect(slice.bytes.page(at: k).elementsEqual(UnsafeRawBufferPointer(source.bytes.page(at: page))))
                seen += 1
            }
        }
        return seen
    }

    @Test func aPreparedBufferThatHoldsThePagesIsUsedAndKept() throws {
        let source = try Self.source()
        var prepared: AnonymousMapping? = try AnonymousMapping(size: Page.bytes(Self.pageCount), [.read, .write])
        try prepared?.populate(0..<Page.bytes(Self.pageCount))
        let copy = try CopiedPages(Self.runs(of: source), from: ProcessMemory(pid: getpid()), prepared: prepared)
        #expect(copy.isIn(try #require(prepared)))
        prepared = nil  // the copy's pages stay readable: it holds the buffer
        #expect(try Self.check(copy, against: source) == 54)
        #expect(copy.pageCount == 54)
    }

    @Test func aPreparedBufferTooSmallIsLeftAndAFreshOneTaken() throws {
        let source = try Self.source()
        let small = try AnonymousMapping(size: Page.bytes(53), [.read, .write])
        small.bytes.initializeMemory(as: UInt8.self, repeating: 0xEE)
        let copy = try CopiedPages(Self.runs(of: source), from: ProcessMemory(pid: getpid()), prepared: small)
        #expect(!copy.isIn(small))
        #expect(try Self.check(copy, against: source) == 54)
        #expect(small.bytes.allSatisfy { $0 == 0xEE }, "nothing was read into the buffer that was too small")
    }
}
