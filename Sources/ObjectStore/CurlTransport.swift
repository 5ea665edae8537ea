#if !CHPOX_NO_S3
import CCurl
#endif
import Foundation
import Synchronization

/// One HTTP request as the S3 client sends it.
struct HTTPRequest {
    var method: String
    /// Scheme, host, port, the encoded path and query.
    var url: String
    var headers: [(name: String, value: String)]
    /// Sent for PUT (an empty body is `Content-Length: 0`).
    var body: [UInt8] = []
}

struct HTTPResponse {
    var status: Int
    /// Lower-cased names; the final response's headers (not a `100 Continue`'s).
    var headers: [String: String]
    var body: [UInt8]
    /// The request may have reached the server more than once: curl sends a request again,
    /// unasked, on a new connection when a kept one closes before the answer (the first
    /// sending may have been carried out). Also true when a kept connection was found dead
    /// before sending: then nothing was sent twice, but the two cannot be told apart.
    var maybeSentTwice = false
}

/// Why no HTTP answer came back.
struct TransportFailure: Error {
    var kind: S3Error.Kind
    var message: String
}

/// Limits on one request's waits.
public struct S3Timeouts: Sendable {
    /// For the TCP (and TLS) connection.
    public var connect: Duration
    /// A transfer slower than one byte a second for this long is given up: a bound on a stalled
    /// server that does not cut a large object's upload short.
    public var stall: Duration

    public init(connect: Duration = .seconds(10), stall: Duration = .seconds(30)) {
        self.connect = connect
        self.stall = stall
    }
}

#if CHPOX_NO_S3
/// A build without libcurl (`-DCHPOX_NO_S3`: the statically linked build of the QEMU guests and
/// the scale runs, where Debian has no static libcurl with its dependencies): every request
/// fails, saying why.
final class CurlTransport: Sendable {
    let timeouts: S3Timeouts

    init(timeouts: S3Timeouts) { self.timeouts = timeouts }

    func perform(_ request: HTTPRequest) throws(TransportFailure) -> HTTPResponse {
        throw TransportFailure(
            kind: .configuration,
            message: "this chpox was built without libcurl (-DCHPOX_NO_S3, a static build): stores on S3 need a "
                + "dynamically linked build")
    }
}
#else
/// HTTP over libcurl's easy interface, with handles (and so their open connections) kept for
/// the next request. Why libcurl and not async-http-client: that one would add SwiftNIO and
/// BoringSSL (swift-crypto) to every build, minutes of CI on two cores; Debian ships libcurl.
final class CurlTransport: Sendable {
    /// A CURL handle is used by one thread at a time: taken from the pool, given back after.
    private struct Handle: @unchecked Sendable { var pointer: UnsafeMutableRawPointer }
    private let idle = Mutex<[Handle]>([])
    let timeouts: S3Timeouts

    /// curl_global_init before any handle, once (Swift runs a global's initializer once).
    private static let initialized: Bool = curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK

    init(timeouts: S3Timeouts) {
        self.timeouts = timeouts
    }

    deinit {
        idle.withLock { handles in
            for handle in handles { curl_easy_cleanup(handle.pointer) }
            handles.removeAll()
        }
    }

    func perform(_ request: HTTPRequest) throws(TransportFailure) -> HTTPResponse {
        guard Self.initialized else { throw TransportFailure(kind: .transport, message: "curl_global_init failed") }
        let handle: Handle
        var reused = false
        if let kept = idle.withLock({ $0.popLast() }) {
            curl_easy_reset(kept.pointer)  // keeps the connections, forgets the last request's options
            handle = kept
            reused = true
        } else if let pointer = curl_easy_init() {
            handle = Handle(pointer: pointer)
        } else {
            throw TransportFailure(kind: .transport, message: "curl_easy_init failed")
        }
        do {
            var response = try perform(request, on: handle.pointer)
            var connects = 0
            _ = chpox_curl_getinfo_long(handle.pointer, CURLINFO_NUM_CONNECTS, &connects)
            response.maybeSentTwice = reused && connects > 0
            idle.withLock { $0.append(handle) }
            return response
        } catch {
            // A handle whose transfer failed may hold a broken connection: not reused.
            curl_easy_cleanup(handle.pointer)
            throw error
        }
    }

    /// What the callbacks fill, and the upload they read from.
    private final class Exchange {
        var upload: UnsafeRawBufferPointer
        var uploaded = 0
        var body: [UInt8] = []
        var headers: [String: String] = [:]

        init(upload: UnsafeRawBufferPointer) { self.upload = upload }
    }

