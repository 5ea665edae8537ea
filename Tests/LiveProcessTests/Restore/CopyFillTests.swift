import Foundation
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// The eager page fill copies anonymous private memory in through a userfaultfd of the
    /// process (`PageCopier`, UFFDIO_COPY), then lets it go: the memory must be exactly the
    /// saved memory, across mapping boundaries (a run over two mappings is refused whole by the
    /// kernel) and in memory the kernel will not copy into, which is written as before.
    @Suite struct CopyFillTests {
        @Test(.timeLimit(.minutes(2))) func theDirtyWorkloadIsCopiedInAndProvesItsMemory() throws {
            let directory = try RestartTests.scratch("copy-fill")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            try LazyRestartTests.checkpointedWorkload(store: store, seed: 31)
            let restarted = try WorkloadProcess(
                executable: TestTools.path("ld-chpox"),
                arguments: ["--store", store, "--name", "dirty", "--wait", "--json"])  // eager, even in the lazy pass
            let document = try JSONDocument.decode(RestartDocument.self, try restarted.line())
            #expect(try restarted.selfCheck() == "selfcheck ok")
            for n in 3..<6 { try restarted.round(n) }
            #expect(try restarted.selfCheck() == "selfcheck ok")
            #expect(try restarted.quit() == .exited(0))
            // Its heap and main region are anonymous private memory: most pages come so.
            #expect(
                document.pagesCopied > document.pagesWritten / 2, "\(document.pagesCopied) of \(document.pagesWritten)")
            #expect(document.pagesCopied <= document.pagesWritten)
        }

        /// 64 written pages, the middle ones made read-only, the last ones not readable until
        /// asked: four mappings side by side, whose stored pages one copy (or one fault's block,
        /// lazily) would span; it answers which pages are wrong after the restart.
        static let mappingBoundaries = """
            pages = libc.mmap(None, 64 * PAGE, 3, 0x22, -1, 0)  # MAP_PRIVATE | MAP_ANONYMOUS
            for k in range(64):
                ctypes.memmove(pages + k * PAGE, b"%08d" % (k + 1000), 8)
            assert libc.mprotect(pages + 20 * PAGE, 8 * PAGE, 1) == 0  # PROT_READ
            assert libc.mprotect(pages + 56 * PAGE, 8 * PAGE, 0) == 0  # PROT_NONE
            print("pending", flush=True)
            sys.stdin.readline()
            assert libc.mprotect(pages + 56 * PAGE, 8 * PAGE, 1) == 0
            wrong = [k for k in range(64) if ctypes.string_at(pages + k * PAGE, 8) != b"%08d" % (k + 1000)]
            print("wrong", wrong, flush=True)
            """

        @Test(.timeLimit(.minutes(2))) func pagesOnBothSidesOfAMappingBoundaryAndReadOnlyOnesAreFilled() throws {
            let answer = try MappingRestartTests.answerAfterRestart(
                "copy-split", script: Self.mappingBoundaries)
            #expect(answer == "wrong []")
        }
    }
}
