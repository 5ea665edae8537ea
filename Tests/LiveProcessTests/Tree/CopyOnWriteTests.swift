#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Incremental
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// Pages a parent and its child share copy-on-write, as fork left them, stay shared while
    /// cpx reads them and are shared again after a restart (one physical page in both, as
    /// /proc/PID/pagemap shows to root), and nothing else is: pages either wrote since, or the
    /// child dropped, are each one's own.
    @Suite struct CopyOnWriteTests {
        static let hasPython = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// A parent fills 64 private anonymous pages (page i holds byte i+1) and forks. The child
        /// writes pages 16-31 and drops 32-39 (MADV_DONTNEED: zero for it); the parent writes
        /// pages 40-63. Pages 0-15 stay shared. "show" prints each one's first byte of every
        /// page (child first); "end" does so and both exit.
        static let program = """
            import ctypes, mmap, os, sys
            N = 64
            m = mmap.mmap(-1, N * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            for i in range(N):
                m[i * 4096:(i + 1) * 4096] = bytes([i + 1]) * 4096
            address = ctypes.addressof(ctypes.c_char.from_buffer(m))
            go_r, go_w = os.pipe()
            ack_r, ack_w = os.pipe()
            def digest(who):
                return who + ' ' + ','.join(str(m[i * 4096]) for i in range(N))
            child = os.fork()
            if child == 0:
                for i in range(16, 32):
                    m[i * 4096] = 200
                m.madvise(mmap.MADV_DONTNEED, 32 * 4096, 8 * 4096)
                os.write(ack_w, b'r')
                while True:
                    command = os.read(go_r, 1)
                    print(digest('child'), flush=True)
                    os.write(ack_w, b'a')
                    if command != b's':
                        os._exit(0)
            os.read(ack_r, 1)
            for i in range(40, 64):
                m[i * 4096] = 100
            print('ready', child, address, flush=True)
            for line in sys.stdin:
                os.write(go_w, b's' if line.strip() == 'show' else b'e')
                os.read(ack_r, 1)
                print(digest('parent'), flush=True)
                if line.strip() != 'show':
                    os.waitpid(child, 0)
                    break
            """

        /// The pages of `count` from `address` that `a` and `b` map to one page frame.
        static func sharedPages(_ a: Int32, _ b: Int32, from address: UInt64, count: Int) throws -> Set<Int> {
            let mine = try Pagemap(pid: a).entries(from: address, count: count)
            let theirs = try Pagemap(pid: b).entries(from: address, count: count)
            return Set(
                (0..<count).filter { i in
                    mine[i] & PagemapBit.present != 0 && theirs[i] & PagemapBit.present != 0
                        && mine[i] & PagemapBit.frameMask != 0
                        && mine[i] & PagemapBit.frameMask == theirs[i] & PagemapBit.frameMask
                })
        }

        /// The pages of `count` from `address` present in `pid`.
        static func presentPages(_ pid: Int32, from address: UInt64, count: Int) throws -> Set<Int> {
            let entries = try Pagemap(pid: pid).entries(from: address, count: count)
            return Set((0..<count).filter { entries[$0] & PagemapBit.present != 0 })
        }

        @Test(.enabled(if: hasPython && getuid() == 0, "python3, and root to see page frames"), .timeLimit(.minutes(3)))
        func pagesSharedCopyOnWriteAreSharedAgainAfterARestart() throws {
            try ProcessTreeTests.asSubreaper {
                let directory = try RestartTests.scratch("cow")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let store = directory + "/store"
                let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", Self.program])
                let ready = try original.line().split(separator: " ")
                try #require(ready.count == 3, "\(ready)")
                let (root, child) = (original.pid, try #require(Int32(ready[1])))
                let address = try #require(UInt64(ready[2]))
                // The fork left pages 0-15 shared; the rest each one wrote or dropped.
                let before = try Self.sharedPages(root, child, from: address, count: 64)
                #expect(before == Set(0..<16), "\(before.sorted())")
                try original.write("show")
                let digests = [try original.line(), try original.line()]
                #expect(digests[0].hasPrefix("child 1,2,"), "\(digests[0])")
                try RestartTests.checkpoint(root, store: store, name: "cow")
                try RestartTests.checkpoint(root, store: store, name: "cow")
                // Reading them left them shared (process_vm_readv would have copied them into
                // the process: `ProcessMemory`).
                let checkpointed = try Self.sharedPages(root, child, from: address, count: 64)
                #expect(checkpointed == Set(0..<16), "\(checkpointed.sorted())")
                // The plan says which mapping the child keeps from its parent.
                let plan = try TestTools.run("ld-chpox", ["--store", store, "--name", "cow", "--plan"])
                #expect(plan.output.contains("forked by \(root) once its memory is rebuilt"), "\(plan.output)")
                #expect(plan.output.contains("keep 0x\(String(address, radix: 16)) +262144"), "\(plan.output)")
                let shown = try TestTools.run("dumpinfo", ["--store", store, "--name", "cow", "--generation", "1"])
                #expect(shown.output.contains("pid \(child) parent \(root)"), "\(shown.output)")
                #expect(shown.output.contains("pages shared copy-on-write with its parent"), "\(shown.output)")
                ProcessTreeTests.killTree([root, child])

                let restarted = try RestartTests.restart(store: store, name: "cow", generation: 1)
                defer { ProcessTreeTests.killTree([root, child]) }
                // The tree keeps its pids (they are free again).
                for _ in 0..<500 where (try? ProcFS.stat(child))?.parent != root { usleep(10_000) }
                let after = try Self.sharedPages(root, child, from: address, count: 64)
                #expect(after == Set(0..<16), "\(after.sorted())")
                // What the child had dropped it has not (not even as its parent's pages).
                let childPages = try Self.presentPages(child, from: address, count: 64)
                #expect(childPages.isDisjoint(with: Set(32..<40)), "\(childPages.sorted())")
                try restarted.write("end")
                #expect([try restarted.line(), try restarted.line()] == digests)
                #expect(try restarted.child.wait() == .exited(0))
            }
        }
    }
}
