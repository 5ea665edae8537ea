import Foundation
import Synchronization

/// A TCP proxy on 127.0.0.1 in front of the S3 server, with faults on demand: it can forward
/// a request but drop its answer and close the connection (a request that reached the server,
/// whose client never learns the outcome), or answer a request itself with 503 SlowDown, as a
/// busy S3 server does, without forwarding it. The tests send one request at a time, each in
/// one piece (no body past what the first read gets).
public final class FaultProxy: Sendable {
    public let port: UInt16
    private let listener: Int32
    private let upstreamPort: UInt16
    private let cutsLeft: Mutex<Int>
    private let slowDownsLeft: Mutex<Int>
    /// How many answers were dropped.
    public let cut = Mutex(0)
    /// How many requests were answered 503 SlowDown.
    public let slowedDown = Mutex(0)

    /// `cuts`: how many of the next answers to drop; `slowDowns`: how many of the next
    /// requests to answer 503 SlowDown.
    public init(upstreamPort: UInt16, cuts: Int = 0, slowDowns: Int = 0) throws {
        let socket = try LocalSocket.listening()
        listener = socket.descriptor
        port = socket.port
        self.upstreamPort = upstreamPort
        cutsLeft = Mutex(cuts)
        slowDownsLeft = Mutex(slowDowns)
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    /// Drops one more answer.
    public func cutNext() { cutsLeft.withLock { $0 += 1 } }

    /// Answers the next `count` requests 503 SlowDown.
    public func slowDownNext(_ count: Int) { slowDownsLeft.withLock { $0 += count } }

    /// Stops accepting (connections already open end with their peers).
    public func stop() { shutdown(listener, Int32(SHUT_RDWR)) }

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

    /// One of a fault's remaining times taken, if any is left.
    private static func take(_ left: borrowing Mutex<Int>, counting done: borrowing Mutex<Int>) -> Bool {
        let taken = left.withLock { left in
            guard left > 0 else { return false }
            left -= 1
            return true
        }
        if taken { done.withLock { $0 += 1 } }
        return taken
    }

    /// Copies until either side closes, then closes both directions. `answers`: this is the
    /// server's side (the bytes read start an answer).
    private func pump(from source: Int32, to destination: Int32, answers: Bool) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        loop: while true {
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            if answers && Self.take(cutsLeft, counting: cut) { break }
            if !answers && Self.take(slowDownsLeft, counting: slowedDown) {
                let body =
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>"
                    + "<Message>Please reduce your request rate.</Message></Error>"
                let answer = Array(
                    ("HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                        + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)").utf8)
                _ = answer.withUnsafeBytes { write(source, $0.baseAddress, $0.count) }
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
