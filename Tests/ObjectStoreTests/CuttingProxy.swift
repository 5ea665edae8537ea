import Foundation
import Synchronization

/// A TCP proxy on 127.0.0.1 in front of the S3 server that, `cuts` times, forwards a request
/// but drops its answer and closes the connection: a request that reached the server, whose
/// client never learns the outcome (a connection cut at the worst moment).
final class CuttingProxy: Sendable {
    let port: UInt16
    private let listener: Int32
    private let upstreamPort: UInt16
    private let cutsLeft: Mutex<Int>
    /// How many answers were dropped.
    let cut = Mutex(0)

    init(upstreamPort: UInt16, cuts: Int) throws {
        let socket = try LocalSocket.listening()
        listener = socket.descriptor
        port = socket.port
        self.upstreamPort = upstreamPort
        cutsLeft = Mutex(cuts)
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    /// Cuts one more connection.
    func cutNext() { cutsLeft.withLock { $0 = max($0, 0) + 1 } }

    /// Stops accepting (connections already open end with their peers).
    func stop() { shutdown(listener, Int32(SHUT_RDWR)) }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                if errno == EINTR { continue }
                close(listener)
                return
            }
            guard let upstream = try? Self.connect(port: upstreamPort) else {
                close(client)
                continue
            }
            Thread.detachNewThread { [self] in pump(from: client, to: upstream, answers: false) }
            Thread.detachNewThread { [self] in pump(from: upstream, to: client, answers: true) }
        }
    }

    /// Copies until either side closes, then closes both directions.
    /// `answers`: the server's side, whose next bytes are dropped, with the connection, while
    /// cuts are left (the tests send one request at a time: those bytes start an answer).
    private func pump(from source: Int32, to destination: Int32, answers: Bool) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        loop: while true {
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            if answers,
                cutsLeft.withLock({ left in
                    defer { left -= 1 }; return left > 0
                })
            {
                cut.withLock { $0 += 1 }
                break
            }
            var sent = 0
            while sent < count {
                let written = buffer.withUnsafeBytes { write(destination, $0.baseAddress! + sent, count - sent) }
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { break loop }
                sent += written
            }
        }
        shutdown(source, Int32(SHUT_RDWR))
        shutdown(destination, Int32(SHUT_RDWR))
        close(source)
    }

    private static func connect(port: UInt16) throws -> Int32 {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw LocalSocket.Failure(what: "socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = port.bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(descriptor)
            throw LocalSocket.Failure(what: "connect to 127.0.0.1:\(port): errno \(errno)")
        }
        return descriptor
    }
}
