import ArgumentParser
import CommandSupport
import Foundation
import Incremental
import Reports
import Store

@main
struct LdChpox: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ld-chpox",
        abstract: "Restart a process from any generation of its chain, or inspect one.",
        discussion: """
            `ld-chpox [--name NAME] [--generation N]` restarts generation N (default: the newest) of chain NAME \
            (default: the store's only chain) and prints the new process's pid; it runs on detached (--wait: stay its \
            parent and exit with its status). It gets its saved pid when that pid is free (root), else a new one with \
            a notice; a tree whose pids are taken restarts in a new PID namespace, where each process has its own \
            pid, with a notice (root; --require-same-pid: an error instead). Its descriptors are reopened at their \
            numbers; terminals and pipes on 0-2 become ld-chpox's own, other pipes a pipe whose peer is gone. Files \
            it was writing are cut back to their size at that generation. TCP connections come back as they were \
            (TCP repair); with --tcp-close they come back closed, for programs that reconnect (notices list them). \
            UNIX sockets cpx --external-unix named connect to their peer's path again or come back with their peer \
            closed, as recorded (notices list them).

            --json prints one document (chpox.restart/1: pid, original pid, notices, closed connections; chpox.check/1; chpox.core/1; see \
            docs/json-schemas.md); with --wait it comes before the process's own output.

            --check rebuilds the generation, verifies every chunk and says what a restart would refuse. --core FILE \
            writes the generation as an ELF core file that `gdb EXECUTABLE FILE` opens with the process's threads, \
            registers and memory as they were. ld-chpox needs chpox-restore-stub beside it.

            --lazy (root) lets the process run at once and fills its anonymous memory as it touches it, streaming \
            the rest in; ld-chpox stays until every page is in and says how many came on touch (the JSON document \
            comes then, with the page server's figures under "lazy"). If ld-chpox ends before, a guardian process \
            kills the restarted processes: none runs on with memory it never had, none waits forever.

            Examples: `ld-chpox --generation 3`; `ld-chpox --lazy --generation 3`; `ld-chpox --name job --wait` (stay its parent); `ld-chpox --check \
            --generation 3`; `ld-chpox --core job.core` then `gdb EXECUTABLE job.core`.

            Exit status: 0 when the process was restarted (or --check or --core succeeded); with --wait, the \
            process's own exit status (128 + N when signal N ended it); 1 when ld-chpox refused or failed, said on \
            stderr (nothing was started and no file changed); 64 for wrong arguments.
            """)

    @OptionGroup var storeOptions: StoreOptions
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Print JSON for scripts: chpox.restart/1 (printed before the process's own output with --wait), "
                + "chpox.check/1 with --check, chpox.core/1 with --core."))
    var json = false
    @Option(name: .long, help: "The chain (the process's name in the store; needed when the store holds several).")
    var name: String?
    // `--generation -1` is refused as no generation number, not for a missing value.
    @Option(name: .long, parsing: .unconditional, help: "The generation (default: the newest).")
    var generation: UInt64?
    @Flag(name: .long, help: "Rebuild the generation and verify every chunk; start nothing.")
    var check = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Print what a restart would do, process by process and phase by phase (the processes it forks, "
                + "the mappings, descriptors and pipes it makes); start nothing."))
    var plan = false
    @Option(
        name: .long,
        help: ArgumentHelp("Write the generation as an ELF core file for gdb; start nothing.", valueName: "file"))
    var core: String?
    @Flag(name: .long, help: "Stay the restarted process's parent and exit with its exit status.")
    var wait = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Let the process run before its memory is in (root): its anonymous memory is filled from the store "
                + "on first touch (userfaultfd) and streamed in meanwhile, the pages the last lazy restart saw "
                + "touched first, first. ld-chpox stays until every page is in, then says how many came on touch; "
                + "if it is killed before, the restarted processes are killed too (a guardian process holds the "
                + "memory until then): none runs with a page it never had. A tree is filled whole, as without "
                + "--lazy."))
    var lazy = false
    @Option(
        name: .long,
        help: ArgumentHelp(
            "With --lazy: stream the pages in this many seconds after the process runs (default 0: at once); "
                + "until then only the pages it touches are filled (to see what it touches, or to leave the disk "
                + "and cores to it while it starts). Streaming starts at once when the process ends.",
            valueName: "seconds"))
    var lazyStreamAfter: Double = 0
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Say where the restart's time went until the process ran, step by step (reading the store, the checks, "
                + "starting the stub, each phase), on stderr. --json always has them under \"timings\"."))
    var timings = false
    @Flag(
        name: .long,
        help: "Fail if a saved pid is taken, instead of restarting under a new one (a tree: in a new PID namespace).")
    var requireSamePid = false
    @Flag(
        name: .customLong("other-cgroups"),
        help: ArgumentHelp(
            "Run it in ld-chpox's control groups where they differ from the ones it ran in (a notice says so). "
                + "Without it, root restarting a root store's image moves it back into its groups (making those of a "
                + "named hierarchy without controllers that are gone); anything else is refused."))
    var otherCgroups = false
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Restore every TCP connection (established or half closed) closed, for programs that reconnect "
                + "(CRIU's name): each socket comes back at its descriptor numbers with its options, not connected "
                + "and shut down, so the program's next read returns end of file (0), its next write fails with "
                + "EPIPE (SIGPIPE unless ignored) and poll says it is readable and hung up. Listening sockets and "
                + "UDP are restored as always. A hold cpx --kill --tcp-established left on them is released (their "
                + "peers are reset). Connections cpx --tcp-close recorded come back closed with or without it."))
    var tcpClose = false
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Write the files the generation kept under this directory (DIR/their/path), for a look, and start "
                + "nothing: the originals are not touched. (A restart puts them back at their own paths, keeping "
                + "the file it replaces beside it as NAME.chpox-CHAIN-TIME.)",
            valueName: "dir"))
    var filesTo: String?

    func validate() throws {
        guard lazyStreamAfter >= 0, lazyStreamAfter.isFinite else {
            throw ValidationError("--lazy-stream-after takes a number of seconds, 0 or more")
        }
        if lazyStreamAfter > 0 && !lazy { throw ValidationError("--lazy-stream-after goes with --lazy") }
    }

    func run() throws {
        if let core { return try writeCore(core) }
        if let filesTo { return try writeFiles(to: filesTo) }
        if plan { return try printPlan() }
        guard check else { return try restart() }
        try reportingErrors("ld-chpox") {
            let store = try storeOptions.openToRead()
            let name = try store.chainName(name)
            let (entry, manifest, map) = try store.rebuild(chain: name, generation: generation)
            let target = entry.generation
            // What a restart would refuse, said now (for generations cpx took: others hold
            // pages only, or metadata of their own).
            let image = try? ProcessImage(decoding: manifest.metadata, generation: target)
            if let image {
                try Restorer(image: image, map: map, store: store, generation: target).check(
                    otherControlGroups: otherCgroups, requireSamePid: requireSamePid)
            }
            let notRestored = image.map { Preflight(image: $0, generation: target).notRestored } ?? []
            var bytes = 0
            try store.reader().readPages(map) { _, page in bytes += page.count }
            print(
                json
                    ? RestartReports.checkJSON(
                        store: store.location, chain: name, generation: target, pages: map.pages.count, bytes: bytes,
                        processImage: image != nil, notRestored: notRestored)
                    : RestartReports.checkText(
                        chain: name, generation: target, pages: map.pages.count, bytes: bytes,
                        notRestored: notRestored)
            )
        }
    }

    func printPlan() throws {
        try reportingErrors("ld-chpox") {
            let store = try storeOptions.openToRead()
            var restorer = try Restorer.load(store, chain: try store.chainName(name), generation: generation)
            if tcpClose { restorer = restorer.closingConnections() }
            for line in restorer.plan(lazy: lazy).steps { print(line) }
        }
    }

    func writeFiles(to root: String) throws {
        try reportingErrors("ld-chpox") {
            let store = try storeOptions.openToRead()
            let name = try store.chainName(name)
            let restorer = try Restorer.load(store, chain: name, generation: generation)
            let files = RestoredFiles(
                image: restorer.image, map: restorer.map, generation: restorer.generation, chain: name)
            let written = try files.restore(store: store, authority: restorer.authority, root: root)
            for file in files.recorded {
                let put = written.contains { $0.path.hasSuffix(file.path) }
                print("\(file.path): \(file.size) bytes\(put ? "" : " (already there)")")
            }
            for line in files.notKeptNotices { print("not kept: \(line)") }
        }
    }

    func writeCore(_ path: String) throws {
        try reportingErrors("ld-chpox") {
            let store = try storeOptions.openToRead()
            let name = try store.chainName(name)
            let restorer = try Restorer.load(store, chain: name, generation: generation)
            let summary = try CoreFile.write(restorer.image, map: restorer.map, store: restorer.store, to: path)
            print(
                json
                    ? RestartReports.coreJSON(
                        summary, chain: name, generation: restorer.generation, file: path,
                        executable: restorer.image.executable)
                    : "\(name) generation \(restorer.generation): wrote \(path) "
                        + "(\(summary.threads) threads, \(summary.segments) mappings, "
                        + "\(summary.storedPages) stored pages, \(summary.filePages) from files); "
                        + "open it with: gdb \(restorer.image.executable) \(path)"
            )
        }
    }

    func restart() throws {
        var status: Int32 = 0
        try reportingErrors("ld-chpox") {
            let store = try storeOptions.openToRead()
            let name = try store.chainName(name)
            var restorer = try Restorer.load(store, chain: name, generation: generation)
            if tcpClose { restorer = restorer.closingConnections() }
            var options = Restorer.Options()
            options.requireSamePid = requireSamePid
            options.otherControlGroups = otherCgroups
            options.lazy = lazy
            options.lazyStreamDelay = lazyStreamAfter
            let outcome = try restorer.restart(options: options)
            if timings {
                FileHandle.standardError.write(
                    Data("ld-chpox: \(RestartReports.timingsText(outcome.timings))\n".utf8))
            }
            let notice =
                outcome.namespaceInit.map {
                    " (pid \(outcome.originalPid) in a new PID namespace, whose init is pid \($0))"
                } ?? (outcome.pid == outcome.originalPid ? "" : " (its pid \(outcome.originalPid) is taken: a new pid)")
            for line in outcome.notices { FileHandle.standardError.write(Data("ld-chpox: \(line)\n".utf8)) }
            FileHandle.standardError.write(
                Data(
                    ("ld-chpox: \(name) generation \(restorer.generation) restarted as pid \(outcome.pid)\(notice)"
                        + (outcome.processes.count > 1 ? " with its tree of \(outcome.processes.count) processes" : "")
                        + "\n").utf8))
            // A lazy restart's server fills the memory until every page is in; the pages touched
            // first are kept as a hint for the next lazy restart of the chain (where the store
            // is this user's to write).
            var lazyReport: LazyPageServer.Report?
            if let server = outcome.pageServer {
                let report = server.finish()
                lazyReport = report
                if report.failure == nil && !report.touchedFirst.isEmpty {
                    try? store.recordTouchOrder(chain: name, pages: report.touchedFirst)
                }
                FileHandle.standardError.write(
                    Data("ld-chpox: \(RestartReports.lazyText(report, pid: outcome.pid))\n".utf8))
            }
            // With --wait the process shares this stdout: the document comes first, its output
            // after (a lazy restart's once every page is in).
            if json {
                print(
                    RestartReports.restartJSON(outcome, chain: name, generation: restorer.generation, lazy: lazyReport))
                fflush(nil)  // every stream: the document must precede the process's output
            }
            if lazyReport?.failure != nil { throw ExitCode(1) }
            if wait {
                switch try outcome.child.wait() {
                case .exited(let code): status = code
                case .signalled(let signal): status = 128 + signal
                }
            } else if !json {
                print(outcome.pid)
            }
        }
        if status != 0 { throw ExitCode(status) }
    }
}
