#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Syscall

extension Store {
    /// Rebuilds the index from the pack trailers alone and replaces every segment with it.
    /// Packs whose trailer is damaged are reported and left out (their chunks stay missing).
    public func rebuildIndex() throws(StoreError) -> (chunks: Int, packs: Int, skipped: [VerifyReport.Problem]) {
        try maintaining { () throws(StoreError) in try rebuildIndexLocally() }
    }

    private func rebuildIndexLocally() throws(StoreError) -> (chunks: Int, packs: Int, skipped: [VerifyReport.Problem])
    {
        try StoreLock.withMaintenanceLocks(in: directory) { () throws(StoreError) in
            var entries: [(ChunkID, ChunkLocation)] = []
            var skipped: [VerifyReport.Problem] = []
            var packs = 0
            for name in try directory.names(in: directory.packs, dirName: "packs", suffix: "pack") {
                let file = "packs/\(name).pack"
                guard let id = ChunkID(hex: name) else { continue }
                do {
                    let fd = try FileDescriptor.open(name + ".pack", in: directory.packs, [.readOnly, .noFollow])
                    defer { fd.close() }
                    for entry in try PackReader.readTrailer(fd, file: "\(path)/\(file)") {
                        entries.append(
                            (
                                entry.id,
                                ChunkLocation(
                                    pack: id, frameOffset: entry.frameOffset, frameLength: entry.frameLength,
                                    slot: entry.slot)
                            ))
                    }
                    packs += 1
                } catch {
                    skipped.append(.init(file: file, message: "\(error)"))
                }
            }
            entries.sort { $0.0 < $1.0 }
            try index.replaceAll { (writer) throws(StoreError) in
                for (id, location) in entries { try writer.add(id, location) }
            }
            return (index.entryCount, packs, skipped)
        }
    }
}
