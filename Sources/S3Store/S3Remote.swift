import Foundation
import Synchronization
import ObjectStore
import Store
import Syscall

/// Settings of a store on S3 that tests and `--help` may change.
public struct S3StoreSettings: Sendable {
    /// How long a lease lasts unrenewed: how long a crashed writer keeps others out.
    public var leaseSeconds: Int64 = 60
    /// Maintenance deletes a pack only once it is older than this (by the server's clock, as
    /// its listing says): a writer whose lease lapsed while it uploaded never loses a pack.
    public var safetyMarginSeconds: Int64 = 3600
    /// How long a writer waits for maintenance to end, and maintenance for writers, before
    /// giving up.
    public var waitSeconds: Int64 = 600
    /// The most the cache keeps of packs (the index, manifests and chains are always kept).
    public var cacheLimitBytes: Int64 = 4 << 30

    public init() {}

    /// `CHPOX_S3_LEASE_SECONDS`, `CHPOX_S3_SAFETY_MARGIN`, `CHPOX_S3_WAIT_SECONDS` and
    /// `CHPOX_CACHE_LIMIT` (bytes, or with a K, M, G suffix) over the defaults.
    public static func fromEnvironment(_ environment: [String: String]) -> S3StoreSettings {
        var settings = S3StoreSettings()
        if let value = environment["CHPOX_S3_LEASE_SECONDS"].flatMap(Int64.init), value > 0 {
            settings.leaseSeconds = value
        }
        if let value = environment["CHPOX_S3_SAFETY_MARGIN"].flatMap(Int64.init), value >= 0 {
            settings.safetyMarginSeconds = value
        }
        if let value = environment["CHPOX_S3_WAIT_SECONDS"].flatMap(Int64.init), value >= 0 {
            settings.waitSeconds = value
        }
        if let value = environment["CHPOX_CACHE_LIMIT"].flatMap(parseBytes) { settings.cacheLimitBytes = value }
        return settings
    }

    /// `4G`, `512M`, `100K`, `12345`.
    public static func parseBytes(_ text: String) -> Int64? {
        let units: [Character: Int64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        if let last = text.uppercased().last, let unit = units[last], let count = Int64(text.dropLast()) {
            return count >= 0 ? count * unit : nil
        }
        return Int64(text).flatMap { $0 >= 0 ? $0 : nil }
    }
}

/// The store on S3 behind a local cache (`StoreRemote`): the cache is an ordinary store; this
/// fetches what it lacks, publishes what a writer committed, and keeps writers and maintenance
/// on every host apart with leases (`S3Lease`).
///
/// - A generation: its packs are uploaded (write-once) before any index segment names them,
///   then its segment and manifest, then the chain is swapped (`If-Match` on the ETag of the
///   version the writer began from; `If-None-Match: *` for a new chain): the commit point. A
///   writer that fails before the swap leaves only objects nothing names, which maintenance
///   deletes once they are older than the safety margin.
/// - A chain's writer holds `locks/chain-NAME.lease`; a generation in flight holds
///   `locks/writer-ID.lease` from before it reads the index to after its swap; maintenance
///   holds `locks/maintenance.lease`. A writer writes its lease, then looks for maintenance's;
///   maintenance writes its lease, then waits for the writers' to go: one of the two always
///   sees the other (S3 reads its writes).
/// - Maintenance (gc, rebase, rebuild-index) downloads the whole store into the cache, runs
///   there as on a local store, and makes the remote what it left: new objects uploaded,
///   chains swapped, then objects it removed deleted (packs only past the safety margin).
public final class S3Remote: StoreRemote {
    public let location: String
    public let place: S3StoreLocation
    public let client: S3Client
    public let settings: S3StoreSettings
    public let trusted: Bool
    /// The ETag of the version of each chain and lineage object the cache holds (a
    /// compare-and-swap is from it).
    private var versions: [String: ETag] = [:]

    static let markerKey = "chpox-store"
    static let markerBody = Array("chpox-store 1\n".utf8)

