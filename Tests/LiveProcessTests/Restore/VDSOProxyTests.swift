import Foundation
import Incremental
@testable import Store
import Syscall
import TestTools
import Testing
import Tracee
import TrackerTestSupport

extension LiveProcess {
    /// A restart under a kernel whose vDSO is not the image's (`VDSOProxy`). The host's kernel
    /// cannot change, so the image is made another's: a byte of its recorded vDSO's padding,
    /// past its code, is changed (as the same kernel's vDSO patched for another CPU differs),
    /// which the running kernel's no longer matches. The process's libc still holds pointers into the image's vDSO, whose code reads vvar
    /// pages at offsets of its own, which the restart does not map: only the redirection of
    /// every entry into the running vDSO keeps clock_gettime, gettimeofday, time, getcpu and
    /// clock_getres right (before the proxy, the restart refused: "restart it on the kernel that
    /// checkpointed it"). The QEMU proof (scripts/qemu-tests.sh) does it between real kernels.
    @Suite(.serialized) struct VDSOProxyTests {
        struct Clocks: Equatable {
            var realtime, monotonic, microseconds, seconds: Int64
            var cpu: Int
            var resolution: Int64

            init(_ line: String) throws {
                let words = line.split(separator: " ")
                try #require(words.count == 7 && words[0] == "clock", "\(line)")
                let numbers = words.dropFirst().compactMap { Int64($0) }
                try #require(numbers.count == 6, "\(line)")
                (realtime, monotonic, microseconds, seconds) = (numbers[0], numbers[1], numbers[2], numbers[3])
                (cpu, resolution) = (Int(numbers[4]), numbers[5])
            }
        }

        static func now(_ clock: clockid_t) -> Int64 {
            var time = timespec()
            clock_gettime(clock, &time)
            return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
        }

        /// The workload's clocks, each checked against this process's own read just before and
        /// after (one kernel, one clock: the workload's must fall between).
        static func expectClocksRight(_ workload: WorkloadProcess, after earlier: Clocks?) throws -> Clocks {
            let (realBefore, monoBefore) = (now(CLOCK_REALTIME), now(CLOCK_MONOTONIC))
            let clocks = try Clocks(try workload.send("t"))
            let (realAfter, monoAfter) = (now(CLOCK_REALTIME), now(CLOCK_MONOTONIC))
            #expect((realBefore...realAfter).contains(clocks.realtime), "CLOCK_REALTIME")
            #expect((monoBefore...monoAfter).contains(clocks.monotonic), "CLOCK_MONOTONIC")
            #expect(((realBefore / 1000)...(realAfter / 1000)).contains(clocks.microseconds), "gettimeofday")
            #expect(
                ((realBefore / 1_000_000_000 - 1)...(realAfter / 1_000_000_000)).contains(clocks.seconds), "time")
            #expect(clocks.cpu >= 0 && clocks.cpu < ProcessInfo.processInfo.activeProcessorCount + 64, "getcpu")
            var resolution = timespec()
            clock_getres(CLOCK_MONOTONIC, &resolution)
            #expect(clocks.resolution == Int64(resolution.tv_sec) * 1_000_000_000 + Int64(resolution.tv_nsec))
            if let earlier {
                #expect(clocks.realtime > earlier.realtime)
                #expect(clocks.monotonic > earlier.monotonic)
            }
            return clocks
        }

        /// Rewrites generation `generation` of `chain` with `edit` applied to its image.
        static func editImage(
            _ store: Store, chain: String, generation: UInt64, _ edit: (inout ProcessImage) throws -> Void
        ) throws {
            var manifest = try store.manifest(chain: chain, generation: generation)
            var image = try ProcessImage(decoding: manifest.metadata, generation: generation)
            try edit(&image)
            manifest.metadata = try image.encoded()
            let bytes = manifest.encoded()
            let id = bytes.withUnsafeBytes { ChunkID(hashing: $0) }
            try store.directory.publish(
                bytes, as: GenerationManifest.fileName(id), in: store.directory.manifests, dirName: "manifests")
            var edited = try store.chain(chain)
            let entry = try #require(edited.entries.firstIndex { $0.generation == generation })
            edited.entries[entry].manifest = id
            try store.publish(edited)
        }

        /// The image's vDSO made another kernel's: its last byte, padding past its code (its one
        /// PT_LOAD ends before), changed.
        static func markVDSOAsAnotherKernels(_ image: inout ProcessImage) throws {
            var bytes = try #require(image.vdso, "the image holds its vDSO's bytes")
            let last = bytes.count - 1
            try #require(bytes[last] == 0, "the vDSO ends in padding")
            bytes[last] = 0xcc
            image.vdso = bytes
        }

