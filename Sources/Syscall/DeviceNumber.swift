/// A device number, major and minor (makedev(3)). glibc's dev_t (st_dev, st_rdev) holds the
/// major in bits 8-19 and 32-43 and the minor in bits 0-7 and 20-31; the kernel's mknod(2)
/// takes the 32-bit form (new_encode_dev: the major in bits 8-19, the minor in 0-7 and 20-31),
/// which holds majors below 4096 and minors below 2^20 only.
public struct DeviceNumber: Sendable, Hashable, CustomStringConvertible {
    public var major: UInt32
    public var minor: UInt32

    public init(major: UInt32, minor: UInt32) { (self.major, self.minor) = (major, minor) }

    /// From glibc's dev_t encoding (gnu_dev_major and gnu_dev_minor).
    public init(_ encoded: UInt64) {
        major = UInt32(truncatingIfNeeded: ((encoded >> 8) & 0xfff) | ((encoded >> 32) & ~UInt64(0xfff)))
        minor = UInt32(truncatingIfNeeded: (encoded & 0xff) | ((encoded >> 12) & ~UInt64(0xff)))
    }

    /// The argument mknod(2) takes for it; nil when it does not fit the kernel's 32-bit form.
    public var mknodArgument: UInt32? {
        guard major < 1 << 12, minor < 1 << 20 else { return nil }
        return (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
    }

    /// "1:3".
    public var description: String { "\(major):\(minor)" }
}
