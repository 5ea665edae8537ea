/// Human units.
public enum Format {
    /// One decimal place, without Foundation: 12.5.
    public static func decimal(_ value: Double) -> String {
        let tenths = Int64((value * 10).rounded())
        let sign = tenths < 0 ? "-" : ""
        return "\(sign)\(abs(tenths) / 10).\(abs(tenths) % 10)"
    }

    public static func bytes(_ value: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var amount = Double(value)
        var unit = 0
        while abs(amount) >= 1024 && unit < units.count - 1 {
            amount /= 1024
            unit += 1
        }
        return unit == 0 ? "\(value) B" : decimal(amount) + " " + units[unit]
    }

    public static func bytes(_ value: UInt64) -> String { bytes(Int64(clamping: value)) }

    /// A size as people write it: "1073741824", "512K", "64MiB", "1G" (binary units); nil for
    /// anything else.
    public static func parseBytes(_ text: String) -> Int64? {
        var digits = Substring(text)
        var unit: Int64 = 1
        for (suffixes, factor) in [
            (["KiB", "K", "k"], Int64(1) << 10), (["MiB", "M"], Int64(1) << 20), (["GiB", "G"], Int64(1) << 30),
            (["TiB", "T"], Int64(1) << 40),
        ] {
            if let suffix = suffixes.first(where: { text.hasSuffix($0) }) {
                digits = text.dropLast(suffix.count)
                unit = factor
                break
            }
        }
        guard let number = Int64(digits), number >= 0 else { return nil }
        let (product, overflow) = number.multipliedReportingOverflow(by: unit)
        return overflow ? nil : product
    }

    /// An address, register or mask as people read them: 0x7f3a2c000000.
    public static func address(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

    /// A resource limit: a number, or "unlimited" (RLIM_INFINITY).
    public static func limit(_ value: UInt64) -> String { value == UInt64.max ? "unlimited" : "\(value)" }

    public static func ratio(_ value: Double) -> String { value.isFinite ? decimal(value) + "x" : "-" }

    /// UTC, to the second: 2026-11-28 18:04:05.
    public static func time(nanoseconds: Int64) -> String {
        let seconds = nanoseconds / 1_000_000_000
        var days = seconds / 86400
        let rest = seconds - days * 86400
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let dayOfEra = days - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ n: Int64) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(year)-\(two(month))-\(two(day)) \(two(rest / 3600)):\(two(rest / 60 % 60)):\(two(rest % 60))"
    }

    /// Parses "90s", "30m", "12h", "7d", "2w" into nanoseconds.
    public static func duration(_ text: String) -> Int64? {
        guard let unit = text.last, let amount = Int64(text.dropLast()), amount >= 0 else { return nil }
        let seconds: Int64
        switch unit {
        case "s": seconds = 1
        case "m": seconds = 60
        case "h": seconds = 3600
        case "d": seconds = 86400
        case "w": seconds = 7 * 86400
        default: return nil
        }
        return amount * seconds * 1_000_000_000
    }
}
