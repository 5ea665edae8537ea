import CLinux

/// The C library's allocator (glibc's malloc), for the long-lived commands that hold large
/// arrays (cpx's page lists and run lists of a large process).
public enum Allocator {
    /// Serves every block of at least `bytes` with a mapping of its own, given back to the
    /// system as soon as it is freed (mallopt(3) with M_MMAP_THRESHOLD). glibc's default
    /// threshold rises by itself up to 32 MiB each time such a block is freed, and the heap then
    /// keeps what later blocks of that size freed: 60-90 MB of a 16 GiB checkpoint's peak
    /// (Benchmarks/README.md, "Scale"). Does nothing on another C library.
    public static func mapBlocks(atLeast bytes: Int32) {
        _ = chpox_set_mmap_threshold(bytes)
    }
}