    /// Opens the store at `location`; `create`: writes its marker when the prefix holds none
    /// (the bucket must exist, unless `createBucket`).
    public init(
        _ location: S3StoreLocation, client: S3Client, settings: S3StoreSettings, create: Bool,
        createBucket: Bool = false, trusted: Bool = false
    ) throws(StoreError) {
        self.trusted = trusted
        self.place = location
        self.location = location.description
        self.client = client
        self.settings = settings
        let marker: (body: [UInt8], etag: ETag)?
        var exists = true
        do {
            marker = try client.getVersioned(location.key(Self.markerKey))
        } catch let error where error.kind == .noSuchBucket {
            (marker, exists) = (nil, false)
        } catch {
            throw .remote(location: location.description, reason: "could not open: \(error)")
        }
        if let marker {
            guard marker.body == Self.markerBody else {
                throw .notAStore(path: self.location, reason: "its \(Self.markerKey) object is not a chpox marker")
            }
            return
        }
        if !exists && create && createBucket {
            try s3("create bucket \(location.bucket)") { () throws(S3Error) in try client.createBucket() }
            exists = true
        }
        guard exists else {
            throw .remote(
                location: self.location,
                reason: "bucket \(location.bucket) does not exist at \(client.configuration.endpoint) "
                    + (create
                        ? "(check its name and AWS_ENDPOINT_URL, or let cpx make it: --create-bucket)"
                        : "(check its name and AWS_ENDPOINT_URL)"))
        }
        guard create else {
            throw .notAStore(
                path: self.location,
                reason: "no \(Self.markerKey) object under it (cpx creates one with its first checkpoint)")
        }
        do {
            _ = try client.put(location.key(Self.markerKey), Self.markerBody, condition: .ifAbsent)
        } catch let error where error.kind == .alreadyExists {
        } catch { throw convert(error, "create") }
    }

    // MARK: Reading

    public func fetch(_ kind: StoreFileKind, _ name: String, into store: Store) throws(StoreError) -> Bool {
        if kind == .pack { store.evictPacks(over: settings.cacheLimitBytes) }
        return try download(kind, name, into: store)
    }

    public func fetch(packs names: [String], into store: Store) throws(StoreError) {
        guard !names.isEmpty else { return }
        store.evictPacks(over: settings.cacheLimitBytes)
        try transfer(names) { (name) throws(StoreError) in
            guard try self.download(.pack, name, into: store) else {
                throw StoreError.system(.noSuchFile, operation: "fetch", path: "\(self.location)/packs/\(name).pack")
            }
        }
    }

    /// Downloads one object into the cache; false when the remote has none.
    private func download(_ kind: StoreFileKind, _ name: String, into store: Store) throws(StoreError) -> Bool {
        let key = place.key(kind, name)
        let fetched = try s3("fetch") { () throws(S3Error) in try client.getVersioned(key) }
        guard let (body, _) = fetched else { return false }
        try store.install(kind, name, body)
        return true
    }

    public func chainNames() throws(StoreError) -> [String] {
        try names(.chain)
    }

    /// Names (without suffix) of the remote's objects of `kind`.
    func names(_ kind: StoreFileKind) throws(StoreError) -> [String] {
        try objects(kind).keys.sorted()
    }

    /// The remote's objects of `kind`, by name.
    func objects(_ kind: StoreFileKind) throws(StoreError) -> [String: ObjectInfo] {
        let prefix = place.listing(kind)
        let listed = try s3("list") { () throws(S3Error) in try client.list(prefix: prefix) }
        var found: [String: ObjectInfo] = [:]
        for object in listed {
            let file = object.key.dropFirst(prefix.count)
            guard !file.contains("/"), file.hasSuffix("." + kind.suffix) else { continue }
            let name = String(file.dropLast(kind.suffix.count + 1))
            // Objects a store never names so are not its own (a chain's name is checked where
            // it is used): nothing else is brought into the cache.
            if kind != .chain && kind != .lineage && ChunkID(hex: name) == nil { continue }
            found[name] = object
        }
        return found
    }

    public func refresh(_ kind: StoreFileKind, chain name: String, in store: Store) throws(StoreError) {
        let key = place.key(kind, name)
        let read = try s3("read") { () throws(S3Error) in try client.getVersioned(key) }
        guard let (body, etag) = read else {
            versions[key] = nil
            try store.uncache(kind, name)
            return
        }
        if (try? store.cachedBytes(kind, name)) != body { try store.install(kind, name, body) }
        versions[key] = etag
    }

