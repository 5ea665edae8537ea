import Foundation
import Synchronization

/// A TCP proxy on 127.0.0.1 in front of the S3 server, with faults on demand: it can forward
/// a request but drop its answer and close the connection (a request that reached the server,
/// whose client never learns the outcome; for an upload sent with `Expect: 100-continue`, the
/// server's go is dropped, so the body never arrives: a connection cut mid-upload), answer a
/// request itself with 503 SlowDown, as a busy S3 server does, without forwarding it, or run an
/// action (stop the server...) just before it forwards a request. A fault may be for any
/// request or for those whose request line (`PUT /bucket/prefix/packs/...`) holds a text.
///
/// It reads the requests' framing (headers, `Content-Length` bodies) to know which request an
/// answer is to: clients send one request at a time on a connection, as curl does.
public final class FaultProxy: Sendable {
    public let port: UInt16
    private let listener: Int32
    private let upstreamPort: UInt16
    private let rules = Mutex<[Rule]>([])
    /// How many answers were dropped.
    public let cut = Mutex(0)
    /// How many requests were answered 503 SlowDown.
    public let slowedDown = Mutex(0)
    /// The request lines seen, oldest first.
    public let requests = Mutex<[String]>([])

    public enum Fault: Sendable {
        /// Forward the request, drop its answer, close the connection.
        case cut
        /// Answer 503 SlowDown without forwarding the request.
        case slowDown
    }

    private struct Rule: Sendable {
        var fault: Fault
        /// A text of the request line; nil: any request.
        var matching: String?
        var left: Int
        /// Run before the request is forwarded (the fault is then `.cut` with left 0).
        var action: (@Sendable () -> Void)?
    }

