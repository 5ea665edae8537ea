import Syscall

/// Starts `tool` (chpox-store-writer) in `hold` mode on `store`'s `chain` and returns it once it
/// has said its first line ("published": a generation in flight with a pack published), with
/// that line; the caller kills it.
public func startHeldWriter(
    _ tool: String, store: String, chain: String, environment: [String]? = nil
) throws -> (child: ChildProcess, said: String) {
    let (read, write) = try FileDescriptor.pipe()
    let child = try ChildProcess.spawn(
        tool, [store, chain, "7", "16", "hold"], stdout: write, environment: environment)
    write.close()
    defer { read.close() }
    var said: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 256)
    while !said.contains(UInt8(ascii: "\n")) {
        let n = try chunk.withUnsafeMutableBytes { try read.read(into: $0) }
        if n == 0 { break }
        said += chunk[0..<n]
    }
    return (child, String(decoding: said, as: UTF8.self))
}