    public func refreshIndex(in store: Store) throws(StoreError) {
        let remote = Set(try names(.index))
        let cached = Set(try store.cachedNames(.index))
        try transfer(Array(remote.subtracting(cached))) { (name) throws(StoreError) in
            _ = try self.download(.index, name, into: store)
        }
        for name in cached.subtracting(remote) { try store.uncache(.index, name) }
    }

    public func packSizes() throws(StoreError) -> [String: Int64] {
        try objects(.pack).mapValues { Int64($0.size) }
    }

    public func pullAll(into store: Store) throws(StoreError) {
        for kind in [StoreFileKind.index, .manifest, .pack] {
            let cached = Set(try store.cachedNames(kind))
            try transfer(try names(kind).filter { !cached.contains($0) }) { (name) throws(StoreError) in
                _ = try self.download(kind, name, into: store)
            }
        }
        for name in try chainNames() {
            try refresh(.chain, chain: name, in: store)
            try refresh(.lineage, chain: name, in: store)
        }
        try refreshIndex(in: store)
    }

    // MARK: Writing

    public func claim(chain name: String) throws(StoreError) -> AnyObject {
        let key = place.key("locks/chain-\(name).lease")
        let taken = try s3("claim chain \(name)") { () throws(S3Error) in
            try S3Lease.take(key, client: client, seconds: settings.leaseSeconds, exclusive: true)
        }
        guard let lease = taken.lease else {
            throw .remote(
                location: location,
                reason: "chain '\(name)' is being written by \(taken.busy?.who ?? "another writer") "
                    + "(its lease runs \(max(0, (taken.busy?.expires ?? 0) - now)) s more unless renewed: "
                    + "wait for it to end, or pick another --name)")
        }
        claims[name] = WeakLease(lease: lease)
        return lease
    }

    /// The chains this process claimed, for the commit's check.
    private var claims: [String: WeakLease] = [:]

