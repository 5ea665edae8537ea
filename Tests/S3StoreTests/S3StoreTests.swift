import Foundation
import Incremental
import ObjectStore
import S3Store
import S3TestSupport
import Store
import StoreTestSupport
import Syscall
import TestTools
import Testing

/// The store on S3 (`S3Store`) against the real RGW of scripts/ceph.sh: hosts are processes or
/// stores with caches of their own.
@Suite(.serialized, .timeLimit(.minutes(5))) struct S3StoreTests {
    /// A chain written on one host rebuilds, every generation byte for byte, on another whose
    /// cache is empty; the objects are where the layout says.
    @Test func anotherHostRebuildsEveryGeneration() throws {
        let fixture = try S3StoreFixture("rebuild")
        defer { fixture.cleanup() }
        let states = try writeChain(try fixture.open(host: "a"), chain: "job", seed: 11, rounds: 5)

        let other = try fixture.open(host: "b", create: false)
        #expect(other.location == fixture.url)
        #expect(try other.chainNames() == ["job"])
        #expect(try mismatches(other, chain: "job", states: states, generations: [0, 1, 2, 3, 4]).isEmpty)
        #expect(try fixture.objects("manifests").count == 5)
        #expect(try fixture.objects("index").count == 5)  // one segment a generation
        #expect(try fixture.objects("chains").map(\.key).map { $0.hasSuffix("/chains/job.chain") } == [true])
        #expect(try fixture.client.head("fleet/a/chpox-store") != nil)
        // No lease is left behind by writers that ended.
        #expect(try fixture.objects("locks").isEmpty)
    }

    /// A restart from an empty cache downloads the packs its generation uses, not the others;
    /// an incremental generation uploads one new pack, one segment and one manifest, and the
    /// pack holds its new chunks only.
    @Test func downloadsWhatItNeedsUploadsWhatIsNew() throws {
        let fixture = try S3StoreFixture("transfer")
        defer { fixture.cleanup() }
        let store = try fixture.open(host: "a")
        var memory = SyntheticMemory(seed: 5, pages: 2048, dirtyPerRound: 20)
        var states: [SyntheticMemory] = []
        var packsAfter: [Set<String>] = []
        for round in 0..<3 {
            let writer = try store.beginGeneration(chain: "job")
            let change = round == 0 ? nil : memory.advance()
            try memory.record(change, into: writer)
            let before = Set(try fixture.objects("packs").map(\.key))
            let entry = try writer.commit()
            let after = try fixture.objects("packs")
            let added = after.filter { !before.contains($0.key) }
            #expect(added.count == 1, "generation \(entry.generation) uploaded \(added.count) packs")
            // What was uploaded is what the generation stored: its new chunks, compressed.
            let stored = try store.manifest(chain: "job", generation: entry.generation).statistics.storedBytes
            #expect(UInt64(added.reduce(0) { $0 + $1.size }) >= stored)
            // Beyond the compressed frames: a pack's header, frame headers and a 28-byte trailer
            // entry a chunk.
            let newChunks = try store.manifest(chain: "job", generation: entry.generation).statistics.newChunks
            #expect(UInt64(added.reduce(0) { $0 + $1.size }) < stored + 32 * newChunks + 4096)
            packsAfter.append(Set(after.map(\.key)))
            states.append(memory)
        }

        let reader = try fixture.open(host: "b", create: false)
        #expect(try mismatch(reader, chain: "job", generation: 0, expected: states[0]) == nil)
        let cached = try reader.cachedNames(.pack)
        #expect(cached.count == 1, "generation 0 needs its own pack only; the cache holds \(cached)")
        #expect(try mismatch(reader, chain: "job", generation: 2, expected: states[2]) == nil)
        #expect(try reader.cachedNames(.pack).count == 3)
    }

    /// Hosts share chunks: a second host's first generation of the same memory stores nothing
    /// new (its index came from the remote).
    @Test func hostsDeduplicateAgainstEachOther() throws {
        let fixture = try S3StoreFixture("dedup")
        defer { fixture.cleanup() }
        try writeChain(try fixture.open(host: "a"), chain: "first", seed: 21, rounds: 1, pages: 512)
        let states = try writeChain(try fixture.open(host: "b"), chain: "second", seed: 21, rounds: 1, pages: 512)
        let second = try fixture.open(host: "c", create: false)
        let statistics = try second.manifest(chain: "second", generation: 0).statistics
        #expect(statistics.pagesWritten > 400)
        #expect(statistics.newChunks == 0)
        #expect(try mismatch(second, chain: "second", generation: 0, expected: states[0]) == nil)
    }

    /// One writer to a chain across hosts: a second host is refused while the first holds the
    /// chain, with who holds it; once it lets go, the second writes.
    @Test func aChainHasOneWriterAcrossHosts() throws {
        let fixture = try S3StoreFixture("claim")
        defer { fixture.cleanup() }
        let a = try fixture.open(host: "a")
        let b = try fixture.open(host: "b")
        try writeChain(a, chain: "job", seed: 3, rounds: 1)
        var claim: ChainClaim? = try ChainClaim(store: a, chain: "job")
        let refused = refusal { _ = try b.beginGeneration(chain: "job") }
        #expect(refused?.contains("chain 'job' is being written by") == true, "\(refused ?? "not refused")")
        #expect(claim != nil)
        claim = nil
        let writer = try b.beginGeneration(chain: "job")
        #expect(writer.generation == 1)
        try writer.commit()
        #expect(try a.chain("job").nextGeneration == 2)
    }

    /// A lease whose holder died (a writer killed mid-generation: its renewals stop) expires,
    /// and another host takes the chain over; an object a dead writer uploaded and nothing
    /// names (a pack) is kept by gc within the safety margin and deleted past it; every
    /// generation still rebuilds.
    @Test func aDeadWritersLeaseExpires() throws {
        let fixture = try S3StoreFixture("expiry")
        defer { fixture.cleanup() }
        let settings = ["CHPOX_S3_LEASE_SECONDS": "2"]
        let a = try fixture.open(host: "a", settings)
        let states = try writeChain(a, chain: "job", seed: 9, rounds: 2, pages: 64)
        // A writer in a process of its own holds the chain mid-generation, and is killed.
        let environment = try fixture.environment(host: "killed", settings).map { "\($0.key)=\($0.value)" }
        let (child, said) = try startHeldWriter(
            TestTools.path("chpox-store-writer"), store: fixture.url, chain: "job", environment: environment)
        #expect(said == "published\n")
        try child.send(SIGKILL)
        _ = try child.wait()

        let b = try fixture.open(host: "b", settings)
        #expect(throws: StoreError.self, "the chain was free while its writer's lease ran") {
            try b.beginGeneration(chain: "job")
        }
        var taken: GenerationWriter?
        let started = Date()
        while taken == nil && Date().timeIntervalSince(started) < 10 {
            taken = try? b.beginGeneration(chain: "job")
            if taken == nil { Thread.sleep(forTimeInterval: 0.2) }
        }
        let next = try #require(taken, "the dead writer's lease never expired")
        #expect(next.generation == 2)
        var memory = states[1]
        let change = memory.advance()
        try memory.record(change, into: next)
        try next.commit()

        // What a writer that died after uploading leaves: a pack nothing names.
        let orphan = "fleet/a/packs/\(String(repeating: "ab", count: 16)).pack"
        _ = try fixture.client.put(orphan, Array(repeating: 7, count: 4096))
        _ = try fixture.open(host: "gc", settings).collectGarbage(RetentionPolicy())
        #expect(try fixture.client.head(orphan) != nil, "gc deleted a pack younger than the safety margin")
        _ = try fixture.open(host: "gc", settings + ["CHPOX_S3_SAFETY_MARGIN": "0"]).collectGarbage(RetentionPolicy())
        #expect(try fixture.client.head(orphan) == nil, "gc kept a dead pack older than the margin")
        // The dead writer's expired leases went with gc; every generation rebuilds elsewhere.
        let leases = try fixture.objects("locks").map(\.key)
        #expect(leases.isEmpty, "\(leases)")
        let fresh = try fixture.open(host: "fresh", create: false)
        #expect(try mismatches(fresh, chain: "job", states: states + [memory], generations: [0, 1, 2]).isEmpty)
        #expect(try fresh.verify(deep: true).problems.isEmpty)
    }

    /// Maintenance waits for generations in flight on other hosts, and gives up with their
    /// holders named when they do not end; a writer waits for maintenance the same way.
    @Test func maintenanceAndWritersKeepApart() throws {
        let fixture = try S3StoreFixture("apart")
        defer { fixture.cleanup() }
        let quick = ["CHPOX_S3_WAIT_SECONDS": "1"]
        let a = try fixture.open(host: "a", quick)
        try writeChain(a, chain: "job", seed: 4, rounds: 2)
        let inFlight = try a.beginGeneration(chain: "job")
        let refused = refusal { _ = try fixture.open(host: "gc", quick).collectGarbage(RetentionPolicy(keepLast: 1)) }
        #expect(
            refused?.contains("generations in flight") == true, "\(refused ?? "gc ran beside a generation in flight")")
        try inFlight.commit()
        let report = try fixture.open(host: "gc", quick).collectGarbage(RetentionPolicy(keepLast: 1))
        #expect(!report.dropped.isEmpty)
        #expect(try fixture.open(host: "c", create: false).chain("job").entries.map(\.generation) == [2])
    }

    /// `copyChain` both ways: the same manifests (ids) on S3 as locally; a second copy sends
    /// only the newer generations; a chain that differs is refused.
    @Test func copyBetweenLocalAndS3() throws {
        let fixture = try S3StoreFixture("copy")
        defer { fixture.cleanup() }
        let local = TemporaryStore("copy-local")
        defer { local.cleanup() }
        let source = try local.open()
        let states = try writeChain(source, chain: "job", seed: 8, rounds: 3)
        let remote = try fixture.open(host: "a")
        let first = try source.copyChain("job", to: remote)
        #expect(first.generationsCopied == 3)
        #expect(try remote.chain("job") == source.chain("job"))

        let more = try writeChainContinuing(source, chain: "job", seed: 8, from: states, rounds: 2)
        let second = try source.copyChain("job", to: remote)
        #expect((second.generationsPresent, second.generationsCopied) == (3, 2))

        let back = TemporaryStore("copy-back")
        defer { back.cleanup() }
        let returned = try back.open()
        let reader = try fixture.open(host: "b", create: false)
        _ = try reader.copyChain("job", to: returned)
        #expect(try mismatches(returned, chain: "job", states: more, generations: [0, 1, 2, 3, 4]).isEmpty)
        #expect(try returned.verify(deep: true).problems.isEmpty)

        try writeChain(try fixture.open(host: "c"), chain: "other", seed: 1, rounds: 1)
        let differing = try local.open()
        try writeChain(differing, chain: "other", seed: 2, rounds: 1)
        #expect(throws: StoreError.self) { try differing.copyChain("other", to: remote) }
    }

    /// rebuild-index and rebase on S3: the remote's segments are replaced, chains swapped, and
    /// every generation rebuilds from a fresh host after.
    @Test func maintenanceOnS3() throws {
        let fixture = try S3StoreFixture("maintain")
        defer { fixture.cleanup() }
        let states = try writeChain(try fixture.open(host: "a"), chain: "job", seed: 6, rounds: 4)
        let admin = try fixture.open(host: "admin")
        let rebuilt = try admin.rebuildIndex()
        #expect(rebuilt.skipped.isEmpty)
        #expect(try fixture.objects("index").count == 1)
        _ = try admin.rebase(chain: "job", generation: 2)
        let fresh = try fixture.open(host: "fresh", create: false)
        #expect(try fresh.chain("job").entries.map(\.kind) == [.full, .delta, .full, .delta])
        #expect(try mismatches(fresh, chain: "job", states: states, generations: [0, 1, 2, 3]).isEmpty)
        #expect(try fresh.verify(deep: true).problems.isEmpty)
    }

    /// The cache keeps the packs under its limit, evicting those fetched longest ago; evicted
    /// packs come back when needed.
    @Test func theCacheStaysUnderItsLimit() throws {
        let fixture = try S3StoreFixture("evict")
        defer { fixture.cleanup() }
        let states = try writeChain(
            try fixture.open(host: "a"), chain: "job", seed: 31, rounds: 4, pages: 1024, dirty: 512)
        let small = try fixture.open(host: "b", create: false, ["CHPOX_CACHE_LIMIT": "1"])
        for generation in [0, 1, 2, 3, 0] as [UInt64] {
            #expect(try mismatch(small, chain: "job", generation: generation, expected: states[Int(generation)]) == nil)
        }
        let sizes = try small.cachedNames(.pack).compactMap { small.cachedStatus(.pack, $0)?.size }
        #expect(sizes.count < 4, "the cache kept \(sizes.count) packs past its limit")
    }

    /// Root trusts a store on S3 as its own only when told (`--trust-store`): whoever holds the
    /// bucket's credentials could have written its images. A user's restart is bounded by the
    /// user's own ids, as for a local store of theirs.
    @Test(.enabled(if: getuid() == 0, "the rule is about root's restarts; run as root"))
    func rootTrustsAStoreOnS3OnlyWhenTold() throws {
        let fixture = try S3StoreFixture("trust")
        defer { fixture.cleanup() }
        try writeChain(try fixture.open(host: "a"), chain: "job", seed: 2, rounds: 1)
        let untrusted = ImageAuthority(store: try fixture.open(host: "b", create: false))
        #expect(untrusted.untrusted?.contains("--trust-store") == true)
        #expect(!untrusted.trustedAsRoot(restartedBy: 0))
        let rootImage = ProcessImage.Credentials(
            user: .init(real: 0, effective: 0, saved: 0, filesystem: 0),
            group: .init(real: 0, effective: 0, saved: 0, filesystem: 0), groups: [])
        #expect(untrusted.excess(rootImage) != nil)
        let trusted = ImageAuthority(
            store: try S3Store.open(
                fixture.url, create: false, trusted: true, environment: try fixture.environment(host: "b")))
        #expect(trusted.untrusted == nil)
        #expect(trusted.excess(rootImage) == nil)
        #expect(trusted.trustedAsRoot(restartedBy: 0))
    }

    /// Errors name the store and what to do: a prefix that is not a store, a missing bucket.
    @Test func refusalsNameTheStore() throws {
        let fixture = try S3StoreFixture("refuse")
        defer { fixture.cleanup() }
        let empty = refusal { _ = try fixture.open(host: "a", create: false) }
        #expect(empty?.contains("\(fixture.url) is not a chpox store") == true, "\(empty ?? "opened")")
        let missing = "s3://chpox-missing-\(UInt32.random(in: 0...UInt32.max))/x"
        let environment = try fixture.environment(host: "a")
        let absent = refusal { _ = try S3Store.open(missing, create: true, environment: environment) }
        #expect(
            absent?.contains("does not exist") == true && absent?.contains("--create-bucket") == true,
            "\(absent ?? "opened")")
        #expect(throws: StoreError.self) { try S3StoreLocation(parsing: "s3:///x") }
        #expect(try S3StoreLocation(parsing: "s3://b//p/q/").prefix == "p/q")
    }
}

/// Continues `chain` from `states` (its memory so far) for `rounds` more generations; returns
/// every state.
func writeChainContinuing(
    _ store: Store, chain: String, seed: UInt64, from states: [SyntheticMemory], rounds: Int
) throws -> [SyntheticMemory] {
    var all = states
    var memory = try #require(states.last)
    for _ in 0..<rounds {
        let writer = try store.beginGeneration(chain: chain)
        let change = memory.advance()
        try memory.record(change, into: writer)
        try writer.commit()
        all.append(memory)
    }
    return all
}

extension Dictionary where Key == String, Value == String {
    static func + (left: Self, right: Self) -> Self { left.merging(right) { $1 } }
}

/// What `body` threw, as its message; nil when it did not throw.
func refusal(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch {
        return "\(error)"
    }
}
