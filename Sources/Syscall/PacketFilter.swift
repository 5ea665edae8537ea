#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The rules that hold TCP connections of a checkpointed-and-killed process until its restart,
/// in the host's nftables (through nft(8), package nftables): while the socket is gone, the
/// kernel would answer the peer's next segment with a reset, so both directions of each held
/// connection are dropped. They live in one table, `inet chpox_hold`, with an input and an
/// output chain at the raw priority (before connection tracking); each rule holds one
/// direction of one connection and names it and its owner in its comment ("chpox hold LOCAL
/// REMOTE by PID/START": `Owner`). Every change is one nft transaction: all of it applies, or
/// none; and every change is made under one lock (`lockPath`), so that one chpox run never
/// decides from a listing another has changed since (a release that deletes the table it
/// found emptied would delete the rules another cpx added meanwhile). Needs CAP_NET_ADMIN in
/// the caller's network namespace, whose rules these are.
public enum PacketFilter {
    public static let table = "chpox_hold"
    /// Packets with this mark (SO_MARK) pass a hold: the segments a restart makes itself to
    /// bring a connection back into its state (`TCPSegment`: the peer's FIN).
    public static let passMark: UInt32 = 0x6368_7078

    /// One TCP connection seen from its held end: addresses as printed (IPv4 dotted, IPv6
    /// without brackets; an IPv4-mapped IPv6 address is held as its IPv4 form, which its
    /// packets carry).
    public struct Connection: Hashable, Sendable, CustomStringConvertible {
        public var localHost: String
        public var localPort: UInt16
        public var remoteHost: String
        public var remotePort: UInt16

        public init(localHost: String, localPort: UInt16, remoteHost: String, remotePort: UInt16) {
            self.localHost = Self.unmapped(localHost)
            self.localPort = localPort
            self.remoteHost = Self.unmapped(remoteHost)
            self.remotePort = remotePort
        }

        /// The same connection seen from its other end.
        public var reversed: Connection {
            Connection(localHost: remoteHost, localPort: remotePort, remoteHost: localHost, remotePort: localPort)
        }

        public var description: String {
            "\(Self.shown(localHost, localPort)) to \(Self.shown(remoteHost, remotePort))"
        }

        /// The words of the rule comment that names it and the owner of its hold.
        func comment(owner: Owner?) -> String {
            "chpox hold \(Self.shown(localHost, localPort)) \(Self.shown(remoteHost, remotePort))"
                + (owner.map { " by \($0)" } ?? "")
        }

        static func shown(_ host: String, _ port: UInt16) -> String {
            host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }

        static func unmapped(_ host: String) -> String {
            let prefix = "::ffff:"
            if host.lowercased().hasPrefix(prefix), host.dropFirst(prefix.count).contains(".") {
                return String(host.dropFirst(prefix.count))
            }
            return host
        }

        /// The nft match of packets from `source` to `destination` (both of this connection).
        func match(inbound: Bool) -> String {
            let family = localHost.contains(":") ? "ip6" : "ip"
            let (source, sourcePort, destination, destinationPort) =
                inbound
                ? (remoteHost, remotePort, localHost, localPort) : (localHost, localPort, remoteHost, remotePort)
            return "\(family) saddr \(source) \(family) daddr \(destination) tcp sport \(sourcePort) "
                + "tcp dport \(destinationPort)"
        }

        /// Parses a rule comment written by `comment(owner:)`: the connection and its owner (nil
        /// for a rule without one, as the chpox runs before owners were recorded wrote them).
        static func parse(comment: String) -> (connection: Connection, owner: Owner?)? {
            let words = comment.split(separator: " ")
            guard words.count == 4 || words.count == 6, words[0] == "chpox", words[1] == "hold",
                let local = Self.endpoint(words[2]), let remote = Self.endpoint(words[3])
            else { return nil }
            var owner: Owner?
            if words.count == 6 {
                guard words[4] == "by", let parsed = Owner(words[5]) else { return nil }
                owner = parsed
            }
            let connection = Connection(
                localHost: local.0, localPort: local.1, remoteHost: remote.0, remotePort: remote.1)
            return (connection, owner)
        }

