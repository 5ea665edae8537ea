import Store
import Syscall

/// One generation as `dumpinfo --generation` shows it: its chain entry and manifest figures,
/// the process image cpx recorded, and how many pages of each mapping the store holds.
public struct GenerationDetail: Sendable {
    public var chain: String
    public var entry: Chain.Entry
    public var parent: ChunkID?
    public var statistics: GenerationManifest.Statistics
    /// nil when the generation was written by something other than cpx (pages only).
    public var image: ProcessImage?
    /// The rebuilt page map.
    public var map: PageMap
    /// For each of the image's mappings, in order: its pages the page map holds.
    public var storedPages: [UInt64]
    /// The tree's TCP connections to peers outside it, each with whether a packet filter rule
    /// holds it now (`cpx --kill`; nil where the rules cannot be read: not root, no nft).
    public var outsideConnections: [(connection: ProcessImage.OutsideConnection, held: Bool?)] = []

    public init(chain: String, entry: Chain.Entry, manifest: GenerationManifest, map: PageMap) throws(CheckpointError) {
        self.chain = chain
        self.entry = entry
        parent = manifest.parent
        statistics = manifest.statistics
        image =
            manifest.metadata.isEmpty
            ? nil : try ProcessImage(decoding: manifest.metadata, generation: entry.generation)
        self.map = map
        storedPages = (image?.mappings ?? []).map { UInt64(map.entries(in: $0.pages).count) }
        let outside = image.map { ProcessImage.outsideConnections($0.processes) } ?? []
        if !outside.isEmpty {
            let rules = (try? PacketFilter.rules()).map { Set($0.map(\.connection)) }
            outsideConnections = outside.map {
                ($0, rules.map { [connection = $0.connection] in $0.contains(connection) })
            }
        }
    }

    /// Generation `generation` of chain `name` (default: its newest), rebuilt.
    public static func load(_ store: Store, chain name: String, generation: UInt64?) throws -> GenerationDetail {
        let (entry, manifest, map) = try store.rebuild(chain: name, generation: generation)
        return try GenerationDetail(chain: name, entry: entry, manifest: manifest, map: map)
    }
}

extension ProcessImage.Mapping {
    /// The mapping's pages, by page number.
    public var pages: PageRange { PageRange(first: Page.number(of: start), count: pageCount) }
}
