/// The dirty-page trackers chpox knows, best first. Issue 3 builds them behind one protocol;
/// the names are settled here because manifests and the command line already use them.
public enum TrackerKind: String, CaseIterable, Sendable {
    /// clear_refs 4 and pagemap bit 55 (or PAGEMAP_SCAN with PAGE_IS_SOFT_DIRTY).
    case softDirty = "soft-dirty"
    /// userfaultfd write-protect in async mode, read with PAGEMAP_SCAN.
    case uffdWP = "uffd-wp"
    /// XXH3-128 of every present page against the previous generation's.
    case hash = "hash"
}
