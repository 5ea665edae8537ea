import Foundation
import Tracee

/// How a restart gives a process the vDSO it had, decided from the image and the running
/// kernel's vDSO (CRIU's vDSO proxy is the model: `criu/pie/parasite-vdso.c`).
///
/// A process holds pointers into its vDSO: its libc resolved `__vdso_clock_gettime` and the
/// others once, at startup, to the vDSO's start plus each symbol's offset. The vDSO's code
/// reads the kernel's vvar pages at offsets from itself that are built into it, and only the
/// kernel that made them fills them.
/// - The running vDSO is byte for byte the image's (`moved`): the kernel's pages are moved to
///   where the image had its vDSO, the vvar pages at this kernel's offsets from it.
/// - It differs (another kernel, or the same one patched for another CPU): `proxied`. The
///   image's vDSO is put back at its address as ordinary memory, and each function it exports
///   starts with a jump to the same function in the running kernel's vDSO, which stays whole
///   (with its vvar pages) elsewhere. AT_SYSINFO_EHDR points at the running one, so that what
///   looks the vDSO up later (dlopen, getauxval) finds this kernel's. A function this kernel's
///   vDSO lacks is a system call stub where the vDSO function is one (its fallback), a trap
///   where no call could do anything here (`__vdso_sgx_enter_enclave` without SGX), and is
///   refused otherwise: never an entry that does something else.
/// The image's vvar pages are never put back: they are the old kernel's, and nothing but its
/// vDSO code reads them.
public enum VDSOProxy {
    /// This kernel's pages, as ld-chpox has them (every process on one kernel has the same).
    public static let running: KernelPagesLayout? = try? KernelPagesLayout.current()

    /// What the restart does with the kernel's pages.
    public enum Plan: Sendable, Equatable {
        /// The image had no vDSO (its process unmapped it): the kernel's pages are unmapped.
        case unmapped
        /// The running vDSO is the image's: moved to `start`, its vvar pages beside it as this
        /// kernel lays them out.
        case moved(start: UInt64)
        case proxied(Proxy)
    }

    /// The image's vDSO put back at `start` with its entries redirected.
    public struct Proxy: Sendable, Equatable {
        public var start: UInt64
        /// The image's vDSO, unpatched.
        public var bytes: [UInt8]
        /// One for each entry of the image's vDSO (several names may share one).
        public var redirects: [Redirect]

        /// Its bytes with every entry patched to jump into the running vDSO, placed at `running`.
        public func patched(runningAt running: UInt64) -> [UInt8] {
            var bytes = self.bytes
            for redirect in redirects {
                let code = redirect.target.code(runningAt: running)
                bytes.replaceSubrange(Int(redirect.offset)..<(Int(redirect.offset) + code.count), with: code)
            }
            return bytes
        }

        /// "vDSO proxied: 6 entries redirected to this kernel's vDSO, 1 to a system call".
        public var summary: String {
            let count = { (kind: (Target) -> Bool) in redirects.filter { kind($0.target) }.count }
            let calls = count { if case .systemCall = $0 { return true } else { return false } }
            let traps = count { $0 == .trap }
            return "vDSO proxied: the kernel that checkpointed it had another vDSO; "
                + "\(redirects.count - calls - traps) entries redirected to this kernel's vDSO"
                + (calls > 0 ? ", \(calls) to system calls (this kernel's vDSO lacks them)" : "")
                + (traps > 0 ? ", \(traps) to a trap (this kernel cannot run them)" : "")
        }
    }

    /// An entry of the image's vDSO and where a call to it goes now.
    public struct Redirect: Sendable, Equatable, CustomStringConvertible {
        /// The names the image's vDSO exports at this entry.
        public var names: [String]
        /// The entry's offset in the image's vDSO.
        public var offset: UInt64
        public var target: Target

