#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Incremental
import Testing
import Tracee

/// `VDSOProxy`'s decisions, from this kernel's real vDSO and copies of it changed as another
/// kernel's would differ (functions at other offsets, one missing), and the code it writes run
/// for real in this process: a redirected entry must tell the time as the vDSO does.
@Suite struct VDSOProxyPlanTests {
    static let running = VDSOProxy.running
    static let hasVDSO = running != nil
    static let vdsoStart: UInt64 = 0x7fff_e000_0000

    /// The fixture's image with a vDSO of `bytes` at `vdsoStart` (nil bytes: an image from
    /// before they were kept, of `size`).
    static func image(vdso bytes: [UInt8]?, size: Int? = nil) throws -> ProcessImage {
        var image = try ProcessImage(decoding: InspectFixture.image(generation: 0), generation: 0)
        let length = UInt64(size ?? bytes?.count ?? 0)
        image.mappings.append(
            .init(
                start: vdsoStart, end: vdsoStart + length, protection: [.read, .execute], backing: .vdso, offset: 0,
                device: "00:00", inode: 0, path: "[vdso]", flags: []))
        image.vdso = bytes.map { Data($0) }
        return image
    }

    /// Little-endian words of `bytes`.
    static func word(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) }
    }

    /// Where the symbol table entries (Elf64_Sym: name u32, info u8, other u8, section u16,
    /// value u64, size u64) of functions at `offset` of length `size` are, found by their bytes.
    static func symbolEntries(_ bytes: [UInt8], offset: UInt64, size: UInt64) -> [Int] {
        stride(from: 0, to: bytes.count - 24, by: 8).filter {
            bytes[$0 + 4] & 0xf == 2 && word(bytes, at: $0 + 8) == offset && word(bytes, at: $0 + 16) == size
        }
    }

    /// `bytes` with `name` renamed in its string table (the same length, one letter changed).
    /// The plain names (`time`) may be the tails of the prefixed ones (`__vdso_time`), which a
    /// linker merges: `alone: false` for those, which need not be found alone.
    static func renaming(_ bytes: [UInt8], _ name: String, to other: String, alone: Bool = true) throws -> [UInt8] {
        let old = Array(name.utf8) + [0]
        let new = Array(other.utf8) + [0]
        try #require(old.count == new.count)
        var bytes = bytes
        var found = false
        for k in 0...(bytes.count - old.count) where Array(bytes[k..<(k + old.count)]) == old {
            if k > 0 && bytes[k - 1] != 0 { continue }  // the tail of a longer name
            bytes.replaceSubrange(k..<(k + old.count), with: new)
            found = true
        }
        try #require(found || !alone, "\(name) is in the vDSO's string table")
        return bytes
    }

    @Test(.enabled(if: hasVDSO, "this kernel gives no vDSO"))
    func theRunningVDSOsSymbolsLeadToItsFunctions() throws {
        let vdso = try #require(Self.running).vdso
        for name in [
            "__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu", "__vdso_clock_getres",
        ] {
            #expect(vdso.symbol(name) != nil, "\(name)")
        }
        // Called at the vDSO's start plus the offset read, clock_gettime tells the time.
        let base = try Self.ownVDSO()
        let offset = try #require(vdso.symbol("__vdso_clock_gettime")).offset
        let before = Self.monotonic()
        let function = try #require(UnsafeRawPointer(bitPattern: UInt(base + offset)))
        var time = timespec()
        typealias ClockGetTime = @convention(c) (clockid_t, UnsafeMutablePointer<timespec>) -> Int32
        #expect(unsafeBitCast(function, to: ClockGetTime.self)(CLOCK_MONOTONIC, &time) == 0)
        let read = Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
        #expect(before <= read && read <= Self.monotonic())
    }

    /// Where this process's vDSO is.
    static func ownVDSO() throws -> UInt64 {
        try #require(try MemoryRegion.of(getpid()).first { $0.path == "[vdso]" }).start
    }

    static func monotonic() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }

    @Test(.enabled(if: hasVDSO, "this kernel gives no vDSO"))
    func theSameVDSOIsMovedAnOldImageOnlyIfItsSizeIsTheSame() throws {
        let running = try #require(Self.running)
        #expect(
            try VDSOProxy.plan(Self.image(vdso: running.vdso.bytes), running: running) == .moved(start: Self.vdsoStart))
        #expect(
            try VDSOProxy.plan(Self.image(vdso: nil, size: running.vdso.size), running: running)
                == .moved(start: Self.vdsoStart))
        #expect {
            try VDSOProxy.plan(Self.image(vdso: nil, size: running.vdso.size + 4096), running: running)
        } throws: { "\($0)".contains("does not hold its vDSO") }
        var none = try Self.image(vdso: nil, size: 0)
        none.mappings.removeLast()
        #expect(try VDSOProxy.plan(none, running: running) == .unmapped)
    }

    /// Another kernel's vDSO has its functions elsewhere: the image's copy with two functions'
    /// entries swapped in its symbol table. Each entry goes to the function of its own names.
    @Test(.enabled(if: hasVDSO, "this kernel gives no vDSO"))
    func eachEntryIsRedirectedToTheFunctionOfItsName() throws {
        let running = try #require(Self.running)
        let time = try #require(running.vdso.symbol("__vdso_time"))
        let getcpu = try #require(running.vdso.symbol("__vdso_getcpu"))
        var bytes = running.vdso.bytes
        let timeEntries = Self.symbolEntries(bytes, offset: time.offset, size: time.size)
        let getcpuEntries = Self.symbolEntries(bytes, offset: getcpu.offset, size: getcpu.size)
        try #require(
            timeEntries.count == 2 && getcpuEntries.count == 2, "time and __vdso_time, getcpu and __vdso_getcpu")
        for entry in timeEntries { bytes.replaceSubrange((entry + 8)..<(entry + 16), with: Self.bytes(getcpu.offset)) }
        for entry in getcpuEntries { bytes.replaceSubrange((entry + 8)..<(entry + 16), with: Self.bytes(time.offset)) }
        guard case .proxied(let proxy) = try VDSOProxy.plan(Self.image(vdso: bytes), running: running) else {
            Issue.record("a vDSO whose functions moved is proxied")
            return
        }
        let saved = try VDSO(bytes: bytes)
        #expect(proxy.redirects.count == Set(saved.symbols.map(\.offset)).count, "one redirect an entry")
        for redirect in proxy.redirects {
            for name in redirect.names {
                #expect(saved.symbol(name)?.offset == redirect.offset)
                #expect(
                    redirect.target == .symbol(name, offset: try #require(running.vdso.symbol(name)).offset)
                        || redirect.names.count > 1, "\(redirect)")
            }
        }
        let timeRedirect = try #require(proxy.redirects.first { $0.names.contains("__vdso_time") })
        #expect(timeRedirect.offset == getcpu.offset)
        #expect(timeRedirect.target == .symbol("__vdso_time", offset: time.offset))
        // Each entry patched with jmp *0(%rip) and the running function's address.
        let patched = proxy.patched(runningAt: 0x7000_0000_0000)
        for redirect in proxy.redirects {
            guard case .symbol(_, let offset) = redirect.target else { continue }
            let at = Int(redirect.offset)
            #expect(Array(patched[at..<(at + 6)]) == [0xff, 0x25, 0, 0, 0, 0])
            #expect(Self.word(patched, at: at + 6) == 0x7000_0000_0000 + offset)
        }
        #expect(
            patched.enumerated().filter { k, byte in byte != bytes[k] }.allSatisfy { k, _ in
                proxy.redirects.contains { (Int($0.offset)..<(Int($0.offset) + 14)).contains(k) }
            }, "nothing but the entries changes")
    }

    static func bytes(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

    @Test(.enabled(if: hasVDSO, "this kernel gives no vDSO"))
    func aFunctionThisKernelLacksIsItsSystemCallOrRefused() throws {
        let running = try #require(Self.running)
        try #require(running.vdso.symbol("__vdso_getrandom") != nil, "this kernel's vDSO has getrandom (6.11+)")
        // This kernel without getrandom: the image's entry becomes the system call.
        var without = try Self.renaming(running.vdso.bytes, "__vdso_getrandom", to: "__vdso_getrandoz")
        without = try Self.renaming(without, "getrandom", to: "getrandoz", alone: false)
        let lacking = KernelPagesLayout(vdso: try VDSO(bytes: without), parts: running.parts)
        guard case .proxied(let proxy) = try VDSOProxy.plan(Self.image(vdso: running.vdso.bytes), running: lacking)
        else {
            Issue.record("a vDSO this kernel's lacks a function of is proxied")
            return
        }
        let getrandom = try #require(proxy.redirects.first { $0.names.contains("__vdso_getrandom") })
        #expect(getrandom.target == .systemCall("getrandom", number: 318))
        #expect(proxy.summary.contains("1 to system calls"), "\(proxy.summary)")
        // A function chpox knows no stand-in for is refused by name.
        var unknown = try Self.renaming(running.vdso.bytes, "__vdso_getcpu", to: "__vdso_getcpx")
        unknown = try Self.renaming(unknown, "getcpu", to: "getcpx", alone: false)
        #expect {
            try VDSOProxy.plan(Self.image(vdso: unknown), running: running)
        } throws: { "\($0)".contains("exports __vdso_getcpx") || "\($0)".contains("exports getcpx") }
    }

    @Test(.enabled(if: hasVDSO, "this kernel gives no vDSO"))
    func aThreadStoppedInsideAnotherKernelsVDSOIsRefused() throws {
        let running = try #require(Self.running)
        var bytes = running.vdso.bytes
        bytes[bytes.count - 1] ^= 0xff
        var image = try Self.image(vdso: bytes)
        image.threads[0].registers.rip = Self.vdsoStart + 0x10
        #expect {
            try VDSOProxy.plan(image, running: running)
        } throws: { "\($0)".contains("thread \(image.threads[0].tid) was stopped inside its vDSO") }
        // Its own kernel's: moved, and it goes on where it was.
        image.vdso = Data(running.vdso.bytes)
        #expect(try VDSOProxy.plan(image, running: running) == .moved(start: Self.vdsoStart))
    }

    /// The code a proxy writes, run: this kernel's vDSO proxied at an address of this process,
    /// clock_gettime redirected to the running vDSO, time and getrandom to system call stubs.
    @Test(.enabled(if: hasVDSO, "this kernel gives no vDSO"))
    func redirectedEntriesRunAsTheVDSOsFunctions() throws {
        let running = try #require(Self.running)
        var without = try Self.renaming(running.vdso.bytes, "__vdso_time", to: "__vdso_tima")
        without = try Self.renaming(without, "time", to: "tima", alone: false)
        if running.vdso.symbol("__vdso_getrandom") != nil {
            without = try Self.renaming(without, "__vdso_getrandom", to: "__vdso_getrandoz")
            without = try Self.renaming(without, "getrandom", to: "getrandoz", alone: false)
        }
        // The running vDSO as a kernel lacking time (and getrandom) sees it.
        let lacking = KernelPagesLayout(vdso: try VDSO(bytes: without), parts: running.parts)
        guard case .proxied(let proxy) = try VDSOProxy.plan(Self.image(vdso: running.vdso.bytes), running: lacking)
        else {
            Issue.record("proxied")
            return
        }
        let size = proxy.bytes.count
        let memory = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        let base = try #require(memory == MAP_FAILED ? nil : memory)
        defer { munmap(base, size) }
        let real = try Self.ownVDSO()
        let patched = proxy.patched(runningAt: real)
        patched.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: size) }
        #expect(mprotect(base, size, PROT_READ | PROT_EXEC) == 0)
        func entry(_ name: String) throws -> UnsafeRawPointer {
            UnsafeRawPointer(base.advanced(by: Int(try #require(running.vdso.symbol(name)).offset)))
        }
        typealias ClockGetTime = @convention(c) (clockid_t, UnsafeMutablePointer<timespec>) -> Int32
        var time = timespec()
        let before = Self.monotonic()
        #expect(unsafeBitCast(try entry("__vdso_clock_gettime"), to: ClockGetTime.self)(CLOCK_MONOTONIC, &time) == 0)
        let read = Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
        #expect(before <= read && read <= Self.monotonic(), "clock_gettime through the jump")
        #expect(unsafeBitCast(try entry("__vdso_clock_gettime"), to: ClockGetTime.self)(-77, &time) == -EINVAL)
        typealias Time = @convention(c) (UnsafeMutablePointer<Int>?) -> Int
        let seconds = unsafeBitCast(try entry("__vdso_time"), to: Time.self)(nil)
        #expect(abs(seconds - Int(Foundation.time(nil))) <= 1, "time through its system call stub")
        if running.vdso.symbol("__vdso_getrandom") != nil {
            typealias GetRandom =
                @convention(c) (UnsafeMutableRawPointer?, Int, UInt32, UnsafeMutableRawPointer?, Int)
                -> Int
            let random = unsafeBitCast(try entry("__vdso_getrandom"), to: GetRandom.self)
            var buffer = [UInt8](repeating: 0, count: 64)
            #expect(random(&buffer, 64, 0, nil, 0) == 64, "getrandom through its system call stub")
            #expect(buffer.contains { $0 != 0 })
            #expect(random(nil, 0, 0, nil, -1) == -ENOSYS, "no parameters to give without a vDSO getrandom")
        }
    }
}