    private func perform(
        _ request: HTTPRequest, on curl: UnsafeMutableRawPointer
    ) throws(TransportFailure)
        -> HTTPResponse
    {
        // curl writes its message here during the transfer: memory that stays put until then.
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        defer { errorBuffer.deallocate() }
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        // curl sends every upload with "Expect: 100-continue" and waits for the server's go: a
        // round trip that saves the bytes of a refused upload (a write-once put of a key that
        // is taken). Worth it past 1 MiB; below, "Expect:" with no value drops it.
        var headers = request.headers.map { "\($0.name): \($0.value)" }
        if request.body.count <= 1 << 20 { headers.append("Expect:") }
        for header in headers {
            guard let appended = curl_slist_append(headerList, header) else {
                curl_slist_free_all(headerList)
                throw TransportFailure(kind: .transport, message: "curl_slist_append failed")
            }
            headerList = appended
        }
        defer { curl_slist_free_all(headerList) }

        let (code, body, responseHeaders) = request.body.withUnsafeBytes { body in
            let exchange = Exchange(upload: body)
            let context = Unmanaged.passUnretained(exchange).toOpaque()
            let code = withExtendedLifetime(exchange) { () -> CURLcode in
                var set = CURLE_OK
                func check(_ result: CURLcode) { if set == CURLE_OK { set = result } }
                check(chpox_curl_setopt_string(curl, CURLOPT_URL, request.url))
                check(chpox_curl_setopt_long(curl, CURLOPT_NOSIGNAL, 1))
                // The path is signed as it is: curl must not squash "/../" or "/./" in a key.
                check(chpox_curl_setopt_long(curl, CURLOPT_PATH_AS_IS, 1))
                check(chpox_curl_setopt_long(curl, CURLOPT_CONNECTTIMEOUT_MS, milliseconds(timeouts.connect)))
                check(chpox_curl_setopt_long(curl, CURLOPT_LOW_SPEED_LIMIT, 1))
                check(chpox_curl_setopt_long(curl, CURLOPT_LOW_SPEED_TIME, max(1, milliseconds(timeouts.stall) / 1000)))
                check(chpox_curl_setopt_pointer(curl, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headerList)))
                check(chpox_curl_setopt_pointer(curl, CURLOPT_ERRORBUFFER, errorBuffer))
                check(chpox_curl_setopt_callback(curl, CURLOPT_WRITEFUNCTION, Self.receiveBody))
                check(chpox_curl_setopt_pointer(curl, CURLOPT_WRITEDATA, context))
                check(chpox_curl_setopt_callback(curl, CURLOPT_HEADERFUNCTION, Self.receiveHeader))
                check(chpox_curl_setopt_pointer(curl, CURLOPT_HEADERDATA, context))
                switch request.method {
                case "GET": break
                case "HEAD": check(chpox_curl_setopt_long(curl, CURLOPT_NOBODY, 1))
                case "PUT":
                    check(chpox_curl_setopt_long(curl, CURLOPT_UPLOAD, 1))
                    check(chpox_curl_setopt_offset(curl, CURLOPT_INFILESIZE_LARGE, curl_off_t(body.count)))
                    check(chpox_curl_setopt_callback(curl, CURLOPT_READFUNCTION, Self.sendBody))
                    check(chpox_curl_setopt_pointer(curl, CURLOPT_READDATA, context))
                    check(chpox_curl_setopt_seek(curl, Self.rewindBody))
                    check(chpox_curl_setopt_pointer(curl, CURLOPT_SEEKDATA, context))
                default: check(chpox_curl_setopt_string(curl, CURLOPT_CUSTOMREQUEST, request.method))
                }
                guard set == CURLE_OK else { return set }
                return curl_easy_perform(curl)
            }
            return (code, exchange.body, exchange.headers)
        }
        guard code == CURLE_OK else {
            let detail = String(cString: errorBuffer)
            let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            throw TransportFailure(kind: Self.kind(code), message: message)
        }
        var status = 0
        _ = chpox_curl_getinfo_long(curl, CURLINFO_RESPONSE_CODE, &status)
        return HTTPResponse(status: status, headers: responseHeaders, body: body)
    }

    private static func kind(_ code: CURLcode) -> S3Error.Kind {
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY: return .unreachable
        case CURLE_OPERATION_TIMEDOUT: return .timedOut
        default: return .transport
        }
    }

    private func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds) * 1000 + Int(duration.components.attoseconds / 1_000_000_000_000_000)
    }

    private static let receiveBody: chpox_curl_data_callback = { data, size, count, context in
        guard let data, let context else { return 0 }
        let exchange = Unmanaged<Exchange>.fromOpaque(context).takeUnretainedValue()
        let bytes = UnsafeRawBufferPointer(start: data, count: size * count)
        exchange.body.append(contentsOf: bytes)
        return size * count
    }

    private static let receiveHeader: chpox_curl_data_callback = { data, size, count, context in
        guard let data, let context else { return 0 }
        let exchange = Unmanaged<Exchange>.fromOpaque(context).takeUnretainedValue()
        let line = String(decoding: UnsafeRawBufferPointer(start: data, count: size * count), as: UTF8.self)
        if line.hasPrefix("HTTP/") {
            exchange.headers = [:]  // a new response (after a 100 Continue): only the last one counts
        } else if let colon = line.firstIndex(of: ":") {
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
            exchange.headers[name] = value
        }
        return size * count
    }

    private static let sendBody: chpox_curl_data_callback = { buffer, size, count, context in
        guard let buffer, let context else { return 0 }
        let exchange = Unmanaged<Exchange>.fromOpaque(context).takeUnretainedValue()
        let length = min(size * count, exchange.upload.count - exchange.uploaded)
        if length > 0, let base = exchange.upload.baseAddress {
            UnsafeMutableRawPointer(buffer).copyMemory(from: base + exchange.uploaded, byteCount: length)
            exchange.uploaded += length
        }
        return length
    }

    private static let rewindBody: chpox_curl_seek_callback = { context, offset, origin in
        guard let context, origin == SEEK_SET else { return Int32(CURL_SEEKFUNC_CANTSEEK) }
        let exchange = Unmanaged<Exchange>.fromOpaque(context).takeUnretainedValue()
        guard offset >= 0, offset <= exchange.upload.count else { return Int32(CURL_SEEKFUNC_FAIL) }
        exchange.uploaded = Int(offset)
        return Int32(CURL_SEEKFUNC_OK)
    }
}
#endif
