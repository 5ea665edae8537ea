/// A UNIX socket whose peer is outside the tree, named by the user (`cpx --external-unix
/// SPEC`), with what a restart does with it. SPEC is `PATH=ACTION` (the socket connected to the
/// peer bound to PATH, an absolute path) or `unix:INODE=ACTION` (the socket of the tree with that
/// inode) or `*=ACTION` (every socket of the tree whose peer is outside it), ACTION `reconnect`
/// or `close`.
public struct ExternalUnix: Sendable, Equatable, CustomStringConvertible {
    public enum Target: Sendable, Equatable {
        /// The socket(s) connected to a peer bound to this path.
        case peerPath(String)
        /// The socket of the tree with this inode.
        case inode(UInt64)
        /// Every socket of the tree whose peer is outside it (`*`, CRIU's `--ext-unix-sk`
        /// without an id).
        case any
    }

    public var target: Target
    public var action: ProcessImage.UnixSocket.External.Action

    public init(target: Target, action: ProcessImage.UnixSocket.External.Action) {
        (self.target, self.action) = (target, action)
    }

    /// Parses SPEC; nil with a reason when it does not read.
    public static func parse(_ spec: String) -> Result<ExternalUnix, ParseError> {
        guard let equals = spec.lastIndex(of: "=") else {
            return .failure(ParseError(reason: "'\(spec)' has no '=ACTION' (reconnect or close)"))
        }
        let name = String(spec[..<equals])
        let word = String(spec[spec.index(after: equals)...])
        guard let action = ProcessImage.UnixSocket.External.Action(rawValue: word) else {
            return .failure(ParseError(reason: "'\(spec)': the action '\(word)' is neither reconnect nor close"))
        }
        if name == "*" { return .success(ExternalUnix(target: .any, action: action)) }
        if name.hasPrefix("unix:") {
            guard let inode = UInt64(name.dropFirst("unix:".count)) else {
                return .failure(ParseError(reason: "'\(spec)': unix: takes a socket's inode number"))
            }
            return .success(ExternalUnix(target: .inode(inode), action: action))
        }
        guard name.hasPrefix("/"), name.count > 1 else {
            return .failure(
                ParseError(reason: "'\(spec)': name the peer by its absolute path, or the socket by unix:INODE"))
        }
        return .success(ExternalUnix(target: .peerPath(name), action: action))
    }

    public struct ParseError: Error { public var reason: String }

    public var description: String {
        switch target {
        case .peerPath(let path): "\(path)=\(action.rawValue)"
        case .inode(let inode): "unix:\(inode)=\(action.rawValue)"
        case .any: "*=\(action.rawValue)"
        }
    }
}
