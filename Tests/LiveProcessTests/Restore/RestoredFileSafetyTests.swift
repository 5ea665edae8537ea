import Foundation
import Incremental
import Store
import Syscall
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// What a restart promises of the files a generation kept (`RestoredFiles`): a restart that
    /// fails after putting some back leaves every file exactly as it found it, and root restarting
    /// a store another user owns puts back only that user's files, refusing before it touches any.
    @Suite struct RestoredFileSafetyTests {
        static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

        /// One entry of a directory as a restart must leave it: a file's inode, mode, owner,
        /// modification time and bytes; a folder's inode, mode and owner (its own times change
        /// as names are made and removed in it, which a restart does not promise to undo).
        struct Found: Equatable, CustomStringConvertible {
            var inode: UInt64
            var mode: UInt32
            var owner: UInt32
            var modified: [Int]
            var bytes: [UInt8]

            var description: String {
                "inode \(inode) mode \(String(mode, radix: 8)) uid \(owner) modified \(modified) \(bytes.count) bytes"
            }
        }

        /// Everything under `directory` but its store, by relative path.
        static func state(of directory: String) -> [String: Found] {
            var found: [String: Found] = [:]
            let names = (FileManager.default.enumerator(atPath: directory)?.allObjects as? [String]) ?? []
            for name in names where name != "store" && !name.hasPrefix("store/") {
                guard let status = try? FileDescriptor.currentDirectory.status(of: directory + "/" + name) else {
                    continue
                }
                let file = status.isRegularFile
                found[name] = Found(
                    inode: status.inode, mode: status.mode, owner: status.owner,
                    modified: file ? [status.modified.tv_sec, status.modified.tv_nsec] : [],
                    bytes: file ? bytes(directory + "/" + name) : [])
            }
            return found
        }

        /// What differs between two `state`s, for a failed expectation's message.
        static func differences(_ before: [String: Found], _ after: [String: Found]) -> String {
            Set(before.keys).union(after.keys).sorted().filter { before[$0] != after[$0] }.map {
                "\($0): \(before[$0].map(\.description) ?? "absent") -> \(after[$0].map(\.description) ?? "absent")"
            }.joined(separator: "; ")
        }

        static func bytes(_ path: String) -> [UInt8] {
            FileManager.default.contents(atPath: path).map { [UInt8]($0) } ?? []
        }

        /// The files here are text: compared as such, a failure reads.
        static func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

        static func text(_ path: String) -> String { text(bytes(path)) }

        /// The paths generation `generation` of `chain` records the contents of, in the order a
        /// restart puts them back.
        static func recorded(store: String, chain: String, generation: UInt64) throws -> [ProcessImage.RecordedFile] {
            let restorer = try Restorer.load(try Store(at: store), chain: chain, generation: generation)
            return RestoredFiles(image: restorer.image, map: restorer.map, generation: generation, chain: chain)
                .recorded
        }

        /// A process holding a listening TCP socket and three files open for writing, one in
        /// each of three folders; each command line rewrites all three with its text ("ping"
        /// only answers).
        static let threeFiles = """
            import os, socket, sys
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            fds = [os.open(f"{sys.argv[1]}/{n}/file", os.O_RDWR | os.O_CREAT, 0o640) for n in ("one", "two", "three")]
            print("ready", listener.getsockname()[1], flush=True)
            for line in sys.stdin:
                tag = line.strip()
                if tag == "ping":
                    print("pong", flush=True)
                    continue
                for k, fd in enumerate(fds):
                    data = f"{tag} {k} ".encode() * (500 + 300 * k)
                    os.pwrite(fd, data, 0)
                    os.ftruncate(fd, len(data))
                print("written", tag, flush=True)
            """

        /// A generation of `threeFiles` whose files then changed: the first it puts back is the
        /// process's own (rewritten in place), the second was replaced by another inode, the
        /// third is the process's own. Returns the files in the order the restart puts them
        /// back, their bytes at the generation, and the port the process listened on.
        static func checkpointedThreeFiles(
            in directory: String, store: String
        ) throws -> (paths: [String], atGeneration: [String: [UInt8]], port: UInt16) {
            for folder in ["one", "two", "three"] {
                try FileManager.default.createDirectory(
                    atPath: directory + "/" + folder, withIntermediateDirectories: true)
            }
            let original = try WorkloadProcess(
                executable: "/usr/bin/python3", arguments: ["-c", threeFiles, directory])
            defer { RestartTests.end(original) }
            let ready = try original.line()
            let port = try #require(ready.split(separator: " ").last.flatMap { UInt16($0) }, "\(ready)")
            #expect(try original.send("generation") == "written generation")
            try RestartTests.checkpoint(original.pid, store: store, name: "u")
            let paths = try recorded(store: store, chain: "u", generation: 0).map(\.path)
            #expect(paths.sorted() == ["one", "three", "two"].map { directory + "/" + $0 + "/file" }.sorted())
            let atGeneration = Dictionary(uniqueKeysWithValues: paths.map { ($0, bytes($0)) })
            #expect(try original.send("later") == "written later")
            RestartTests.end(original)
            let replacement = paths[1] + ".new"
            #expect(FileManager.default.createFile(atPath: replacement, contents: Data("replaced\n".utf8)))
            #expect(rename(replacement, paths[1]) == 0)
            return (paths, atGeneration, port)
        }

        /// The restart that must now succeed: every file is as at the generation, what was
        /// there is kept beside it, and the process runs.
        static func expectRestartPutsBack(_ paths: [String], _ atGeneration: [String: [UInt8]], store: String) throws {
            let found = Dictionary(uniqueKeysWithValues: paths.map { ($0, bytes($0)) })
            let restarted = try RestartTests.restart(store: store, name: "u", generation: 0)
            defer {
                if let pid = RestartTests.child(of: restarted.pid) { kill(pid, SIGKILL) }
                _ = try? restarted.child.wait()
            }
            #expect(try restarted.send("ping") == "pong")
            for path in paths {
                #expect(text(path) == text(atGeneration[path] ?? []), "\(path) is as at the generation")
                let folder = (path as NSString).deletingLastPathComponent
                let kept = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
                    .filter { $0.hasPrefix("file.chpox-") }.map { text(folder + "/" + $0) }
                #expect(kept == [text(found[path] ?? [])], "\(path): the file that was there is kept beside it")
            }
        }

        /// The third file's folder is a regular file now: the restart fails putting it back,
        /// after the first two were (one rewritten in place, one put in place of another
        /// inode), and leaves all as it found them: same inodes, bytes, modes and times, no
        /// copy beside them, no half-written file.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aRestartFailingAtAFileLeavesEveryFileAsItFoundIt() throws {
            let directory = try RestartTests.scratch("files-undo")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let (paths, atGeneration, _) = try Self.checkpointedThreeFiles(in: directory, store: store)
            let folder = (paths[2] as NSString).deletingLastPathComponent
            #expect(rename(folder, folder + ".away") == 0)
            #expect(FileManager.default.createFile(atPath: folder, contents: Data("not a folder\n".utf8)))
            let before = Self.state(of: directory)
            let run = try TestTools.run(
                "/usr/bin/timeout",
                ["-s", "KILL", "60", TestTools.path("ld-chpox"), "--store", store, "--name", "u", "--generation", "0"])
            #expect(run.status == 1, "\(run.output) \(run.errors)")
            #expect(run.errors.contains("cannot put back \(paths[2]) as it was"), "\(run.errors)")
            let after = Self.state(of: directory)
            #expect(after == before, "\(Self.differences(before, after))")

            try FileManager.default.removeItem(atPath: folder)
            #expect(rename(folder + ".away", folder) == 0)
            try Self.expectRestartPutsBack(paths, atGeneration, store: store)
        }

        /// The port the process listened on is taken: the restart fails making its socket, after
        /// every file was put back, and puts every one back as it found it.
        @Test(.enabled(if: python, "python3 is not installed"), .timeLimit(.minutes(2)))
        func aRestartFailingAfterTheFilesLeavesEveryFileAsItFoundIt() throws {
            let directory = try RestartTests.scratch("files-undo-late")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store"
            let (paths, atGeneration, port) = try Self.checkpointedThreeFiles(in: directory, store: store)
            let taker = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            #expect(taker >= 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(taker, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            #expect(bound == 0, "port \(port): errno \(errno)")
            #expect(listen(taker, 1) == 0)
            let before = Self.state(of: directory)
            let run = try TestTools.run(
                "/usr/bin/timeout",
                ["-s", "KILL", "60", TestTools.path("ld-chpox"), "--store", store, "--name", "u", "--generation", "0"])
            close(taker)
            #expect(run.status == 1, "\(run.output) \(run.errors)")
            #expect(run.errors.contains("\(port)"), "the failure is the port's: \(run.errors)")
            let after = Self.state(of: directory)
            #expect(after == before, "\(Self.differences(before, after))")

            try Self.expectRestartPutsBack(paths, atGeneration, store: store)
        }

        /// Root restarting a store uid 65534 owns: a file that was root's at the generation, or of
        /// a group the user is not in, or that is root's now, refuses the restart, naming it and
        /// why, before any file is touched; the user's own file (set-user-id) is put back still
        /// theirs, in place or in place of another inode, and the version kept beside it is
        /// theirs too, never root's.
        @Test(
            .enabled(if: getuid() == 0 && python, "needs root and python3"),
            .timeLimit(.minutes(2)))
        func rootPutsBackOnlyTheStoreOwnersFiles() throws {
            let directory = try RestartTests.scratch("files-root")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let user: UInt32 = 65534
            #expect(chown(directory, user, user) == 0)
            #expect(chmod(directory, 0o755) == 0)
            let store = directory + "/store"
            let rootFile = directory + "/theirs", userFile = directory + "/mine"
            // A write by another than root clears the set-user-id bit: set again after each.
            let script = """
                import os, sys
                opened = os.open(sys.argv[1] + "/theirs", os.O_RDWR | os.O_CREAT, 0o666)
                theirs = os.dup2(opened, 50)  # after the user's file, whether by descriptor or by path
                os.close(opened)
                os.fchmod(theirs, 0o666)
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                mine = os.open(sys.argv[1] + "/mine", os.O_RDWR | os.O_CREAT, 0o644)
                print("ready", flush=True)
                for line in sys.stdin:
                    tag = line.strip()
                    if tag == "close":
                        os.close(theirs)
                        theirs = None
                        print("closed", flush=True)
                        continue
                    if tag == "ping":
                        print("pong", flush=True)
                        continue
                    for fd in (theirs, mine):
                        if fd is not None:
                            data = f"{tag} ".encode() * 700
                            os.pwrite(fd, data, 0)
                            os.ftruncate(fd, len(data))
                    os.fchmod(mine, 0o4755)
                    print("written", tag, flush=True)
                """
            let original = try WorkloadProcess(executable: "/usr/bin/python3", arguments: ["-c", script, directory])
            defer { RestartTests.end(original) }
            #expect(try original.line() == "ready")
            #expect(try original.send("zero") == "written zero")
            try RestartTests.checkpoint(original.pid, store: store, name: "r")
            #expect(try original.send("close") == "closed")
            #expect(try original.send("one") == "written one")
            try RestartTests.checkpoint(original.pid, store: store, name: "r")
            let atOne = Self.bytes(userFile)
            #expect(chown(userFile, user, 0) == 0)
            try RestartTests.checkpoint(original.pid, store: store, name: "r")
            #expect(chown(userFile, user, user) == 0)
            #expect(try original.send("later") == "written later")
            RestartTests.end(original)
            let recorded = try (0...2).map { try Self.recorded(store: store, chain: "r", generation: $0) }
            // The user's file comes first: root's refuses the restart before it is put back.
            #expect(recorded[0].map { "\($0.path) \($0.owner)" } == ["\(userFile) \(user)", "\(rootFile) 0"])
            #expect(
                recorded[1].map { "\($0.path) \($0.owner) \($0.group) \(String($0.permissions, radix: 8))" }
                    == ["\(userFile) \(user) \(user) 4755"])
            #expect(recorded[2].map { "\($0.path) \($0.group)" } == ["\(userFile) 0"])
            #expect(try TestTools.run("/bin/sh", ["-c", "chown -R \(user):\(user) \(store)"]).status == 0)

            func refused(generation: Int) throws -> String {
                let before = Self.state(of: directory)
                let run = try TestTools.run(
                    "/usr/bin/timeout",
                    [
                        "-s", "KILL", "60", TestTools.path("ld-chpox"), "--store", store, "--name", "r",
                        "--generation", "\(generation)",
                    ])
                #expect(run.status == 1, "generation \(generation): \(run.output) \(run.errors)")
                let after = Self.state(of: directory)
                #expect(after == before, "generation \(generation): \(Self.differences(before, after))")
                return run.errors
            }
            let rule = "not uid \(user)"
            let wasRoots = try refused(generation: 0)
            #expect(wasRoots.contains("\(rootFile) was uid 0's at generation 0, \(rule)"), "\(wasRoots)")
            #expect(wasRoots.contains("root puts back only that user's files from it"), "\(wasRoots)")
            let wasRootGroups = try refused(generation: 2)
            #expect(wasRootGroups.contains("\(userFile) was group 0's at generation 2, which uid \(user)"))

            #expect(chown(userFile, 0, 0) == 0)
            let isRoots = try refused(generation: 1)
            #expect(isRoots.contains("\(userFile) is uid 0's now, \(rule)"), "\(isRoots)")
            #expect(chown(userFile, user, user) == 0)
            #expect(chmod(userFile, 0o4755) == 0)

            /// Restarts generation 1 and checks the user's file and the one kept beside it.
            func restartPutsBackTheUsersFile(inPlace: Bool) throws {
                let before = Self.state(of: directory)
                let found = try #require(before["mine"])
                let restarted = try RestartTests.restart(store: store, name: "r", generation: 1)
                defer {
                    if let pid = RestartTests.child(of: restarted.pid) { kill(pid, SIGKILL) }
                    _ = try? restarted.child.wait()
                }
                #expect(try restarted.send("ping") == "pong")
                let after = Self.state(of: directory)
                let now = try #require(after["mine"])
                #expect(Self.text(now.bytes) == Self.text(atOne), "the user's file is as at generation 1")
                #expect(inPlace ? now.inode == found.inode : now.inode != found.inode)
                let status = try FileDescriptor.currentDirectory.status(of: userFile)
                #expect(
                    "\(status.owner) \(status.group) \(String(status.permissions, radix: 8))" == "\(user) \(user) 4755")
                let kept = after.keys.filter { $0.hasPrefix("mine.chpox-") && before[$0] == nil }
                #expect(kept.count == 1)
                for name in kept {
                    let copy = try FileDescriptor.currentDirectory.status(of: directory + "/" + name)
                    #expect(Self.text(after[name]?.bytes ?? []) == Self.text(found.bytes), "what was there is kept")
                    #expect(
                        "\(copy.owner) \(copy.group) \(String(copy.permissions, radix: 8))"
                            == "\(found.owner) \(user) \(String(found.mode & 0o7777, radix: 8))", "\(name)")
                    if !inPlace { #expect(copy.inode == found.inode, "kept under a second name") }
                }
                #expect(after["theirs"] == before["theirs"], "root's file is not touched")
            }
            try restartPutsBackTheUsersFile(inPlace: true)

            // Another inode in its place, the user's: put in place of it.
            let replacement = userFile + ".new"
            #expect(FileManager.default.createFile(atPath: replacement, contents: Data("replaced\n".utf8)))
            #expect(chown(replacement, user, user) == 0)
            #expect(chmod(replacement, 0o644) == 0)
            #expect(rename(replacement, userFile) == 0)
            try restartPutsBackTheUsersFile(inPlace: false)
        }
    }
}