        public var description: String {
            let from = "\(names.joined(separator: "/")) at +0x\(String(offset, radix: 16))"
            switch target {
            case .symbol(let name, let offset):
                return "\(from) -> this kernel's \(name) at +0x\(String(offset, radix: 16))"
            case .systemCall(let name, let number):
                return "\(from) -> the system call \(name) (\(number)): this kernel's vDSO lacks it"
            case .trap: return "\(from) -> a trap (ud2): this kernel's vDSO lacks it and no call could do it here"
            }
        }
    }

    public enum Target: Sendable, Equatable {
        /// The running vDSO's function `name`, at `offset` from its start.
        case symbol(String, offset: UInt64)
        /// A stub making the system call the vDSO function falls back to.
        case systemCall(String, number: Int32)
        case trap

        /// The bytes written at the entry.
        func code(runningAt running: UInt64) -> [UInt8] {
            switch self {
            case .symbol(_, let offset):
                // jmp *0(%rip), then the absolute address: no register changes.
                return [0xff, 0x25, 0, 0, 0, 0] + withUnsafeBytes(of: (running + offset).littleEndian) { Array($0) }
            case .systemCall("getrandom", let number):
                // vgetrandom's parameter query (opaque_len ~0) has no system call to stand for
                // it: answered -ENOSYS, which a libc takes as "no vDSO getrandom".
                return [0x49, 0x83, 0xf8, 0xff, 0x74, 0x08]  // cmp $-1,%r8; je 1f
                    + [0xb8] + withUnsafeBytes(of: UInt32(number).littleEndian) { Array($0) }  // mov $nr,%eax
                    + [0x0f, 0x05, 0xc3]  // syscall; ret
                    + [0x48, 0xc7, 0xc0, 0xda, 0xff, 0xff, 0xff, 0xc3]  // 1: mov $-38,%rax; ret
            case .systemCall(_, let number):
                return [0xb8] + withUnsafeBytes(of: UInt32(number).littleEndian) { Array($0) } + [0x0f, 0x05, 0xc3]
            case .trap:
                return [0x0f, 0x0b]
            }
        }
    }

    /// The vDSO functions that are a system call where no vDSO can answer (each one's fallback
    /// in the kernel's lib/vdso), by name without the `__vdso_` prefix: x86-64 numbers.
    static let systemCalls: [String: Int32] = [
        "clock_gettime": 228, "gettimeofday": 96, "time": 201, "getcpu": 309, "clock_getres": 229, "getrandom": 318,
    ]
    /// Functions no call could do on a kernel whose vDSO lacks them: entering an SGX enclave
    /// needs one, made through /dev/sgx_enclave of a kernel with SGX (whose vDSO exports it);
    /// a process holding one is refused (its mapping cannot be made again).
    static let trapped: Set<String> = ["sgx_enter_enclave"]

    /// The name without the vDSO's prefix (`__vdso_time` and `time` are the same function).
    static func base(_ name: String) -> String { name.hasPrefix("__vdso_") ? String(name.dropFirst(7)) : name }

    /// The plan for `image` under the kernel whose pages are `running` (nil: it has no vDSO);
    /// the reason it cannot restart here is thrown.
    public static func plan(
        _ image: ProcessImage, running: KernelPagesLayout?
    ) throws(Refusal) -> Plan {
        guard let mapping = image.mappings.first(where: { $0.path == "[vdso]" }) else { return .unmapped }
        guard let running else {
            throw Refusal(
                "it had a vDSO and this kernel gives none (booted with vdso=0?): restart it on a kernel with one")
        }
        let size = Int(mapping.end - mapping.start)
        guard let saved = image.vdso.map({ [UInt8]($0) }) else {
            // An image from before chpox kept the vDSO: only the same kernel's will do.
            guard size == running.vdso.size else {
                throw Refusal(
                    "its vDSO is \(size) bytes and this kernel's \(running.vdso.size), and the image does not hold "
                        + "its vDSO (written before chpox kept it): restart it on the kernel that checkpointed it")
            }
            return .moved(start: mapping.start)
        }
        guard saved.count == size else {
            throw Refusal("its vDSO's bytes are \(saved.count), its mapping \(size): the image is damaged")
        }
        if saved == running.vdso.bytes && !collides(image, running, at: mapping.start) {
            return .moved(start: mapping.start)
        }
        let vdso: VDSO
        do { vdso = try VDSO(bytes: saved) } catch { throw Refusal("its vDSO is \(error)") }
        for thread in image.threads where (mapping.start..<mapping.end).contains(thread.registers.rip) {
            throw Refusal(
                "thread \(thread.tid) was stopped inside its vDSO (at +0x\(String(thread.registers.rip - mapping.start, radix: 16))), "
                    + "whose code reads the vvar pages of the kernel that checkpointed it, and this kernel's vDSO "
                    + "differs: checkpoint it again (a thread leaves the vDSO within microseconds), or restart it on "
                    + "that kernel")
        }
        let redirects = try redirects(from: vdso, to: running.vdso)
        return .proxied(Proxy(start: mapping.start, bytes: saved, redirects: redirects))
    }