        static func endpoint(_ word: Substring) -> (String, UInt16)? {
            guard let colon = word.lastIndex(of: ":"), let port = UInt16(word[word.index(after: colon)...]) else {
                return nil
            }
            var host = word[..<colon]
            if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
            return host.isEmpty ? nil : (String(host), port)
        }
    }

    /// The process that made a hold or has taken it over, and works on it: a cpx between its
    /// hold and its kill, an ld-chpox restarting the connection. While it lives its rules are
    /// its own, whatever the sockets show (a cpx holds a connection that is still open until it
    /// kills the process; a restart makes the socket before it releases the hold): no other run
    /// may take them for stale. It is named by its pid and its start time (clock ticks since
    /// boot, the 22nd field of /proc/PID/stat), so that a pid used again does not pass for it.
    public struct Owner: Hashable, Sendable, CustomStringConvertible {
        public var pid: Int32
        public var startTime: UInt64

        public init(pid: Int32, startTime: UInt64) {
            self.pid = pid
            self.startTime = startTime
        }

        /// "PID/START", as rule comments name it.
        init?(_ word: Substring) {
            let parts = word.split(separator: "/")
            guard parts.count == 2, let pid = Int32(parts[0]), let start = UInt64(parts[1]) else { return nil }
            self.init(pid: pid, startTime: start)
        }

        public var description: String { "\(pid)/\(startTime)" }

        /// This process (nil where its /proc/self/stat cannot be read).
        public static var current: Owner? {
            let pid = getpid()
            return startTime(of: pid).map { Owner(pid: pid, startTime: $0) }
        }

        /// The process still runs: a zombie has gone (its sockets are closed, and its parent
        /// may never reap it), and a pid used again names another start time.
        public var isAlive: Bool {
            guard let stat = Self.stat(of: pid) else { return false }
            return stat.startTime == startTime && stat.state != "Z" && stat.state != "X"
        }

        static func startTime(of pid: Int32) -> UInt64? { stat(of: pid)?.startTime }

        /// The state (field 3) and start time (field 22) of /proc/PID/stat, its fields counted
        /// after the command's closing parenthesis (which the command itself may contain).
        static func stat(of pid: Int32) -> (state: Character, startTime: UInt64)? {
            guard let file = try? FileDescriptor.open("/proc/\(pid)/stat", .readOnly) else { return nil }
            defer { file.close() }
            guard let bytes = try? file.readToEnd(limit: 4096), let close = bytes.lastIndex(of: UInt8(ascii: ")"))
            else { return nil }
            let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "))
            guard fields.count > 19, let state = fields[0].first,
                let start = UInt64(String(decoding: fields[19], as: UTF8.self))
            else { return nil }
            return (Character(UnicodeScalar(state)), start)
        }
    }

    /// One rule of the table: the connection it holds, the owner of the hold and where it is.
    public struct Rule: Hashable, Sendable {
        public var connection: Connection
        public var owner: Owner?
        public var chain: String
        public var handle: Int
    }

    public enum Failure: Error, Sendable, CustomStringConvertible {
        /// nft(8) is not installed.
        case missingTool
        /// nft ran and refused: its words.
        case refused(String)
        case system(Errno)

        public var description: String {
            switch self {
            case .missingTool: "nft(8) is not installed (Debian package nftables)"
            case .refused(let words): "nft refused: \(words)"
            case .system(let errno): "nft could not be run: \(errno)"
            }
        }
    }

    /// Drops every packet of `connections`, both ways, from now until `release`; the hold is
    /// `owner`'s (this process unless told otherwise).
    public static func hold(_ connections: [Connection], owner: Owner? = .current) throws(Failure) {
        guard !connections.isEmpty else { return }
        try locked { () throws(Failure) in try nft(["-f", "-"], input: holdScript(connections, owner: owner)) }
    }

    /// The nft script `hold` runs: the table and its chains where missing, two rules per
    /// connection. (Public for tests that hold connections in a network namespace of their own,
    /// through `nsenter … nft -f`.)
    public static func holdScript(_ connections: [Connection], owner: Owner?) -> String {
        (chains + connections.flatMap { rules($0, owner: owner) }).joined(separator: "\n") + "\n"
    }

