/// The image's signals: actions, interval timers, queued signals.
extension ProcessImage {
    /// A struct k_sigaction as the kernel keeps it.
    public struct SignalAction: Codable, Sendable, Equatable {
        public var signal: Int32
        /// 0 SIG_DFL, 1 SIG_IGN, otherwise the handler's address.
        public var handler: UInt64
        /// SA_* flags.
        public var flags: UInt64
        public var restorer: UInt64
        /// Signals blocked while the handler runs.
        public var mask: UInt64

        enum CodingKeys: String, CodingKey { case signal, handler, flags, restorer, mask }

        public init(signal: Int32, handler: UInt64, flags: UInt64, restorer: UInt64, mask: UInt64) {
            (self.signal, self.handler, self.flags, self.restorer, self.mask) = (signal, handler, flags, restorer, mask)
        }
    }

    /// struct itimerval of one interval timer (setitimer), in microseconds.
    public struct IntervalTimer: Codable, Sendable, Equatable {
        /// ITIMER_REAL (0), ITIMER_VIRTUAL (1), ITIMER_PROF (2).
        public var which: Int32
        public var intervalMicroseconds: UInt64
        public var valueMicroseconds: UInt64

        enum CodingKeys: String, CodingKey { case which, intervalMicroseconds, valueMicroseconds }

        public init(which: Int32, intervalMicroseconds: UInt64, valueMicroseconds: UInt64) {
            (self.which, self.intervalMicroseconds, self.valueMicroseconds) = (
                which, intervalMicroseconds, valueMicroseconds
            )
        }
    }

    /// A queued signal: its 128-byte siginfo record, as PTRACE_PEEKSIGINFO returns it and
    /// rt_sigqueueinfo takes it (a JSON array of its bytes in the file).
    public struct SignalInfo: Codable, Sendable, Equatable {
        public var bytes: [UInt8]

        public init(_ bytes: [UInt8]) { self.bytes = bytes }

        /// si_signo.
        public var signal: Int32 {
            bytes.count >= 4 ? bytes.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) } : 0
        }

        public init(from decoder: any Decoder) throws {
            bytes = try decoder.singleValueContainer().decode([UInt8].self)
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(bytes)
        }
    }
}
