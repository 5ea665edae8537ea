import CLinux

/// Per-process switches that /proc does not show and only the process itself can read: its
/// prctl flags and its membarrier registrations. Part of `InjectedState`.
public struct ProcessControls: Sendable, Equatable {
    /// PR_GET_DUMPABLE: 0, 1 (the default), or 2 (suid_dumpable's "root only", set by the kernel).
    public var dumpable: Int32
    /// PR_GET_THP_DISABLE.
    public var transparentHugePagesDisabled: Bool
    /// PR_GET_CHILD_SUBREAPER.
    public var childSubreaper: Bool
    /// MEMBARRIER_CMD_GET_REGISTRATIONS: the REGISTER_* command bits the process made; nil on
    /// a kernel before 6.3, which cannot say.
    public var membarrierRegistrations: Int32?
    /// PR_GET_PDEATHSIG: the signal the process gets when its parent dies (0: none).
    public var parentDeathSignal: Int32 = 0

    public init(
        dumpable: Int32 = 1, transparentHugePagesDisabled: Bool = false, childSubreaper: Bool = false,
        membarrierRegistrations: Int32? = 0
    ) {
        self.dumpable = dumpable
        self.transparentHugePagesDisabled = transparentHugePagesDisabled
        self.childSubreaper = childSubreaper
        self.membarrierRegistrations = membarrierRegistrations
    }

    /// Reads them with system calls inside the process; `calls` lends 8 bytes of scratch.
    public init(reading calls: RemoteCalls) throws(TraceeError) {
        dumpable = Int32(try calls.call(.prctl, CHPOX_PR_GET_DUMPABLE, to: "read the dumpable flag"))
        transparentHugePagesDisabled =
            try calls.call(.prctl, CHPOX_PR_GET_THP_DISABLE, 0, 0, 0, 0, to: "read the THP-disable flag") != 0
        childSubreaper = try calls.withFrame { () throws(TraceeError) in
            let slot = try calls.reserve(8)
            try calls.write([UInt8](repeating: 0, count: 8), at: slot)
            try calls.call(.prctl, CHPOX_PR_GET_CHILD_SUBREAPER, slot, to: "read the child-subreaper flag")
            return try calls.words(at: slot, count: 1)[0] & 0xffff_ffff != 0
        }
        let registrations = try calls.result(of: .membarrier, CHPOX_MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0)
        membarrierRegistrations = registrations >= 0 ? Int32(registrations) : nil
        parentDeathSignal = try calls.withFrame { () throws(TraceeError) in
            let slot = try calls.reserve(8)
            try calls.write([UInt8](repeating: 0, count: 8), at: slot)
            try calls.call(.prctl, CHPOX_PR_GET_PDEATHSIG, slot, to: "read the parent-death signal")
            return Int32(truncatingIfNeeded: try calls.words(at: slot, count: 1)[0] & 0xffff_ffff)
        }
    }

    /// One line of `chpox-inject`'s answer.
    var line: String {
        "controls \(dumpable) \(transparentHugePagesDisabled ? 1 : 0) \(childSubreaper ? 1 : 0) "
            + (membarrierRegistrations.map { "\($0)" } ?? "-1") + " \(parentDeathSignal)"
    }

    /// Reads `line`'s numbers back (after the word "controls"); nil unless there are five.
    init?(numbers: [Int64]) {
        guard numbers.count == 5 else { return nil }
        self.init(
            dumpable: Int32(truncatingIfNeeded: numbers[0]), transparentHugePagesDisabled: numbers[1] != 0,
            childSubreaper: numbers[2] != 0,
            membarrierRegistrations: numbers[3] < 0 ? nil : Int32(truncatingIfNeeded: numbers[3]))
        parentDeathSignal = Int32(truncatingIfNeeded: numbers[4])
    }
}
