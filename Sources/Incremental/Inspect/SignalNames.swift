/// Signal numbers, masks, sigaction flags and queued siginfo records as names, for
/// `dumpinfo`. x86-64 Linux numbering (signal(7)).
public enum SignalNames {
    static let names = [
        "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
        "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP",
        "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH",
        "SIGIO", "SIGPWR", "SIGSYS",
    ]

    /// SIGUSR1, SIGRTMIN+3, or the number for anything else.
    public static func name(_ signal: Int32) -> String {
        if signal >= 1 && Int(signal) <= names.count { return names[Int(signal) - 1] }
        if signal >= 32 && signal <= 64 {
            return signal == 32 ? "SIGRTMIN-2" : signal == 33 ? "SIGRTMIN-1" : "SIGRTMIN+\(signal - 34)"
        }
        return "signal \(signal)"
    }

    /// The names of the signals in a 64-bit mask (bit n-1 for signal n), ascending.
    public static func names(mask: UInt64) -> [String] {
        (1...64).filter { mask & (1 << UInt64($0 - 1)) != 0 }.map { name(Int32($0)) }
    }

    /// The names of queued signals (128-byte siginfo records, si_signo first).
    public static func names(siginfo records: [[UInt8]]) -> [String] {
        records.map { record in
            name(
                record.count >= 4
                    ? Int32(record[0]) | Int32(record[1]) << 8 | Int32(record[2]) << 16 | Int32(record[3]) << 24 : 0)
        }
    }

    /// A mask for people: "-" when empty, names up to six, else the mask in hex with a count.
    public static func describe(mask: UInt64) -> String {
        let signals = names(mask: mask)
        if signals.isEmpty { return "-" }
        if signals.count <= 6 { return signals.joined(separator: ",") }
        return Format.address(mask) + " (\(signals.count) signals)"
    }

    /// Queued signals for people: their names, "-" when none.
    public static func describe(siginfo records: [[UInt8]]) -> String {
        records.isEmpty ? "-" : names(siginfo: records).joined(separator: ",")
    }

    /// SIG_DFL, SIG_IGN or the handler's address.
    public static func handler(_ value: UInt64) -> String {
        switch value {
        case 0: return "SIG_DFL"
        case 1: return "SIG_IGN"
        default: return Format.address(value)
        }
    }

    static let actionFlags: [(UInt64, String)] = [
        (0x1, "NOCLDSTOP"), (0x2, "NOCLDWAIT"), (0x4, "SIGINFO"), (0x0400_0000, "RESTORER"), (0x0800_0000, "ONSTACK"),
        (0x1000_0000, "RESTART"), (0x4000_0000, "NODEFER"), (0x8000_0000, "RESETHAND"),
    ]

    /// sa_flags as SA_ names without the prefix: SIGINFO|RESTART|RESTORER.
    public static func describe(actionFlags flags: UInt64) -> String {
        var rest = flags
        var parts: [String] = []
        for (bit, name) in actionFlags where flags & bit != 0 {
            parts.append(name)
            rest &= ~bit
        }
        if rest != 0 { parts.append(Format.address(rest)) }
        return parts.isEmpty ? "-" : parts.joined(separator: "|")
    }
}

/// open(2) flags as names: rdwr|append|cloexec. x86-64 Linux values (fcntl.h).
public enum OpenFlags {
    static let names: [(Int32, String)] = [
        (0o100, "creat"), (0o200, "excl"), (0o400, "noctty"), (0o1000, "trunc"), (0o2000, "append"),
        (0o4000, "nonblock"),
        (0o4010000, "sync"), (0o10000, "dsync"), (0o20000, "async"), (0o40000, "direct"), (0o100000, "largefile"),
        (0o200000, "directory"), (0o400000, "nofollow"), (0o1000000, "noatime"), (0o2000000, "cloexec"),
        (0o10000000, "path"),
    ]

    public static func describe(_ flags: Int32) -> String {
        var parts = [["rdonly", "wronly", "rdwr", "accmode3"][Int(flags & 3)]]
        var rest = flags & ~3
        for (bits, name) in names where flags & bits == bits && rest & bits != 0 {
            parts.append(name)
            rest &= ~bits
        }
        if rest != 0 { parts.append("0o" + String(rest, radix: 8)) }
        return parts.joined(separator: "|")
    }
}
