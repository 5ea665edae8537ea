import Foundation

extension ProcessImage {
    /// Per-process settings outside memory, descriptors and credentials: /proc's
    /// oom_score_adj and loginuid, and what prctl and membarrier say inside the process.
    /// Absent from images written before chpox recorded them (a restart then leaves ld-chpox's).
    public struct Controls: Codable, Sendable, Equatable {
        /// /proc/PID/oom_score_adj, -1000 ... 1000.
        public var oomScoreAdjust: Int32
        /// /proc/PID/loginuid (audit); 4294967295 when never set.
        public var loginUID: UInt32
        /// PR_GET_DUMPABLE: 0, 1 or 2.
        public var dumpable: Int32
        /// PR_GET_THP_DISABLE.
        public var transparentHugePagesDisabled: Bool
        /// PR_GET_CHILD_SUBREAPER.
        public var childSubreaper: Bool
        /// MEMBARRIER_CMD_GET_REGISTRATIONS: the MEMBARRIER_CMD_REGISTER_* bits made.
        public var membarrierRegistrations: Int32
        /// True when the checkpointing kernel could not list them (before Linux 6.3): none is
        /// made again, and the restart says so.
        public var membarrierUnknown: Bool? = nil
        /// The parent-death signal (PR_SET_PDEATHSIG); nil or 0: none.
        public var parentDeathSignal: Int32? = nil

        enum CodingKeys: String, CodingKey {
            case oomScoreAdjust, loginUID, dumpable, transparentHugePagesDisabled, childSubreaper,
                membarrierRegistrations, membarrierUnknown, parentDeathSignal
        }

        public init(
            oomScoreAdjust: Int32 = 0, loginUID: UInt32 = .max, dumpable: Int32 = 1,
            transparentHugePagesDisabled: Bool = false, childSubreaper: Bool = false, membarrierRegistrations: Int32 = 0
        ) {
            (self.oomScoreAdjust, self.loginUID, self.dumpable) = (oomScoreAdjust, loginUID, dumpable)
            (self.transparentHugePagesDisabled, self.childSubreaper) = (transparentHugePagesDisabled, childSubreaper)
            self.membarrierRegistrations = membarrierRegistrations
        }

        /// One line for people: "oom_score_adj 400, loginuid 3, dumpable 0, THP disabled, ...".
        public var summary: String {
            (["oom_score_adj \(oomScoreAdjust)", "loginuid " + (loginUID == .max ? "unset" : "\(loginUID)")]
                + ["dumpable \(dumpable)"]
                + (transparentHugePagesDisabled ? ["THP disabled"] : []) + (childSubreaper ? ["child subreaper"] : [])
                + (membarrierRegistrations != 0
                    ? ["membarrier registrations 0x\(String(membarrierRegistrations, radix: 16))"] : [])
                + (membarrierUnknown == true ? ["membarrier registrations unknown (kernel before 6.3)"] : [])
                + ((parentDeathSignal ?? 0) != 0 ? ["parent-death signal \(parentDeathSignal ?? 0)"] : []))
                .joined(separator: ", ")
        }
    }
}
