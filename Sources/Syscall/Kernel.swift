#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the running kernel and machine are.
public enum Kernel {
    /// The kernel release, "6.12.0-1-amd64" (uname(2)).
    public static var release: String {
        var name = utsname()
        uname(&name)
        return withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// Processors online now (sysconf(_SC_NPROCESSORS_ONLN)); 1 if it cannot tell.
    public static var onlineProcessors: Int {
        max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }
}