    /// `cuts`: how many of the next answers to drop; `slowDowns`: how many of the next
    /// requests to answer 503 SlowDown.
    public init(upstreamPort: UInt16, cuts: Int = 0, slowDowns: Int = 0) throws {
        let socket = try LocalSocket.listening()
        listener = socket.descriptor
        port = socket.port
        self.upstreamPort = upstreamPort
        if cuts > 0 { rules.withLock { $0.append(Rule(fault: .cut, left: cuts)) } }
        if slowDowns > 0 { rules.withLock { $0.append(Rule(fault: .slowDown, left: slowDowns)) } }
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    /// Drops one more answer.
    public func cutNext() { add(.cut, 1, matching: nil) }

    /// Answers the next `count` requests 503 SlowDown.
    public func slowDownNext(_ count: Int) { add(.slowDown, count, matching: nil) }

    /// `fault` for the next `count` requests whose request line holds `text` (nil: any).
    public func add(_ fault: Fault, _ count: Int, matching text: String?) {
        rules.withLock { $0.append(Rule(fault: fault, matching: text, left: count)) }
    }

    /// Runs `action` once, on the proxy's thread, just before the first request whose line holds
    /// `text` is forwarded (the request waits for it).
    public func beforeRequest(matching text: String, _ action: @escaping @Sendable () -> Void) {
        rules.withLock { $0.append(Rule(fault: .cut, matching: text, left: 0, action: action)) }
    }

    /// Stops accepting (connections already open end with their peers).
    public func stop() { shutdown(listener, Int32(SHUT_RDWR)) }

    /// What to do with one request: the first rule that matches it, taken.
    private func faults(for line: String) -> (fault: Fault?, action: (@Sendable () -> Void)?) {
        rules.withLock { rules in
            var action: (@Sendable () -> Void)?
            if let index = rules.firstIndex(where: { $0.action != nil && line.contains($0.matching ?? "") }) {
                action = rules.remove(at: index).action
            }
            guard
                let index = rules.firstIndex(where: { rule in
                    rule.action == nil && rule.left > 0 && rule.matching.map { line.contains($0) } ?? true
                })
            else { return (nil, action) }
            rules[index].left -= 1
            return (rules[index].fault, action)
        }
    }

    /// One client connection and its upstream: whether the answer awaited is to be dropped.
    /// The descriptors are closed once both directions have ended (closed earlier, a number
    /// could be reused by the next connection while the other direction still shuts it down).
    private final class Exchange: Sendable {
        let client: Int32
        let upstream: Int32
        let cutAnswer = Mutex(false)
        private let ended = Mutex(0)
        init(client: Int32, upstream: Int32) { (self.client, self.upstream) = (client, upstream) }

        /// One direction is done: both are shut down, and closed after the second.
        func end() {
            shutdown(client, Int32(SHUT_RDWR))
            shutdown(upstream, Int32(SHUT_RDWR))
            if ended.withLock({ ended in
                ended += 1
                return ended == 2
            }) {
                close(client)
                close(upstream)
            }
        }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                if errno == EINTR { continue }
                close(listener)
                return
            }
            Thread.detachNewThread { [self] in forwardRequests(client) }
        }
    }

    /// Client to server: each request's head is read whole, its faults looked up (and its
    /// action run), then the head and its body (`Content-Length` bytes) forwarded. The server is
    /// connected to once the first head is in (after its action: a server restarted by it is
    /// the one connected to).
    private func forwardRequests(_ client: Int32) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var head: [UInt8] = []
        var bodyLeft = 0
        var exchange: Exchange?
        loop: while true {
            let count = buffer.withUnsafeMutableBytes { read(client, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            var bytes = buffer[0..<count]
            while !bytes.isEmpty {
                if bodyLeft > 0, let exchange {
                    let part = bytes.prefix(bodyLeft)
                    guard Self.send(part, to: exchange.upstream) else { break loop }
                    bodyLeft -= part.count
                    bytes = bytes.dropFirst(part.count)
                    continue
                }
                head += bytes
                bytes = []
                guard let end = Self.headEnd(head) else { continue }
                let request = Array(head[..<end])
                bytes = head[end...]
                head = []
                let (line, length) = Self.parse(request)
                requests.withLock { $0.append(line) }
                let (fault, action) = faults(for: line)
                action?()
                if fault == .slowDown {
                    slowedDown.withLock { $0 += 1 }
                    Self.answerSlowDown(client)
                    break loop
                }
                if exchange == nil {
                    guard let upstream = try? Self.connect(port: upstreamPort) else { break loop }
                    let opened = Exchange(client: client, upstream: upstream)
                    exchange = opened
                    Thread.detachNewThread { [self] in forwardAnswers(opened) }
                }
                guard let exchange else { break loop }
                if fault == .cut {
                    exchange.cutAnswer.withLock { $0 = true }
                    cut.withLock { $0 += 1 }
                }
                guard Self.send(request[...], to: exchange.upstream) else { break loop }
                bodyLeft = length
            }
        }
        guard let exchange else {
            shutdown(client, Int32(SHUT_RDWR))
            close(client)
            return
        }
        exchange.end()
    }

    /// Server to client, until either side closes or an answer is to be dropped.
    private func forwardAnswers(_ exchange: Exchange) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(exchange.upstream, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0, !exchange.cutAnswer.withLock({ $0 }) else { break }
            guard Self.send(buffer[0..<count], to: exchange.client) else { break }
        }
        exchange.end()
    }

    private static func answerSlowDown(_ client: Int32) {
        let body =
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>"
            + "<Message>Please reduce your request rate.</Message></Error>"
        let answer = Array(
            ("HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)").utf8)
        _ = send(answer[...], to: client)
    }

    /// Where a request's head ends (past its blank line), if it is all there.
    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index + 4
        }
        return nil
    }

    /// A request head's first line and its body's length.
    private static func parse(_ head: [UInt8]) -> (line: String, length: Int) {
        let lines = String(decoding: head, as: UTF8.self).components(separatedBy: "\r\n")
        let length = lines.dropFirst().compactMap { line -> Int? in
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
            return Int(parts[1].trimmingCharacters(in: .whitespaces))
        }.first
        return (lines.first ?? "", length ?? 0)
    }

    private static func send(_ bytes: ArraySlice<UInt8>, to destination: Int32) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let written = bytes.withUnsafeBytes { write(destination, $0.baseAddress! + sent, bytes.count - sent) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return false }
            sent += written
        }
        return true
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