    public func beginGeneration(chain name: String) throws(StoreError) -> AnyObject {
        let key = place.key("locks/writer-\(UInt64.random(in: 0...UInt64.max)).lease")
        let deadline = now + settings.waitSeconds
        while true {
            let taken = try s3("begin a generation") { () throws(S3Error) in
                try S3Lease.take(key, client: client, seconds: settings.leaseSeconds, exclusive: false)
            }
            guard let lease = taken.lease else { continue }
            let maintenance = try s3("begin a generation") { () throws(S3Error) in
                try S3Lease.read(place.key("locks/maintenance.lease"), client: client)
            }
            guard let maintenance, !maintenance.holder.expired() else {
                generationLease = lease
                return lease
            }
            lease.release()
            guard now < deadline else {
                throw .remote(
                    location: location,
                    reason: "maintenance by \(maintenance.holder.who) holds the store; waited "
                        + "\(settings.waitSeconds) s (run the checkpoint again when it has ended)")
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
    }

    /// The lease of the generation in flight.
    private weak var generationLease: S3Lease?

    public func upload(packs: [ChunkID], from store: Store) throws(StoreError) {
        try transfer(packs.map(\.hex)) { (name) throws(StoreError) in try self.uploadOnce(.pack, name, from: store) }
    }

    /// Objects moved at once, each by a thread of its own: a transfer waits on the network and
    /// the server, not on this machine's cores.
    static let transfers = 4

    /// Runs `body` for every name, `transfers` at a time; the first failure is thrown once all
    /// have ended.
    private func transfer(
        _ names: [String], _ body: @escaping (String) throws(StoreError) -> Void
    ) throws(StoreError) {
        guard names.count > 1 else {
            for name in names { try body(name) }
            return
        }
        let next = Mutex(0)
        let failure = Mutex<StoreError?>(nil)
        let group = DispatchGroup()
        // The threads share the names (read only), the counter and the failure (locked).
        let shared = UncheckedBody(body: body)
        for _ in 0..<min(Self.transfers, names.count) {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                while failure.withLock({ $0 == nil }) {
                    let k = next.withLock { value in
                        defer { value += 1 }
                        return value
                    }
                    guard k < names.count else { return }
                    do throws(StoreError) { try shared.body(names[k]) } catch {
                        failure.withLock { if $0 == nil { $0 = error } }
                    }
                }
            }
        }
        group.wait()
        if let error = failure.withLock({ $0 }) { throw error }
    }

    public func commit(_ chain: Chain, segment: ChunkID?, manifests: [ChunkID], in store: Store) throws(StoreError) {
        if let segment { try uploadOnce(.index, segment.hex, from: store) }
        for manifest in manifests { try uploadOnce(.manifest, manifest.hex, from: store) }
        let lapsed =
            (claims[chain.name]?.lease.map { $0.lost || !$0.renew() } ?? false)
            || (generationLease.map { $0.lost || !$0.renew() } ?? false)
        guard !lapsed else {
            throw .remote(
                location: location,
                reason: "this writer's lease on chain '\(chain.name)' lapsed (it was paused or cut off longer than "
                    + "\(settings.leaseSeconds) s), so generation \(chain.head?.generation ?? 0) was not committed: "
                    + "run the checkpoint again")
        }
        try swap(.chain, chain.name, chain.encoded(), in: store, what: "generation \(chain.head?.generation ?? 0)")
    }

    public func publishLineage(chain name: String, in store: Store) throws(StoreError) {
        try swap(.lineage, name, try store.cachedBytes(.lineage, name), in: store, what: "its lineage")
    }

    /// Replaces the remote's chain (or lineage) object with `bytes`, from the version the cache
    /// read (compare-and-swap; a new one only where there is none).
    private func swap(
        _ kind: StoreFileKind, _ name: String, _ bytes: [UInt8], in store: Store, what: String
    )
        throws(StoreError)
    {
        let key = place.key(kind, name)
        let condition: S3Client.WriteCondition = versions[key].map { .ifMatch($0) } ?? .ifAbsent
        do {
            versions[key] = try client.put(key, bytes, condition: condition)
        } catch let error where error.kind == .etagMismatch || error.kind == .alreadyExists {
            throw .brokenChain(
                chain: name, generation: 0,
                reason: "it changed on \(location) while \(what) was being written (another host wrote it?); "
                    + "nothing was committed: run the command again")
        } catch  where error.isTransient {
            // The retries failed, but an earlier sending may have been carried out, its answer
            // lost: the swap is the commit point, so the object says whether it happened.
            if let (body, etag) = try? client.getVersioned(key), body == bytes {
                versions[key] = etag
                return
            }
            throw .remote(
                location: location,
                reason: "could not commit \(what) of chain '\(name)': \(error); whether it was committed is not "
                    + "known (the server may have carried out a request whose answer was lost): `dumpinfo --store "
                    + "\(location) --chain` says when the server is back, and the next run continues from the chain "
                    + "as it is")
        } catch { throw convert(error, "commit \(what) of chain '\(name)'") }
    }

    /// Uploads a write-once file of the cache; one there already (the same name is the same
    /// bytes) is fine.
    private func uploadOnce(_ kind: StoreFileKind, _ name: String, from store: Store) throws(StoreError) {
        let bytes = try store.cachedBytes(kind, name)
        do {
            _ = try client.put(place.key(kind, name), bytes, condition: .ifAbsent)
        } catch let error where error.kind == .alreadyExists {
        } catch { throw convert(error, "upload") }
    }

    // MARK: Maintenance

    public func maintain<Result>(
        _ store: Store, _ body: () throws(StoreError) -> Result
    ) throws(StoreError) -> Result {
        let lease = try takeMaintenance()
        defer { lease.release() }
        try waitForWriters()

        // The whole store in the cache, and what the remote held, as it was.
        var before: [StoreFileKind: [String: ObjectInfo]] = [:]
        for kind in [StoreFileKind.pack, .index, .manifest] { before[kind] = try objects(kind) }
        try pullAll(into: store)
        // The cache's packs that are not on the remote are what failed local writers left.
        for name in Set(try store.cachedNames(.pack)).subtracting(before[.pack]!.keys) {
            try store.uncache(.pack, name)
        }
        var chainsBefore: [String: [UInt8]] = [:]
        for name in try store.cachedNames(.chain) { chainsBefore[name] = try store.cachedBytes(.chain, name) }

        let result = try body()

        guard !lease.lost, lease.renew() else {
            throw .remote(
                location: location,
                reason: "the maintenance lease lapsed; nothing was deleted from the store (run the command again)")
        }
        // New objects first, then the chains that name them, then deletions.
        var after: [StoreFileKind: Set<String>] = [:]
        for kind in [StoreFileKind.pack, .index, .manifest] {
            after[kind] = Set(try store.cachedNames(kind))
            try transfer(Array(after[kind]!.subtracting(before[kind]!.keys))) { (name) throws(StoreError) in
                try self.uploadOnce(kind, name, from: store)
            }
        }
        for name in try store.cachedNames(.chain) {
            let bytes = try store.cachedBytes(.chain, name)
            if chainsBefore[name] != bytes { try swap(.chain, name, bytes, in: store, what: "maintenance") }
        }
        for name in chainsBefore.keys where (try? store.cachedBytes(.chain, name)) == nil {
            try s3("delete") { () throws(S3Error) in try client.delete(place.key(.chain, name)) }
        }
        let cutoff = now - settings.safetyMarginSeconds
        for kind in [StoreFileKind.index, .manifest, .pack] {
            for (name, object) in before[kind]! where !after[kind]!.contains(name) {
                if kind == .pack, (object.lastModified ?? now) > cutoff { continue }
                try s3("delete") { () throws(S3Error) in try client.delete(object.key) }
            }
        }
        return result
    }

    private func takeMaintenance() throws(StoreError) -> S3Lease {
        let taken = try s3("start maintenance") { () throws(S3Error) in
            try S3Lease.take(
                place.key("locks/maintenance.lease"), client: client, seconds: settings.leaseSeconds,
                exclusive: true)
        }
        guard let lease = taken.lease else {
            throw .remote(
                location: location,
                reason: "maintenance (gc, rebase or rebuild-index) is running on \(taken.busy?.who ?? "another host"): "
                    + "run it again when that one has ended")
        }
        return lease
    }

    /// Waits until no generation is in flight on any host (expired leases are of writers that
    /// died: they hold nothing, and go, with the expired chain leases of writers that died).
    private func waitForWriters() throws(StoreError) {
        let chains = try s3("list leases") { () throws(S3Error) in try client.list(prefix: place.key("locks/chain-")) }
        for object in chains {
            let read = try s3("read a lease") { () throws(S3Error) in try S3Lease.read(object.key, client: client) }
            if let read, read.holder.expired() {
                try s3("remove an expired lease") { () throws(S3Error) in try client.delete(object.key) }
            }
        }
        let deadline = now + settings.waitSeconds
        while true {
            let leases = try s3("list leases") { () throws(S3Error) in
                try client.list(prefix: place.key("locks/writer-"))
            }
            var busy: [String] = []
            for object in leases {
                let read = try s3("read a lease") { () throws(S3Error) in try S3Lease.read(object.key, client: client) }
                guard let lease = read else { continue }
                if !lease.holder.expired() {
                    busy.append(lease.holder.who)
                } else {
                    // A writer that died: its lease holds nothing, and goes.
                    try s3("remove an expired lease") { () throws(S3Error) in try client.delete(object.key) }
                }
            }
            if busy.isEmpty { return }
            guard now < deadline else {
                throw .remote(
                    location: location,
                    reason: "generations in flight (\(busy.joined(separator: ", "))) did not end within "
                        + "\(settings.waitSeconds) s: nothing was changed, run it again later")
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
    }

    // MARK: Errors

    private var now: Int64 { Int64(Date().timeIntervalSince1970) }

    /// Runs an S3 request, its failure said as the store's.
    private func s3<Result>(_ what: String, _ body: () throws(S3Error) -> Result) throws(StoreError) -> Result {
        do { return try body() } catch { throw convert(error, what) }
    }

    private func convert(_ error: S3Error, _ what: String) -> StoreError {
        .remote(location: location, reason: "could not \(what): \(error)")
    }
}

/// A transfer's body, shared by the threads of `S3Remote.transfer`, which partition the work.
private struct UncheckedBody: @unchecked Sendable {
    let body: (String) throws(StoreError) -> Void
}
