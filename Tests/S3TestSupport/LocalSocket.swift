import Foundation

/// TCP sockets on 127.0.0.1 for the failure tests.
public enum LocalSocket {
    public struct Failure: Error { public var what: String }

    /// A socket bound to a free port and listening, never accepting (the kernel completes the
    /// handshake: the client connects, then waits).
    public static func listening() throws -> (descriptor: Int32, port: UInt16) {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(what: "socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bind(descriptor, address, length) == 0 && listen(descriptor, 8) == 0
                    && getsockname(descriptor, address, &length) == 0
            }
        }
        guard bound else {
            close(descriptor)
            throw Failure(what: "bind/listen on 127.0.0.1: errno \(errno)")
        }
        return (descriptor, UInt16(bigEndian: address.sin_port))
    }

    /// A port nothing listens on (one that was free a moment ago).
    public static func closedPort() throws -> UInt16 {
        let socket = try listening()
        close(socket.descriptor)
        return socket.port
    }
}
