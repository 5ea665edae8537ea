import Syscall
import Tracee

/// Each tracker proves it works on this kernel before it is used: the probe clears, writes a
/// page of this process and checks that the tracker saw the write.
public struct TrackerProbe: Sendable {
    public struct Result: Sendable, Equatable {
        public var kind: TrackerKind
        public var supported: Bool
        /// Why it is or is not supported, for people.
        public var detail: String
    }

    public let results: [Result]

    public init() {
        results = [
            Self.probeSoftDirty(), Self.probeUffdWP(),
            Result(kind: .hash, supported: true, detail: "needs nothing from the kernel"),
        ]
    }

    public func result(_ kind: TrackerKind) -> Result { results.first { $0.kind == kind }! }

    /// The best supported tracker: soft-dirty, then uffd-wp, then hash.
    public var best: TrackerKind { results.first { $0.supported }!.kind }

    /// A page of our own, written after tracking was reset.
    private static func withPage<T>(_ body: (UnsafeMutableRawBufferPointer, UInt64) -> T) -> T? {
        guard let mapping = try? AnonymousMapping(size: Page.size, [.read, .write]) else { return nil }
        return withExtendedLifetime(mapping) {
            mapping.bytes.storeBytes(of: 1, as: UInt8.self)
            return body(mapping.bytes, mapping.address)
        }
    }

    static func probeSoftDirty() -> Result {
        let pid = CurrentProcess.id
        let outcome: Result? = withPage { page, address in
            do {
                let pagemap = try Pagemap(pid: pid)
                try SoftDirtyTracker.clear(pid)
                let cleared = try pagemap.entries(from: address, count: 1).first ?? 0
                page.storeBytes(of: 2, as: UInt8.self)
                let written = try pagemap.entries(from: address, count: 1).first ?? 0
                if written & PagemapBit.softDirty == 0 {
                    return Result(
                        kind: .softDirty, supported: false,
                        detail: "unsupported by this kernel (CONFIG_MEM_SOFT_DIRTY is off: "
                            + "clear_refs 4 is accepted but no write sets the bit)"
                    )
                }
                if cleared & PagemapBit.softDirty != 0 {
                    return Result(
                        kind: .softDirty, supported: false,
                        detail: "clear_refs 4 does not clear the soft-dirty bit on this kernel")
                }
                let scan =
                    pagemap.hasScan()
                    ? "pagemap bit 55 and PAGEMAP_SCAN" : "pagemap bit 55 (no PAGEMAP_SCAN before Linux 6.7)"
                return Result(kind: .softDirty, supported: true, detail: "supported (\(scan))")
            } catch {
                return Result(kind: .softDirty, supported: false, detail: "unusable: \(error)")
            }
        }
        return outcome ?? Result(kind: .softDirty, supported: false, detail: "probe could not map a page")
    }

    static func probeUffdWP() -> Result {
        let uffd: Userfaultfd
        do { uffd = try .create([.nonBlocking, .userModeOnly]) } catch {
            return Result(
                kind: .uffdWP, supported: false,
                detail: "unusable: userfaultfd(2) failed: \(error) (CONFIG_USERFAULTFD, or vm.unprivileged_userfaultfd)"
            )
        }
        defer { uffd.close() }
        do { try uffd.enable(UffdTracker.features) } catch {
            return Result(
                kind: .uffdWP, supported: false,
                detail: "unsupported by this kernel (no UFFD_FEATURE_WP_ASYNC: Linux 6.7+)")
        }
        let outcome: Result? = withPage { page, address in
            do {
                try uffd.registerForWriteProtect(start: address, length: UInt64(Page.size))
                try uffd.writeProtect(start: address, length: UInt64(Page.size))
            } catch {
                return Result(
                    kind: .uffdWP, supported: false,
                    detail: "unusable: cannot register or write-protect a page (\(error))")
            }
            do {
                let pagemap = try Pagemap(pid: CurrentProcess.id)
                let before = try pagemap.scan(
                    start: address, end: address + UInt64(Page.size), required: .written, returned: .written)
                page.storeBytes(of: 3, as: UInt8.self)
                let after = try pagemap.scan(
                    start: address, end: address + UInt64(Page.size), required: .written, returned: .written)
                guard before.isEmpty, after.count == 1 else {
                    return Result(
                        kind: .uffdWP, supported: false, detail: "PAGEMAP_SCAN does not report the written page")
                }
                return Result(
                    kind: .uffdWP, supported: true, detail: "supported (userfaultfd async write-protect, PAGEMAP_SCAN)")
            } catch {
                return Result(kind: .uffdWP, supported: false, detail: "unusable: \(error)")
            }
        }
        return outcome ?? Result(kind: .uffdWP, supported: false, detail: "probe could not map a page")
    }
}

/// Picks and starts a tracker for a frozen process.
public enum TrackerSelection {
    /// `kind` nil means the best the probe allows; a forced kind that the probe refuses is an
    /// error that says why.
    /// Start it before freezing the process for the first collect.
    public static func start(
        _ kind: TrackerKind?, pid: Int32, probe: TrackerProbe = TrackerProbe()
    ) throws(TraceeError) -> any DirtyTracker {
        let chosen = kind ?? probe.best
        let result = probe.result(chosen)
        guard result.supported else {
            throw .unsupported(pid: pid, reason: "tracker \(chosen.rawValue): \(result.detail)")
        }
        if let reason = FrozenProcess.refusal(toStop: pid) { throw .unsupported(pid: pid, reason: reason) }
        switch chosen {
        case .softDirty: return try SoftDirtyTracker(pid: pid)
        case .uffdWP: return try UffdTracker(pid: pid)
        case .hash: return try HashTracker(pid: pid)
        }
    }
}
