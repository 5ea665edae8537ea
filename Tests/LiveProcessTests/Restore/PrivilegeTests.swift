import Foundation
import Incremental
@testable import Store
import Syscall
import TestTools
import TrackerTestSupport
import Testing
import Tracee

extension LiveProcess {
    /// Root restarting an ordinary user's image gives the process nothing that user could not
    /// reach: every path is opened with the user's filesystem ids and groups, and a symlink
    /// planted where the image had a file is not followed (threat model: docs/threat-model.md).
    @Suite struct PrivilegeTests {
        static let user: UInt32 = 65534  // nobody
        static var canRun: Bool { getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") }

        /// A Python process of `user` in `directory` holding home/a.log open for appending and
        /// home/b.txt for reading.
        static func userProcess(in directory: String) throws -> WorkloadProcess {
            try WorkloadProcess(
                executable: "/usr/bin/setpriv",
                arguments: [
                    "--reuid", "\(user)", "--regid", "\(user)", "--groups", "100", "/bin/sh", "-c",
                    "cd \"$0\" && exec /usr/bin/python3 -c \"$1\"", directory,
                    """
                    import os, sys
                    log = open("home/a.log", "a", buffering=1)
                    text = open("home/b.txt")
                    print("ready", flush=True)
                    for line in sys.stdin:
                        if line.strip() == "grow":
                            log.write("more\\n")
                            print("grown", flush=True)
                        else:
                            log.write("written by the restarted process\\n")
                            text.seek(0)
                            print("read", repr(text.read()), os.getuid(), flush=True)
                    """,
                ])
        }

        static func write(_ text: String, to path: String, owner: UInt32, mode: mode_t) throws {
            #expect(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
            #expect(chown(path, owner, owner) == 0)
            #expect(chmod(path, mode) == 0)
        }

        static func contents(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

        @Test(.enabled(if: canRun, "needs root and setpriv to run a process as another user"), .timeLimit(.minutes(2)))
        func plantedSymlinksLeadNowhere() throws {
            let directory = "/tmp/chpox-privilege-\(getpid())"
            try? FileManager.default.removeItem(atPath: directory)
            try FileManager.default.createDirectory(
                atPath: directory + "/home", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            defer { try? FileManager.default.removeItem(atPath: directory) }
            #expect(chown(directory + "/home", Self.user, Self.user) == 0)
            try Self.write("log\n", to: directory + "/home/a.log", owner: Self.user, mode: 0o644)
            try Self.write("user text", to: directory + "/home/b.txt", owner: Self.user, mode: 0o644)
            // Root's: a system file anyone may read, and a secret only root may.
            try Self.write("system\n", to: directory + "/system", owner: 0, mode: 0o644)
            try Self.write("secret", to: directory + "/secret", owner: 0, mode: 0o600)
            let store = directory + "/store"

            let original = try Self.userProcess(in: directory)
            #expect(try original.line() == "ready")
            try RestartTests.checkpoint(original.pid, store: store, name: "user")
            #expect(try original.send("grow") == "grown")
            RestartTests.end(original)

            // Control: with the user's files in place, root's restart runs as the user and cuts
            // the log back.
            let control = try RestartTests.restart(store: store, name: "user", generation: 0)
            #expect(try control.send("go") == "read 'user text' \(Self.user)")
            #expect(try Self.contents(directory + "/home/a.log") == "log\nwritten by the restarted process\n")
            // Looked at before ld-chpox ends: a lazy restart's (CHPOX_TEST_LAZY) ends with it.
            let restarted = RestartTests.started(since: [], running: ["python3"]).first {
                (try? ProcFS.status($0).userIDs.first) == Self.user
            }
            defer { RestartTests.end(control) }
            if let restarted {
                // The user's ids and its one supplementary group, nothing of root's.
                let status = try ProcFS.status(restarted)
                #expect(status.userIDs == [Self.user, Self.user, Self.user, Self.user])
                #expect(status.groups == [100])
                kill(restarted, SIGKILL)
            }
            #expect(restarted != nil)
            usleep(200_000)

            // The user swaps its files for symlinks to root's.
            unlink(directory + "/home/a.log")
            unlink(directory + "/home/b.txt")
            try FileManager.default.createSymbolicLink(
                atPath: directory + "/home/a.log", withDestinationPath: "../system")
            try FileManager.default.createSymbolicLink(
                atPath: directory + "/home/b.txt", withDestinationPath: "../secret")
            var run = try TestTools.run("ld-chpox", ["--store", store, "--name", "user"])
            #expect(run.status != 0, "\(run.output)")
            #expect(run.errors.contains("is a symbolic link now"), "\(run.errors)")
            #expect(try Self.contents(directory + "/system") == "system\n")

            // ... or its directory for a symlink to root's: reached with the user's access, the
            // secret is out of reach.
            try FileManager.default.moveItem(atPath: directory + "/home", toPath: directory + "/home.old")
            try FileManager.default.createDirectory(
                atPath: directory + "/root-only", withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o755])
            try Self.write("root log\n", to: directory + "/root-only/a.log", owner: 0, mode: 0o644)
            try Self.write("secret", to: directory + "/root-only/b.txt", owner: 0, mode: 0o600)
            try FileManager.default.createSymbolicLink(atPath: directory + "/home", withDestinationPath: "root-only")
            run = try TestTools.run("ld-chpox", ["--store", store, "--name", "user"])
            #expect(run.status != 0, "\(run.output)")
            #expect(run.errors.contains("ermission denied"), "\(run.errors)")
            #expect(try Self.contents(directory + "/root-only/a.log") == "root log\n")
        }

        /// Writes generation `generation` of `chain` again with its image's credentials changed
        /// by `edit`: what anyone who can write the store can do (the manifest is JSON behind a
        /// hash anyone can recompute).
        static func forge(
            _ store: Store, chain: String, generation: UInt64, _ edit: (inout ProcessImage.Credentials) -> Void
        ) throws {
            var manifest = try store.manifest(chain: chain, generation: generation)
            var image = try ProcessImage(decoding: manifest.metadata, generation: generation)
            edit(&image.credentials)
            manifest.metadata = try image.encoded()
            let bytes = manifest.encoded()
            let id = bytes.withUnsafeBytes { ChunkID(hashing: $0) }
            try store.directory.publish(
                bytes, as: GenerationManifest.fileName(id), in: store.directory.manifests, dirName: "manifests")
            var edited = try store.chain(chain)
            edited.entries[edited.entries.firstIndex { $0.generation == generation }!].manifest = id
            try store.publish(edited)
        }

        /// An image is obeyed only as far as its store's owner could grant: root restarts a
        /// store the user owns read-only and as that user; an image in it edited to ask for
        /// root, or for a group the user is not in, is refused, and verify says so.
        @Test(.enabled(if: canRun, "needs root and setpriv to run a process as another user"), .timeLimit(.minutes(2)))
        func forgedIdsAreRefused() throws {
            let directory = "/tmp/chpox-forged-\(getpid())"
            try? FileManager.default.removeItem(atPath: directory)
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let (honest, forged) = (directory + "/honest", directory + "/forged")
            let original = try WorkloadProcess(
                executable: "/usr/bin/setpriv",
                arguments: [
                    "--reuid", "\(Self.user)", "--regid", "\(Self.user)", "--clear-groups", "/usr/bin/python3", "-c",
                    """
                    import os, sys
                    print("ready", flush=True)
                    for line in sys.stdin:
                        print("ids", os.getresuid(), os.getgroups(), flush=True)
                    """,
                ])
            #expect(try original.line() == "ready")
            try RestartTests.checkpoint(original.pid, store: honest, name: "uid")
            RestartTests.end(original)
            #expect(try TestTools.run("/bin/sh", ["-c", "cp -a \(honest) \(forged)"]).status == 0)
            do {
                let store = try Store(at: forged)
                try Self.forge(store, chain: "uid", generation: 0) { ids in
                    ids.user = .init(real: 0, effective: 0, saved: 0, filesystem: 0)
                    ids.groups = []
                }
                try store.beginGeneration(chain: "group").commit(
                    metadata: try store.manifest(chain: "uid", generation: 0).metadata)
                try Self.forge(store, chain: "group", generation: 0) { ids in
                    ids.user = .init(real: Self.user, effective: Self.user, saved: Self.user, filesystem: Self.user)
                    ids.groups = [0]
                }
            }
            // The user writes both stores now: only the user could have put those ids there.
            #expect(
                try TestTools.run("/bin/sh", ["-c", "chown -R \(Self.user):\(Self.user) \(honest) \(forged)"]).status
                    == 0)

            // Control: root restarts the user's own store, read-only, as the user.
            let control = try RestartTests.restart(store: honest, name: "uid", generation: 0)
            let uid = Self.user
            #expect(try control.send("go") == "ids (\(uid), \(uid), \(uid)) []")
            RestartTests.end(control)
            if let restarted = RestartTests.started(since: [], running: ["python3"]).first(where: {
                (try? ProcFS.status($0).userIDs.first) == Self.user
            }) {
                kill(restarted, SIGKILL)
            }
            usleep(200_000)
            #expect(
                try TestTools.run("/bin/sh", ["-c", "test -z \"$(find \(honest) ! -user \(Self.user))\""]).status == 0,
                "root wrote nothing")
            #expect(try TestTools.run("dumpinfo", ["--store", honest, "--verify"]).status == 0)

            for (chain, asked) in [("uid", "asks to run as uid 0"), ("group", "asks for group 0")] {
                let run = try TestTools.run("ld-chpox", ["--store", forged, "--name", chain])
                #expect(run.status != 0, "\(run.output)")
                #expect(run.errors.contains(asked), "\(run.errors)")
                #expect(
                    run.errors.contains("store is uid \(Self.user) (nobody)'s") || chain == "group", "\(run.errors)")
            }
            let verify = try TestTools.run("dumpinfo", ["--store", forged, "--verify", "--deep"])
            #expect(verify.status != 0)
            #expect(
                verify.output.contains("generation 0 of chain uid: its image asks to run as uid 0"), "\(verify.output)")
            #expect(verify.output.contains("generation 0 of chain group"), "\(verify.output)")
        }

        /// A process root started opens a file only root may read, then drops to another user
        /// (setresuid): its descriptor still reads the file. Restarted by root from a store only
        /// root can write (the image is root's own), the file is opened again with root's
        /// access and the process runs as the user, reading it. The same image in a store the
        /// user can write is the user's word alone: the restart opens with the user's access
        /// and is refused, saying which uid could not open which file and why.
        @Test(.enabled(if: canRun, "needs root and setpriv to run a process as another user"), .timeLimit(.minutes(2)))
        func filesOpenedBeforeDroppingIds() throws {
            let directory = "/tmp/chpox-dropped-\(getpid())"
            try? FileManager.default.removeItem(atPath: directory)
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let secret = directory + "/secret"
            try Self.write("root only", to: secret, owner: 0, mode: 0o600)
            let uid = Self.user
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3",
                arguments: [
                    "-c",
                    """
                    import os, sys
                    os.chdir(sys.argv[1])
                    secret = open("secret")
                    os.setgroups([])
                    os.setresgid(\(uid), \(uid), \(uid))
                    os.setresuid(\(uid), \(uid), \(uid))
                    try:
                        open("secret")
                        print("opened again", flush=True)
                    except PermissionError:
                        print("ready", flush=True)
                    for line in sys.stdin:
                        secret.seek(0)
                        print("read", repr(secret.read()), os.getresuid(), flush=True)
                    """,
                    directory,
                ])
            #expect(try original.line() == "ready")
            #expect(try original.send("go") == "read 'root only' (\(uid), \(uid), \(uid))")
            let rootStore = directory + "/store", userStore = directory + "/user-store"
            try RestartTests.checkpoint(original.pid, store: rootStore, name: "dropped")
            RestartTests.end(original)

            // Root's own image: the file is opened with root's access, the process is the user's.
            let restarted = try RestartTests.restart(store: rootStore, name: "dropped", generation: 0)
            #expect(try restarted.send("go") == "read 'root only' (\(uid), \(uid), \(uid))")
            RestartTests.end(restarted)
            if let process = RestartTests.started(since: [], running: ["python3"]).first(where: {
                (try? ProcFS.status($0).userIDs.first) == uid
            }) {
                kill(process, SIGKILL)
            }
            usleep(200_000)

            // The same image in a store the user can write: refused, the secret out of reach.
            #expect(try TestTools.run("/bin/sh", ["-c", "cp -a \(rootStore) \(userStore)"]).status == 0)
            #expect(try TestTools.run("/bin/sh", ["-c", "chown -R \(uid):\(uid) \(userStore)"]).status == 0)
            let run = try TestTools.run("ld-chpox", ["--store", userStore, "--name", "dropped"])
            #expect(run.status != 0, "\(run.output)")
            #expect(run.errors.contains("uid \(uid) may not open \(secret)"), "\(run.errors)")
            #expect(run.errors.contains("opened it under other credentials"), "\(run.errors)")
            #expect(run.errors.contains("store is uid \(uid)'s"), "\(run.errors)")
            #expect(
                RestartTests.started(since: [], running: ["python3"]).allSatisfy {
                    ProcFS.descriptorTarget($0, 3) != secret
                })
        }
    }
}
