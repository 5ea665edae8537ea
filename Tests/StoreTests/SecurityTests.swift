import Foundation
import Store
import StoreTestSupport
import Testing

/// Stores hold memory images: 0700 directories, 0600 files, owner only, no symlinks followed.
@Suite(.serialized) struct SecurityTests {
    static func mode(_ path: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
    }

    @Test func everythingIsPrivate() throws {
        let temporary = TemporaryStore("modes")
        defer { temporary.cleanup() }
        let previous = umask(0o022)
        defer { umask(previous) }
        let store = try temporary.open()
        try writeChain(store, chain: "m", seed: 1, rounds: 3, pages: 32)
        _ = try store.collectGarbage(RetentionPolicy(keepLast: 2))
        #expect(try Self.mode(temporary.path) == 0o700)
        let entries = FileManager.default.enumerator(atPath: temporary.path)!.allObjects as! [String]
        #expect(entries.count > 10)
        for entry in entries {
            let path = "\(temporary.path)/\(entry)"
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            #expect(try Self.mode(path) == (isDirectory.boolValue ? 0o700 : 0o600), "\(entry)")
        }
    }

    @Test func aCreationCutShortIsFinishedByTheNextOpenAndNothingElseIsTaken() throws {
        // What a writer killed while it made the store leaves: some of its folders, the marker's
        // temporary copy in tmp/, no marker. The next open finishes the store (CrashTests' writer
        // killed that early on a loaded machine left every later writer refused).
        let temporary = TemporaryStore("cut-short")
        defer { temporary.cleanup() }
        let manager = FileManager.default
        try manager.createDirectory(
            atPath: temporary.path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        for name in ["packs", "index", "tmp"] {
            try manager.createDirectory(
                atPath: temporary.path + "/" + name, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
        }
        #expect(manager.createFile(atPath: temporary.path + "/tmp/chpox-store.4242.17", contents: Data([1, 2])))
        let store = try temporary.open()
        #expect(try store.verify().isClean)
        #expect(manager.fileExists(atPath: temporary.path + "/chpox-store"))
        #expect(try manager.contentsOfDirectory(atPath: temporary.path + "/tmp").isEmpty)

        // A folder with anything else in it is someone's: refused, untouched.
        let other = TemporaryStore("not-ours")
        defer { other.cleanup() }
        try manager.createDirectory(
            atPath: other.path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        try manager.createDirectory(
            atPath: other.path + "/packs", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        #expect(manager.createFile(atPath: other.path + "/packs/notes.txt", contents: Data("mine".utf8)))
        #expect { _ = try Store(at: other.path, create: true) } throws: { error in
            "\(error)".contains("no chpox-store marker")
        }
        #expect(manager.fileExists(atPath: other.path + "/packs/notes.txt"))
        #expect(!manager.fileExists(atPath: other.path + "/chpox-store"))
    }

    @Test func refusesASymlinkedStore() throws {
        let temporary = TemporaryStore("real")
        defer { temporary.cleanup() }
        _ = try temporary.open()
        let link = temporary.path + "-link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: temporary.path)
        defer { try? FileManager.default.removeItem(atPath: link) }
        #expect { _ = try Store(at: link) } throws: { error in
            guard case StoreError.unsafe(let path, _) = error else { return false }
            return path == link
        }
    }

    @Test func refusesSymlinksInsideTheStore() throws {
        let temporary = TemporaryStore("inner")
        let outside = TemporaryStore("outside")
        defer { temporary.cleanup(); outside.cleanup() }
        let store = try temporary.open()
        try writeChain(store, chain: "s", seed: 2, rounds: 2, pages: 16)
        // A manifest replaced by a symlink to a copy outside the store is not followed.
        let entry = try store.chain("s").entries[1]
        let manifest = "\(temporary.path)/manifests/\(entry.manifest.hex).gen"
        try FileManager.default.createDirectory(atPath: outside.path, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: manifest, toPath: outside.path + "/copy.gen")
        try FileManager.default.createSymbolicLink(atPath: manifest, withDestinationPath: outside.path + "/copy.gen")
        #expect(throws: StoreError.self) { _ = try store.manifest(entry.manifest) }
        #expect(try !store.verify().isClean)
        // A subdirectory replaced by a symlink makes the store refuse to open.
        try FileManager.default.moveItem(atPath: temporary.path + "/packs", toPath: outside.path + "/packs")
        try FileManager.default.createSymbolicLink(
            atPath: temporary.path + "/packs", withDestinationPath: outside.path + "/packs")
        #expect { _ = try Store(at: temporary.path) } throws: { error in
            guard case StoreError.unsafe(let path, _) = error else { return false }
            return path.hasSuffix("/packs")
        }
    }

    @Test func refusesAStoreOfAnotherUserOrOpenToOthers() throws {
        let temporary = TemporaryStore("owner")
        defer { temporary.cleanup() }
        _ = try temporary.open()
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: temporary.path)
        #expect { _ = try Store(at: temporary.path) } throws: { error in
            guard case StoreError.unsafe(_, let reason) = error else { return false }
            return reason.contains("open to other users")
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: temporary.path)
        _ = try Store(at: temporary.path)
        guard getuid() == 0 else { return }  // only root can give a directory away
        #expect(chown(temporary.path, 65534, 65534) == 0)
        #expect { _ = try Store(at: temporary.path) } throws: { error in
            guard case StoreError.unsafe(_, let reason) = error else { return false }
            return reason.contains("owned by uid 65534")
        }
    }

    @Test func refusesADirectoryThatIsNotAStore() throws {
        let temporary = TemporaryStore("foreign")
        defer { temporary.cleanup() }
        try FileManager.default.createDirectory(
            atPath: temporary.path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        _ = FileManager.default.createFile(atPath: temporary.path + "/notes.txt", contents: Data("hi".utf8))
        #expect { _ = try Store(at: temporary.path, create: true) } throws: { error in
            guard case StoreError.notAStore = error else { return false }
            return true
        }
        #expect { _ = try Store(at: temporary.path + "/missing") } throws: { error in
            guard case StoreError.notAStore = error else { return false }
            return true
        }
    }

    /// The store's path is walked one component at a time: a symlink on the way is followed
    /// when it is the caller's or root's, never when another user owns it (root's store would
    /// be built in their directory).
    @Test(.enabled(if: getuid() == 0, "only root can make a symlink another user owns"))
    func followsNoOtherUsersSymlinkOnTheWay() throws {
        let base = TemporaryStore("walk")
        defer { base.cleanup() }
        try FileManager.default.createDirectory(
            atPath: base.path + "/theirs", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        #expect(chown(base.path + "/theirs", 65534, 65534) == 0)
        try FileManager.default.createSymbolicLink(atPath: base.path + "/their-link", withDestinationPath: "theirs")
        #expect(lchown(base.path + "/their-link", 65534, 65534) == 0)
        #expect { _ = try Store(at: base.path + "/their-link/store", create: true) } throws: { error in
            guard case StoreError.unsafe(let path, let reason) = error else { return false }
            return path == base.path + "/their-link" && reason.contains("symlink owned by uid 65534")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: base.path + "/theirs").isEmpty)

        // Root's own symlink, and `..` and `.` on the way, lead where they say.
        try FileManager.default.createSymbolicLink(atPath: base.path + "/mine", withDestinationPath: "theirs/../own")
        let store = try Store(at: base.path + "/mine/./deeper/../store", create: true)
        try writeChain(store, chain: "w", seed: 3, rounds: 1, pages: 4)
        #expect(FileManager.default.fileExists(atPath: base.path + "/own/store/chains/w.chain"))
    }

    /// A store a command made and stored nothing in is taken back, with the parents it made;
    /// a directory that was there before stays, and a store with a generation is kept.
    @Test func aStoreNothingWasStoredInIsTakenBack() throws {
        let base = TemporaryStore("unused")
        defer { base.cleanup() }
        let made = try Store(at: base.path + "/a/b/store", create: true)
        #expect(FileManager.default.fileExists(atPath: base.path + "/a/b/store/chpox-store"))
        #expect(made.discardIfUnused())
        #expect(!FileManager.default.fileExists(atPath: base.path))

        try FileManager.default.createDirectory(
            atPath: base.path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let existing = try Store(at: base.path, create: true)
        #expect(existing.discardIfUnused())
        #expect(try FileManager.default.contentsOfDirectory(atPath: base.path).isEmpty)

        let used = try Store(at: base.path + "/used", create: true)
        try writeChain(used, chain: "u", seed: 4, rounds: 1, pages: 4)
        #expect(!used.discardIfUnused())
        #expect(try Store(at: base.path + "/used").chainNames() == ["u"])
        // Opened again, it is not this open's to take back.
        #expect(!(try Store(at: base.path + "/used", create: true)).discardIfUnused())
    }
}
