import Foundation
import SoftDirty
import Syscall
import Tracee
import TrackerTestSupport
import TestTools
import Testing

typealias Tools = TestTools

let probe = TrackerProbe()

extension LiveProcess {
    /// Trackers proven on the host kernel. Tests that ptrace are serialized.
    @Suite struct TrackerProofTests {
        /// A kernel configuration option as the kernel itself was built: true (`=y`), false
        /// (`is not set`), nil where neither /proc/config.gz nor /boot/config-<release> can be read.
        static func kernelConfig(_ option: String) -> Bool? {
            var name = utsname()
            uname(&name)
            let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            var text = try? String(contentsOfFile: "/boot/config-\(release)", encoding: .utf8)
            if text == nil, FileManager.default.isReadableFile(atPath: "/proc/config.gz"),
                let gzip = ["/usr/bin/gzip", "/bin/gzip"].first(where: FileManager.default.isExecutableFile)
            {
                let process = Process(), pipe = Pipe()
                process.executableURL = URL(fileURLWithPath: gzip)
                process.arguments = ["-dc", "/proc/config.gz"]
                process.standardOutput = pipe
                if (try? process.run()) != nil {
                    let data = pipe.fileHandleForReading.readDataToEndOfFile()
                    process.waitUntilExit()
                    if process.terminationStatus == 0 { text = String(decoding: data, as: UTF8.self) }
                }
            }
            guard let text else { return nil }
            let lines = text.split(separator: "\n")
            if lines.contains(where: { $0 == "\(option)=y" }) { return true }
            if lines.contains(where: { $0 == "# \(option) is not set" }) { return false }
            return nil
        }

        /// Soft-dirty measured without the probe: clear_refs 4 on ourselves, write a page, and
        /// read its pagemap entry's bit 55 straight from /proc/self/pagemap.
        static func softDirtyMeasured() throws -> Bool {
            let page = try #require(mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
            try #require(page != MAP_FAILED)
            defer { munmap(page, 4096) }
            page.storeBytes(of: 1, as: UInt8.self)
            let clearRefs = open("/proc/self/clear_refs", O_WRONLY)
            try #require(clearRefs >= 0, "open /proc/self/clear_refs")
            defer { close(clearRefs) }
            try #require(write(clearRefs, "4", 1) == 1, "clear_refs 4")
            page.storeBytes(of: 2, as: UInt8.self)
            let pagemap = open("/proc/self/pagemap", O_RDONLY)
            try #require(pagemap >= 0, "open /proc/self/pagemap")
            defer { close(pagemap) }
            var entry: UInt64 = 0
            let offset = off_t(UInt(bitPattern: page) / 4096 * 8)
            try #require(pread(pagemap, &entry, 8, offset) == 8, "read the page's pagemap entry")
            try #require(entry & (1 << 63) != 0, "the written page is present")
            return entry & (1 << 55) != 0
        }

        @Test func probeTellsTheTruthAboutThisKernel() throws {
            // The hash tracker needs nothing; its probe always passes.
            #expect(probe.result(.hash).supported)
            // Soft-dirty: the probe against our own measurement, and against the kernel's
            // configuration where it can be read.
            let softDirty = probe.result(.softDirty)
            let measured = try Self.softDirtyMeasured()
            let bit = measured ? "has" : "lacks"
            #expect(
                softDirty.supported == measured,
                "probe: \(softDirty.detail); measured: a page written after clear_refs 4 \(bit) bit 55"
            )
            let configured = Self.kernelConfig("CONFIG_MEM_SOFT_DIRTY")
            if let configured {
                let setting = configured ? "on" : "off"
                #expect(
                    softDirty.supported == configured,
                    "probe: \(softDirty.detail); the kernel was built with CONFIG_MEM_SOFT_DIRTY \(setting)"
                )
            }
            if !measured || configured == false {
                // On a kernel without soft-dirty, the probe must say so rather than trust clear_refs.
                #expect(
                    softDirty.detail.contains("unsupported by this kernel (CONFIG_MEM_SOFT_DIRTY is off"),
                    "\(softDirty.detail)")
            }
            #expect(probe.best == probe.results.first { $0.supported }!.kind)
        }

        @Test(
            .enabled(if: probe.result(.uffdWP).supported, "this kernel lacks async uffd-wp (Linux 6.7+)"),
            .timeLimit(.minutes(5)))
        func uffdWriteProtectMissesNothing() throws {
            let outcome = try TrackerProof.run(
                .uffdWP, workloadPath: Tools.path("chpox-dirty-workload"), rounds: 60, seed: 11)
            print("PROOF \(outcome)")
            #expect(outcome.rounds == 60)
            #expect(outcome.missedPages == 0, "\(outcome)")
            #expect(outcome.changedPages > 1000)
        }

        @Test(.timeLimit(.minutes(5))) func hashMissesNothing() throws {
            let outcome = try TrackerProof.run(
                .hash, workloadPath: Tools.path("chpox-dirty-workload"), rounds: 50, seed: 12)
            print("PROOF \(outcome)")
            #expect(outcome.missedPages == 0, "\(outcome)")
            #expect(outcome.changedPages > 1000)
        }

        @Test(
            .enabled(
                if: probe.result(.softDirty).supported,
                "this kernel has no soft-dirty bits (proven in the QEMU guests instead)"),
            .timeLimit(.minutes(5)))
        func softDirtyMissesNothing() throws {
            let outcome = try TrackerProof.run(
                .softDirty, workloadPath: Tools.path("chpox-dirty-workload"), rounds: 50, seed: 13)
            #expect(outcome.missedPages == 0, "\(outcome)")
        }

        @Test(
            .enabled(if: probe.results.contains { !$0.supported }, "every tracker works on this kernel: none to refuse")
        )
        func forcingAnUnsupportedTrackerSaysWhy() throws {
            let unsupported = probe.results.filter { !$0.supported }
            try #require(!unsupported.isEmpty)
            let workload = try DirtyWorkloadProcess(executable: Tools.path("chpox-dirty-workload"), seed: 1)
            for result in unsupported {
                let error = #expect(throws: TraceeError.self) {
                    _ = try TrackerSelection.start(result.kind, pid: workload.pid)
                }
                // The refusal names the tracker and the probe's reason, word for word.
                #expect(
                    error
                        == .unsupported(pid: workload.pid, reason: "tracker \(result.kind.rawValue): \(result.detail)"))
                #expect(error?.description == "pid \(workload.pid): tracker \(result.kind.rawValue): \(result.detail)")
                if result.kind == .softDirty, Self.kernelConfig("CONFIG_MEM_SOFT_DIRTY") == false {
                    #expect(
                        error?.description.contains("CONFIG_MEM_SOFT_DIRTY is off") == true,
                        "\(String(describing: error))")
                }
            }
        }
    }
}
