import Store
import Syscall
import Tracee

/// Which process a chain belongs to (`Lineage`): the process that began it and the processes
/// restarted from it. `cpx` extends a chain only for one of them (or with `--adopt`, which makes
/// its process the chain's new lineage); `ld-chpox` adds the process it restarted.
public enum ChainOwnership {
    /// Live process `pid` as a lineage member: its identity and command name.
    public static func member(
        _ pid: Int32, how: Lineage.Member.How, generation: UInt64
    ) throws(TraceeError) -> Lineage.Member {
        let stat = try ProcFS.stat(pid)
        return Lineage.Member(
            process: ProcessIdentity(bootID: try ProcFS.bootID(), pid: pid, startTicks: stat.startTicks),
            command: stat.command, how: how, generation: generation)
    }

    /// What a run checkpointing `pid` into `claim`'s chain records before its first generation
    /// commits (nil: nothing, `pid` is already of the chain's lineage). Throws
    /// `anotherProcessesChain` when the chain belongs to another process and `adopt` is not set.
    static func admit(
        _ pid: Int32, to claim: ChainClaim, store: Store, adopt: Bool
    ) throws(CheckpointError) -> (member: Lineage.Member, replacing: Bool)? {
        let chain: Chain?
        do { chain = try store.chain(claim.chain) } catch {
            if case .noSuchChain = error { chain = nil } else { throw .store(error) }
        }
        guard let chain, let head = chain.head else {
            return (try identify(pid, how: .began, generation: 0), true)
        }
        if adopt { return (try identify(pid, how: .adopted, generation: chain.nextGeneration), true) }
        let candidate = try identify(pid, how: .continued, generation: chain.nextGeneration)
        let lineage: Lineage?
        do { lineage = try claim.lineage() } catch { throw .store(error) }
        if let lineage {
            if lineage.includes(candidate.process) { return nil }
            throw .anotherProcessesChain(
                chain: claim.chain, pid: pid,
                owner: lineage.newest.map {
                    .init(pid: $0.process.pid, command: $0.command, head: head.generation, at: head.createdNanoseconds)
                })
        }
        // A chain from before lineages were kept: its newest image says which process it was.
        let image = try? ProcessImage(
            decoding: try store.manifest(chain: claim.chain, generation: head.generation).metadata,
            generation: head.generation)
        if let image, image.pid == pid { return (candidate, false) }
        throw .anotherProcessesChain(
            chain: claim.chain, pid: pid,
            owner: image.map {
                .init(
                    pid: $0.pid, command: String($0.executable.split(separator: "/").last ?? ""),
                    head: head.generation, at: head.createdNanoseconds)
            })
    }

    private static func identify(
        _ pid: Int32, how: Lineage.Member.How, generation: UInt64
    ) throws(CheckpointError) -> Lineage.Member {
        do { return try member(pid, how: how, generation: generation) } catch { throw .process(error) }
    }

    /// Adds the process `ld-chpox` restarted from `generation` of `chain` to the chain's lineage,
    /// so that it continues the chain without `--adopt`. Returns why it could not, for the user.
    static func recordRestart(store: Store, chain: String, generation: UInt64, pid: Int32) -> String? {
        let why: String
        do {
            try store.addToLineage(chain: chain, try member(pid, how: .restarted, generation: generation))
            return nil
        } catch let error as StoreError {
            if case .chainBusy(_, let holder) = error {
                why = "another process\(holder.map { " (pid \($0))" } ?? "") is writing the chain"
            } else {
                why = "\(error)"
            }
        } catch {
            why = "\(error)"
        }
        return "pid \(pid) could not be recorded as continuing chain '\(chain)': \(why); "
            + "its next `cpx` into that chain needs --adopt"
    }
}
