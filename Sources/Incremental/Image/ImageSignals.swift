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

    /// A POSIX timer (timer_create): its id, clock and notification as /proc/PID/timers shows
    /// them, and its setting at the freeze (timer_gettime inside the process).
    public struct PosixTimer: Codable, Sendable, Equatable {
        /// The id the kernel gave it, which the process holds (its timer_t, or inside glibc's).
        public var id: Int32
        /// CLOCK_REALTIME 0, CLOCK_MONOTONIC 1, CLOCK_BOOTTIME 7, the alarm clocks 8 and 9, TAI 11.
        public var clock: Int32
        /// sigev_notify: SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD 2, or'ed with SIGEV_THREAD_ID 4.
        public var notify: Int32
        public var signal: Int32
        /// sigev_value (the bits of sival_ptr).
        public var value: UInt64
        /// The saved thread id its signal goes to, with SIGEV_THREAD_ID; nil: the process.
        public var thread: Int32?
        public var intervalNanoseconds: UInt64
        /// Time left at the freeze; 0: disarmed.
        public var valueNanoseconds: UInt64

        enum CodingKeys: String, CodingKey {
            case id, clock, notify, signal, value, thread, intervalNanoseconds, valueNanoseconds
        }

        public init(
            id: Int32, clock: Int32, notify: Int32, signal: Int32, value: UInt64, thread: Int32?,
            intervalNanoseconds: UInt64, valueNanoseconds: UInt64
        ) {
            (self.id, self.clock, self.notify, self.signal, self.value, self.thread) = (
                id, clock, notify, signal, value, thread
            )
            (self.intervalNanoseconds, self.valueNanoseconds) = (intervalNanoseconds, valueNanoseconds)
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
