import Store

/// Checks a store's images beyond what `Store.verify` can see in its structure: that each
/// generation's image asks to become no more than the store's owner may grant
/// (`ImageAuthority`). An image that asks for more was edited, or was not written by cpx;
/// `ld-chpox` refuses it, and `dumpinfo --verify` says so.
extension VerifyReport {
    public mutating func auditImages(of store: Store) throws(StoreError) {
        let authority = ImageAuthority(store: store)
        // Root reading a store on S3 it was not told to trust: no image is root's to restart, and
        // that is the caller's setting, not damage (ld-chpox says so when asked to restart one).
        guard authority.untrusted == nil else { return }
        for name in try store.chainNames() {
            let chain = try store.chain(name)
            for entry in chain.entries {
                // A manifest that does not read is damage `verify` reports already.
                guard let manifest = try? store.manifest(entry.manifest), !manifest.metadata.isEmpty,
                    let image = try? ProcessImage(decoding: manifest.metadata, generation: entry.generation)
                else { continue }
                if let excess = authority.excess(image.credentials) {
                    problems.append(
                        Problem(
                            file: "manifests/\(entry.manifest.hex).gen",
                            message: "generation \(entry.generation) of chain \(name): \(excess); ld-chpox refuses it"))
                }
            }
        }
    }
}
