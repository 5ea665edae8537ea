import Syscall

/// The right to write one chain, held for a whole run of generations (a `cpx` run, every
/// generation of `cpx --interval`): `<chain>.chain.lock`, exclusive, with the holder's pid
/// written in the lock file for the message another writer gets. A second writer is refused at
/// once instead of interleaving its generations with the first one's; the kernel drops the lock
/// when its holder dies. Released when the claim is (deinit, or `release`).
public final class ChainClaim {
    public let chain: String
    let store: Store
    private var lock: StoreLock?
    /// The remote's claim, for a cache of a remote store (`StoreRemote.claim`).
    private var remoteClaim: AnyObject?

    /// Claims chain `name` of `store`; throws `chainBusy` (naming the holder's pid) when another
    /// writer holds it.
    public init(store: Store, chain name: String) throws(StoreError) {
        guard Chain.isValidName(name) else { throw .invalidChainName(name) }
        self.store = store
        chain = name
        // A lock can outlive its holder's close by the instant a forked child of that process
        // takes to exec (the child shares the lock until then), so a busy chain is retried
        // briefly before it is reported; a real writer holds it for its whole run.
        var attempt: StoreLock?
        for _ in 0..<25 {
            attempt = try StoreLock.ifFree(.chain(name), .exclusive, in: store.directory)
            if attempt != nil { break }
            CurrentProcess.sleep(microseconds: 10_000)
        }
        guard let lock = attempt else {
            throw .chainBusy(chain: name, holder: StoreLock.holder(.chain(name), in: store.directory))
        }
        lock.recordHolder()
        self.lock = lock
        // On a remote store, writers on other hosts are kept out by the remote's claim.
        remoteClaim = try store.remote?.claim(chain: name)
    }

    /// Starts the next generation of the claimed chain (see `Store.beginGeneration`).
    public func beginGeneration(full: Bool = false) throws(StoreError) -> GenerationWriter {
        precondition(lock != nil, "chain claim already released")
        return try GenerationWriter(store: store, chain: chain, full: full, claimed: true)
    }

    /// The claimed chain's lineage (nil when none is recorded).
    public func lineage() throws(StoreError) -> Lineage? { try store.lineage(of: chain) }

    /// Adds `member` to the chain's lineage; with `replacing`, it becomes the whole lineage
    /// (`cpx --adopt`).
    public func record(_ member: Lineage.Member, replacing: Bool = false) throws(StoreError) {
        precondition(lock != nil, "chain claim already released")
        let current = replacing ? nil : try store.lineage(of: chain)
        try store.publish((current ?? Lineage(chain: chain, members: [])).adding(member))
    }

    /// Gives the chain up to other writers.
    public func release() {
        remoteClaim = nil
        lock?.clearHolder()
        lock = nil
    }

    deinit { release() }
}
