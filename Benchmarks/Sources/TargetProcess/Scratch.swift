#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store

/// Scratch stores: `$CHPOX_BENCH_DIR` if set, else a fresh directory under /tmp, removed at exit.
public enum Scratch {
    public static let root: String = {
        let parent = ProcessInfo.processInfo.environment["CHPOX_BENCH_DIR"] ?? "/tmp"
        var template = Array("\(parent)/chpox-bench-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            fatalError("cannot make a scratch directory under \(parent): \(String(cString: strerror(errno)))")
        }
        let path = String(cString: made)
        rootMade = true
        atexit { if Scratch.rootMade { try? FileManager.default.removeItem(atPath: Scratch.root) } }
        return path
    }()
    nonisolated(unsafe) private static var rootMade = false

    public static func freshStore(_ name: String) throws -> Store {
        let path = "\(root)/\(name)"
        try? FileManager.default.removeItem(atPath: path)
        return try Store(at: path, create: true)
    }

    public static func remove(_ store: Store) {
        try? FileManager.default.removeItem(atPath: store.path)
    }

    public static func count(in directory: String) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: directory).count) ?? 0
    }

    /// Total size of the regular files under `directory`, recursively.
    public static func bytes(under directory: String) -> Int {
        guard let walk = FileManager.default.enumerator(atPath: directory) else { return 0 }
        var total = 0
        for case let name as String in walk {
            var info = stat()
            if lstat("\(directory)/\(name)", &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG { total += Int(info.st_size) }
        }
        return total
    }
}
