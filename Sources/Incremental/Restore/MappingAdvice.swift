#if canImport(Glibc)
import Glibc
#endif

/// What smaps' VmFlags say a mapping was created or advised with, as a restart gives it again:
/// mmap flags for what only mmap sets, madvise(2) for the rest, in the order listed.
enum MappingAdvice {
    /// The corresponding C constant is MAP_DROPPABLE (Linux 6.11; not in every libc's headers):
    /// a private anonymous mapping whose pages the kernel may drop under memory pressure.
    static let mapDroppable: Int32 = 0x08
    /// MADV_DONTNEED: empties pages (zero again, or the file's for a private file mapping).
    static let dontNeed: Int32 = MADV_DONTNEED
    /// MADV_GUARD_INSTALL (Linux 6.13; not in this libc's headers).
    static let guardInstall: Int32 = 102

    /// VmFlags set by mmap flags: `nr` MAP_NORESERVE, `lo` MAP_LOCKED.
    static let mapFlags: [(flag: String, map: Int32)] = [("nr", MAP_NORESERVE), ("lo", MAP_LOCKED)]

    /// VmFlags set by madvise: `dd` MADV_DONTDUMP, `dc` MADV_DONTFORK, `hg` MADV_HUGEPAGE,
    /// `nh` MADV_NOHUGEPAGE, `mg` MADV_MERGEABLE, `wf` MADV_WIPEONFORK, `sr` MADV_SEQUENTIAL,
    /// `rr` MADV_RANDOM.
    static let advised: [(flag: String, advice: Int32)] = [
        ("dd", MADV_DONTDUMP), ("dc", MADV_DONTFORK), ("hg", MADV_HUGEPAGE), ("nh", MADV_NOHUGEPAGE),
        ("mg", MADV_MERGEABLE), ("wf", MADV_WIPEONFORK), ("sr", MADV_SEQUENTIAL), ("rr", MADV_RANDOM),
    ]

    /// The mmap flags `flags` (VmFlags) need beyond the mapping's type.
    static func mapFlags(_ flags: [String]) -> Int32 {
        mapFlags.filter { flags.contains($0.flag) }.reduce(0) { $0 | $1.map }
    }

    /// The advice to give a mapping with VmFlags `flags`, as (VmFlag, MADV_*) pairs.
    static func advice(_ flags: [String]) -> [(flag: String, advice: Int32)] {
        advised.filter { flags.contains($0.flag) }
    }
}