    /// Makes this process the owner of the holds of `connections` (those it finds), so that no
    /// other run takes them for stale while it restarts them: each rule is replaced by its
    /// copy in one transaction (no packet passes between). Returns the connections taken over.
    @discardableResult
    public static func takeOver(_ connections: Set<Connection>) throws(Failure) -> Set<Connection> {
        try locked { () throws(Failure) in
            let found = try rules().filter { connections.contains($0.connection) }
            guard !found.isEmpty else { return [] }
            let taken = Set(found.map(\.connection))
            let owner = Owner.current
            let script =
                chains + taken.flatMap { rules($0, owner: owner) }
                + found.map { "delete rule inet \(table) \($0.chain) handle \($0.handle)" }
            try nft(["-f", "-"], input: script.joined(separator: "\n") + "\n")
            return taken
        }
    }

    /// The table and its chains (added where missing).
    private static let chains = [
        "add table inet \(table)",
        "add chain inet \(table) input { type filter hook input priority -300; policy accept; }",
        "add chain inet \(table) output { type filter hook output priority -300; policy accept; }",
    ]

    /// The two rules that hold `connection` for `owner`.
    private static func rules(_ connection: Connection, owner: Owner?) -> [String] {
        let comment = connection.comment(owner: owner)
        return [
            "add rule inet \(table) input meta mark != \(passMark) \(connection.match(inbound: true)) drop comment \"\(comment)\"",
            "add rule inet \(table) output \(connection.match(inbound: false)) drop comment \"\(comment)\"",
        ]
    }

    /// The rules holding connections now (none when the table does not exist).
    public static func rules() throws(Failure) -> [Rule] {
        let listed: String
        do { listed = try nft(["-a", "list", "table", "inet", table]) } catch {
            if case .refused(let words) = error, words.contains("No such file or directory") { return [] }
            throw error
        }
        return rules(listed: listed)
    }

    /// The rules of the table in `listed`, the output of `nft -a list table inet chpox_hold`
    /// (public for tests that list a network namespace's table themselves).
    public static func rules(listed: String) -> [Rule] {
        var rules: [Rule] = []
        var chain = ""
        for line in listed.split(separator: "\n") {
            let text = Substring(line.trimmingCharacters(in: " \t"))
            if text.hasPrefix("chain ") {
                chain = String(text.dropFirst(6).split(separator: " ").first ?? "")
                continue
            }
            guard let commentStart = text.range(of: "comment \""), let handleStart = text.range(of: "# handle ")
            else { continue }
            let afterComment = text[commentStart.upperBound...]
            guard let quote = afterComment.firstIndex(of: "\""),
                let named = Connection.parse(comment: String(afterComment[..<quote])),
                let handle = Int(text[handleStart.upperBound...].split(separator: " ").first ?? "")
            else { continue }
            rules.append(Rule(connection: named.connection, owner: named.owner, chain: chain, handle: handle))
        }
        return rules
    }

    /// Deletes the rules holding `connections` (those it finds), and the table once it holds
    /// nothing more. Returns the connections it released.
    @discardableResult
    public static func release(_ connections: Set<Connection>) throws(Failure) -> Set<Connection> {
        try release { rules in rules.filter { connections.contains($0.connection) } }
    }

    /// Deletes the rules that `pick` chooses from all those listed now, and the table once it
    /// holds nothing more: the listing, the choice and the deletion under the lock, so that
    /// nothing another run does comes between. Returns the connections it released.
    @discardableResult
    public static func release(picking pick: ([Rule]) -> [Rule]) throws(Failure) -> Set<Connection> {
        try locked { () throws(Failure) in
            let all = try rules()
            let picked = Set(pick(all))
            guard !picked.isEmpty else { return [] }
            var script = picked.map { "delete rule inet \(table) \($0.chain) handle \($0.handle)" }
            if picked.count == all.count { script.append("delete table inet \(table)") }
            try nft(["-f", "-"], input: script.joined(separator: "\n") + "\n")
            return Set(picked.map(\.connection))
        }
    }