        /// AT_SYSINFO_EHDR of the kernel's auxv of process `pid`.
        static func sysinfoHeader(_ pid: Int32) throws -> UInt64? {
            let words = try ProcFS.bytes(pid, "auxv").withUnsafeBytes { raw in
                (0..<(raw.count / 8)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
            }
            return stride(from: 0, to: words.count - 1, by: 2).first { words[$0] == 33 }.map { words[$0 + 1] }
        }

        static func region(_ pid: Int32, _ path: String) throws -> MemoryRegion? {
            try MemoryRegion.of(pid).first { $0.path == path }
        }

        @Test(.timeLimit(.minutes(3)))
        func clocksStayRightThroughAProxiedVDSOAndAnotherRestart() throws {
            let directory = try RestartTests.scratch("vdso-proxy")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let storePath = directory + "/store"
            let original = try WorkloadProcess(executable: TestTools.path("chpox-dirty-workload"), seed: 31)
            for n in 0..<2 { try original.round(n) }
            let before = try Self.expectClocksRight(original, after: nil)
            let vdso = try #require(try Self.region(original.pid, "[vdso]"))
            #expect(try original.send("v") == "vdso 0x\(String(vdso.start, radix: 16))")
            try RestartTests.checkpoint(original.pid, store: storePath, name: "vdso")
            RestartTests.end(original)
            let store = try Store(at: storePath)
            try Self.editImage(store, chain: "vdso", generation: 0, Self.markVDSOAsAnotherKernels)

            let plan = try TestTools.run("ld-chpox", ["--store", storePath, "--name", "vdso", "--plan"])
            #expect(plan.status == 0, "\(plan.errors)")
            #expect(plan.output.contains("vDSO proxied"), "\(plan.output)")
            for name in ["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu"] {
                #expect(plan.output.contains("\(name) at +0x"), "\(name) is redirected: \(plan.output)")
            }

            let restarted = try RestartTests.restart(store: storePath, name: "vdso", generation: 0, extra: ["--json"])
            let document = try JSONDecoder().decode(RestartDocument.self, from: Data(try restarted.line().utf8))
            #expect(document.notices.contains { $0.hasPrefix("vDSO proxied") }, "\(document.notices)")
            // The image's vDSO is memory of the process now, at its address; the kernel's is
            // elsewhere, and the kernel's auxv (/proc/PID/auxv, what a debugger reads) says where.
            // The process's own copy of its auxv (on its stack, what getauxval reads) is its
            // memory as it was: it names the proxy, whose entries lead to the kernel's too.
            let proxy = try #require(try MemoryRegion.of(document.pid).first { $0.start == vdso.start })
            #expect(proxy.path == "" && proxy.executable && !proxy.writable, "\(proxy)")
            let running = try #require(try Self.region(document.pid, "[vdso]"))
            #expect(running.start != vdso.start)
            #expect(try Self.sysinfoHeader(document.pid) == running.start)
            #expect(try restarted.send("v") == "vdso 0x\(String(vdso.start, radix: 16))")
            var clocks = try Self.expectClocksRight(restarted, after: before)
            usleep(20_000)
            clocks = try Self.expectClocksRight(restarted, after: clocks)
            #expect(try restarted.selfCheck() == "selfcheck ok")
            #expect(try restarted.send("f") == "fork ok", "a fork keeps the proxy")
            try restarted.round(2)
            clocks = try Self.expectClocksRight(restarted, after: clocks)

            // Checkpointed again, the proxy is its memory and the kernel's vDSO its vDSO: a
            // restart under this kernel moves that one back and the proxy still leads there.
            try RestartTests.checkpoint(document.pid, store: storePath, name: "vdso")
            #expect(try restarted.quit() == .exited(0))
            let again = try RestartTests.restart(store: storePath, name: "vdso", generation: 1, extra: ["--json"])
            let second = try JSONDecoder().decode(RestartDocument.self, from: Data(try again.line().utf8))
            #expect(!second.notices.contains { $0.hasPrefix("vDSO proxied") }, "\(second.notices)")
            #expect(try Self.region(second.pid, "[vdso]")?.start == running.start)
            _ = try Self.expectClocksRight(again, after: clocks)
            #expect(try again.selfCheck() == "selfcheck ok")
            #expect(try again.quit() == .exited(0))
        }

        struct RestartDocument: Decodable {
            var pid: Int32
            var notices: [String]
        }
    }
}