    /// Where each entry of `saved` goes in `running`; the reason one cannot be redirected.
    static func redirects(from saved: VDSO, to running: VDSO) throws(Refusal) -> [Redirect] {
        let entries = Dictionary(grouping: saved.symbols, by: \.offset).sorted { $0.key < $1.key }
        var redirects: [Redirect] = []
        for (k, (offset, symbols)) in entries.enumerated() {
            let names = symbols.map(\.name).sorted()
            var targets: [Target] = []
            for name in names {
                let base = base(name)
                if let symbol = running.symbol(name) ?? running.symbol("__vdso_" + base) ?? running.symbol(base) {
                    targets.append(.symbol(symbol.name, offset: symbol.offset))
                } else if let number = systemCalls[base] {
                    targets.append(.systemCall(base, number: number))
                } else if trapped.contains(base) {
                    targets.append(.trap)
                } else {
                    throw Refusal(
                        "its vDSO exports \(name), which this kernel's vDSO lacks and chpox cannot stand in for: "
                            + "restart it on a kernel whose vDSO has it")
                }
            }
            // Aliases must go to one place (the kernel exports each function twice).
            let target = targets[0]
            guard targets.allSatisfy({ $0.sameEntry(as: target) }) else {
                throw Refusal(
                    "its vDSO's \(names.joined(separator: ", ")) share an entry that this kernel's vDSO splits: "
                        + "restart it on the kernel that checkpointed it")
            }
            let end = k + 1 < entries.count ? entries[k + 1].key : UInt64(saved.size)
            let length = UInt64(target.code(runningAt: 0).count)
            guard end - offset >= length else {
                throw Refusal(
                    "its vDSO's \(names.joined(separator: "/")) is \(end - offset) bytes before the next entry, too few "
                        + "for the \(length) bytes that redirect it: restart it on the kernel that checkpointed it")
            }
            redirects.append(Redirect(names: names, offset: offset, target: target))
        }
        return redirects
    }

    /// Whether the running kernel's pages, with the vDSO at `start`, would cover a mapping of
    /// the image other than its own kernel pages.
    static func collides(_ image: ProcessImage, _ running: KernelPagesLayout, at start: UInt64) -> Bool {
        let span = running.span
        let low = UInt64(bitPattern: Int64(bitPattern: start) + span.lowerBound)
        let high = UInt64(bitPattern: Int64(bitPattern: start) + span.upperBound)
        return image.mappings.contains { mapping in
            !KernelPagesLayout.names.contains(mapping.path) && mapping.start < high && low < mapping.end
        }
    }

    /// Why a restart cannot give the process a vDSO here.
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }
}

extension VDSOProxy.Target {
    /// Whether two names' targets are one entry (the same function, or the same stand-in).
    func sameEntry(as other: Self) -> Bool {
        switch (self, other) {
        case (.symbol(_, let a), .symbol(_, let b)): return a == b
        case (.systemCall(_, let a), .systemCall(_, let b)): return a == b
        case (.trap, .trap): return true
        default: return false
        }
    }
}