    /// The lock every change of the table is made under (flock(2): a run that dies lets it go).
    public static let lockPath = "/run/chpox_hold.lock"

    /// Runs `body` with the table's lock held. Where the lock file cannot be opened (no /run),
    /// it runs without: as the runs before the lock did.
    private static func locked<T>(_ body: () throws(Failure) -> T) throws(Failure) -> T {
        guard let lock = try? FileDescriptor.open(lockPath, [.readWrite, .create], permissions: 0o600) else {
            return try body()
        }
        defer { lock.close() }  // lets the lock go
        do { try lock.lock(.exclusive) } catch { throw .system(error) }
        return try body()
    }

    @discardableResult
    private static func nft(_ arguments: [String], input: String = "") throws(Failure) -> String {
        guard
            let path = [String](["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]).first(where: { (path: String) in
                access(path, X_OK) == 0
            })
        else {
            throw .missingTool
        }
        let result: (termination: ChildProcess.Termination, output: [UInt8])
        do throws(Errno) {
            result = try ChildProcess.run(path, arguments, input: Array(input.utf8))
        } catch {
            throw .system(error)
        }
        let output = String(decoding: result.output, as: UTF8.self)
        guard result.termination == .exited(0) else {
            throw .refused(output.split(separator: "\n").prefix(3).joined(separator: " ").trimmingCharacters(in: " "))
        }
        return output
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return String(text)
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String { String(self).trimmingCharacters(in: set) }
    fileprivate func range(of needle: String) -> Range<Index>? {
        var start = startIndex
        while start < endIndex {
            if self[start...].hasPrefix(needle) { return start..<index(start, offsetBy: needle.count) }
            start = index(after: start)
        }
        return nil
    }
}

/// The TCP sockets of this network namespace with a peer (connected, in any state), from
/// /proc/net/tcp and /proc/net/tcp6.
public enum EstablishedConnections {
    public struct Socket: Sendable {
        public var connection: PacketFilter.Connection
        /// 0 for a socket no process holds (one closing, or in TIME_WAIT).
        public var inode: UInt64
        /// The kernel's TCP state number (1 ESTABLISHED ... 11 CLOSING).
        public var state: UInt8

        /// A process holds it, connected (not yet CLOSE).
        public var isHeld: Bool { inode != 0 && state != 7 }
    }

    public static func sockets() -> [Socket] {
        var found: [Socket] = []
        for (path, family) in [("/proc/net/tcp", AF_INET), ("/proc/net/tcp6", AF_INET6)] {
            guard let file = try? FileDescriptor.open(path, .readOnly),
                let bytes = try? file.readToEnd(limit: 256 << 20)
            else { continue }
            file.close()
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                guard fields.count > 9, let state = UInt8(fields[3], radix: 16), state != 10,  // not LISTEN
                    let inode = UInt64(fields[9]),
                    let local = endpoint(fields[1], family: family), let remote = endpoint(fields[2], family: family)
                else { continue }
                let connection = PacketFilter.Connection(
                    localHost: local.0, localPort: local.1, remoteHost: remote.0, remotePort: remote.1)
                found.append(Socket(connection: connection, inode: inode, state: state))
            }
        }
        return found
    }

    /// "0100007F:1F90": the address as 32-bit words in host order, the port in hex.
    static func endpoint(_ field: Substring, family: Int32) -> (String, UInt16)? {
        let parts = field.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1], radix: 16) else { return nil }
        let hex = Array(parts[0].utf8)
        guard hex.count == (family == AF_INET ? 8 : 32) else { return nil }
        var bytes: [UInt8] = []
        for word in stride(from: 0, to: hex.count, by: 8) {
            guard let value = UInt32(String(decoding: hex[word..<word + 8], as: UTF8.self), radix: 16) else {
                return nil
            }
            withUnsafeBytes(of: value) { bytes += $0 }  // host order, as the kernel printed it
        }
        var text = [CChar](repeating: 0, count: 64)
        let shown = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &text, socklen_t(text.count)) }
        guard shown != nil else { return nil }
        return (String(cString: text), port)
    }
}
