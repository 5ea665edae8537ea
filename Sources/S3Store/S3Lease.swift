#if canImport(Glibc)
import Glibc
#endif
import Foundation
import ObjectStore
import Store
import Synchronization

/// A lock on S3 that a crashed holder cannot keep: an object under `locks/` saying who holds
/// it and until when. The holder renews it on a thread of its own every third of its length
/// (compare-and-swap on the ETag it last wrote, so a lease taken over after it expired is known
/// lost, never silently shared); others take it only once it has expired. Hosts' clocks must
/// agree to well within a lease's length (default 60 s).
///
/// Body: `chpox-lease 1`, `holder HOST pid PID`, `expires SECONDS` (since the epoch), lines.
final class S3Lease: @unchecked Sendable {
    struct Holder: Sendable, CustomStringConvertible {
        var who: String
        var expires: Int64
        var description: String { who }
        func expired(now: Int64 = Int64(Date().timeIntervalSince1970)) -> Bool { expires <= now }
    }

    let key: String
    let seconds: Int64
    private let client: S3Client
    private let state: Mutex<(etag: ETag?, lost: Bool, stopped: Bool)>
    private var renewer: Thread?
    private let done = DispatchSemaphore(value: 0)

    /// This process, for the other hosts' messages.
    static let me: String = {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count)
        let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(host) pid \(getpid())"
    }()

    /// Takes the lease at `key`. `exclusive` (a chain's writer, maintenance): when another
    /// holds it and it has not expired, returns nil with that holder in `busy`; an expired one
    /// is taken over by compare-and-swap. Not exclusive (a generation's lease, a key of its own):
    /// written as it is.
    static func take(
        _ key: String, client: S3Client, seconds: Int64, exclusive: Bool
    ) throws(S3Error) -> (lease: S3Lease?, busy: Holder?) {
        let lease = S3Lease(key: key, client: client, seconds: seconds)
        if !exclusive {
            try lease.write(.none)
            return (lease.started(), nil)
        }
        do {
            try lease.write(.ifAbsent)
            return (lease.started(), nil)
        } catch let error where error.kind == .alreadyExists {
            guard let (holder, etag) = try read(key, client: client) else {
                return try take(key, client: client, seconds: seconds, exclusive: true)  // released meanwhile
            }
            guard holder.expired() else { return (nil, holder) }
            do {
                try lease.write(.ifMatch(etag))
                return (lease.started(), nil)
            } catch let error where error.kind == .etagMismatch {
                return (nil, try read(key, client: client)?.holder ?? holder)  // another took it first
            }
        }
    }

    /// The lease at `key` as it is: who holds it until when, and its ETag; nil when none.
    static func read(_ key: String, client: S3Client) throws(S3Error) -> (holder: Holder, etag: ETag)? {
        guard let (body, etag) = try client.getVersioned(key) else { return nil }
        let lines = String(decoding: body, as: UTF8.self).split(separator: "\n")
        let who = lines.first { $0.hasPrefix("holder ") }.map { String($0.dropFirst(7)) } ?? "an unknown holder"
        let expires = lines.first { $0.hasPrefix("expires ") }.flatMap { Int64($0.dropFirst(8)) } ?? 0
        return (Holder(who: who, expires: expires), etag)
    }

    private init(key: String, client: S3Client, seconds: Int64) {
        self.key = key
        self.client = client
        self.seconds = seconds
        state = Mutex((nil, false, false))
    }

    private func write(_ condition: S3Client.WriteCondition) throws(S3Error) {
        let expires = Int64(Date().timeIntervalSince1970) + seconds
        let body = Array("chpox-lease 1\nholder \(Self.me)\nexpires \(expires)\n".utf8)
        let etag = try client.put(key, body, condition: condition)
        state.withLock { $0.etag = etag }
    }

    private func started() -> S3Lease {
        // The thread holds the lease only while it renews it: the lease ends with its holder.
        let (done, period) = (done, Int(seconds * 1000 / 3))
        let thread = Thread { [weak self] in
            while done.wait(timeout: .now() + .milliseconds(period)) == .timedOut {
                guard let self, self.renewOnce() else { return }
            }
        }
        thread.name = "chpox lease"
        renewer = thread
        thread.start()
        Self.held.withLock { held in
            if held.isEmpty && !Self.exitHookInstalled.withLock({ $0 }) {
                Self.exitHookInstalled.withLock { $0 = true }
                atexit { S3Lease.releaseAll() }
            }
            held[ObjectIdentifier(self)] = WeakLease(lease: self)
        }
        return self
    }

    /// Leases held now: a command that ends with exit() (no deinit runs then) lets them go in
    /// an exit hook, so the next command on any host need not wait for them to expire.
    private static let held = Mutex<[ObjectIdentifier: WeakLease]>([:])
    private static let exitHookInstalled = Mutex(false)

    static func releaseAll() {
        let leases = held.withLock { held in
            defer { held.removeAll() }
            return held.values.compactMap(\.lease)
        }
        for lease in leases { lease.release() }
    }

    /// One renewal of the renewing thread; false when there is nothing more to renew.
    private func renewOnce() -> Bool {
        guard let etag = state.withLock({ $0.stopped || $0.lost ? nil : $0.etag }) else { return false }
        do throws(S3Error) { try write(.ifMatch(etag)) } catch {
            // Taken over (it had expired) or gone: lost. A transient failure is retried at
            // the next turn, while the lease still runs.
            if !error.isTransient { state.withLock { $0.lost = true } }
        }
        return true
    }

    /// Whether the lease was taken over or removed while held: whatever it protected may have
    /// changed.
    var lost: Bool { state.withLock { $0.lost } }

    /// Writes the lease again now (its full length from now); false when it was lost.
    func renew() -> Bool {
        guard let etag = state.withLock({ $0.lost ? nil : $0.etag }) else { return false }
        do throws(S3Error) { try write(.ifMatch(etag)) } catch {
            if !error.isTransient { state.withLock { $0.lost = true } }
            return false
        }
        return true
    }

    /// Lets the lease go: the renewals stop and the object is removed (when still this one's).
    func release() {
        let wasHeld = state.withLock { state in
            defer { state.stopped = true }
            return !state.stopped && !state.lost
        }
        _ = Self.held.withLock { $0.removeValue(forKey: ObjectIdentifier(self)) }
        guard wasHeld else { return }
        done.signal()
        if let etag = state.withLock({ $0.etag }), let current = try? Self.read(key, client: client),
            current.etag == etag
        {
            try? client.delete(key)
        }
    }

    deinit { release() }
}

/// A lease held without keeping it alive (its holder's claim or generation does).
struct WeakLease: @unchecked Sendable {
    weak var lease: S3Lease?
}
