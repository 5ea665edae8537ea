import Foundation

/// The keys a request is signed with.
public struct S3Credentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    /// Temporary credentials' token, sent as `x-amz-security-token`.
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }
}

/// Where the S3 server is and who talks to it, taken the way S3 tools take it.
public struct S3Configuration: Sendable, Equatable {
    /// `http` or `https`.
    public var scheme: String
    /// A name or address (an IPv6 address without brackets).
    public var host: String
    public var port: Int?
    public var region: String
    public var credentials: S3Credentials

    /// `endpoint`: `http://127.0.0.1:8000`, `https://s3.example.com`.
    public init(endpoint: String, region: String, credentials: S3Credentials) throws(S3Error) {
        guard let url = URL(string: endpoint), let scheme = url.scheme?.lowercased(),
            scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty
        else {
            throw S3Error(
                .configuration, operation: "configure", endpoint: endpoint,
                message: "the endpoint \"\(endpoint)\" is not an http:// or https:// URL")
        }
        guard url.path.isEmpty || url.path == "/", url.query == nil else {
            throw S3Error(
                .configuration, operation: "configure", endpoint: endpoint,
                message: "the endpoint \"\(endpoint)\" has a path or query: give only scheme, host and port")
        }
        self.scheme = scheme
        self.host = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        self.port = url.port
        self.region = region
        self.credentials = credentials
    }

    /// The `Host` header: the port only where it is not the scheme's.
    public var hostHeader: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        guard let port, port != (scheme == "https" ? 443 : 80) else { return host }
        return "\(host):\(port)"
    }

    public var endpoint: String { "\(scheme)://\(hostHeader)" }

    /// From the environment as the AWS tools read it:
    ///
    /// - `AWS_ENDPOINT_URL` (else the profile's `endpoint_url`, else AWS's
    ///   `https://s3.REGION.amazonaws.com`);
    /// - `AWS_REGION`, else `AWS_DEFAULT_REGION`, else the profile's `region`, else `us-east-1`;
    /// - `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) together,
    ///   else the profile's `aws_access_key_id`, `aws_secret_access_key`
    ///   (`aws_session_token`) from `~/.aws/credentials` or `~/.aws/config`.
    ///
    /// The profile is `AWS_PROFILE`, else `default`; the files are `AWS_SHARED_CREDENTIALS_FILE`
    /// and `AWS_CONFIG_FILE`, else `$HOME/.aws/credentials` and `$HOME/.aws/config`.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(S3Error) -> S3Configuration {
        func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        let profileName = value("AWS_PROFILE") ?? "default"
        let home = value("HOME") ?? NSHomeDirectory()
        let credentialsFile = value("AWS_SHARED_CREDENTIALS_FILE") ?? "\(home)/.aws/credentials"
        let configFile = value("AWS_CONFIG_FILE") ?? "\(home)/.aws/config"
        // In ~/.aws/config a profile's section is "[profile NAME]", the default one "[default]";
        // in ~/.aws/credentials it is "[NAME]". The credentials file wins where both say.
        let fromConfig = try AWSProfileFile.section(
            profileName == "default" ? "default" : "profile \(profileName)", in: configFile)
        let fromCredentials = try AWSProfileFile.section(profileName, in: credentialsFile)
        let profile = fromConfig.merging(fromCredentials) { $1 }

        let region = value("AWS_REGION") ?? value("AWS_DEFAULT_REGION") ?? profile["region"] ?? "us-east-1"
        let credentials: S3Credentials
        if let accessKey = value("AWS_ACCESS_KEY_ID"), let secret = value("AWS_SECRET_ACCESS_KEY") {
            credentials = S3Credentials(
                accessKeyID: accessKey, secretAccessKey: secret, sessionToken: value("AWS_SESSION_TOKEN"))
        } else if let accessKey = profile["aws_access_key_id"], let secret = profile["aws_secret_access_key"] {
            credentials = S3Credentials(
                accessKeyID: accessKey, secretAccessKey: secret, sessionToken: profile["aws_session_token"])
        } else {
            throw S3Error(
                .configuration, operation: "configure",
                message: "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give profile"
                    + " \"\(profileName)\" aws_access_key_id and aws_secret_access_key in \(credentialsFile)")
        }
        let endpoint = value("AWS_ENDPOINT_URL") ?? profile["endpoint_url"] ?? "https://s3.\(region).amazonaws.com"
        return try S3Configuration(endpoint: endpoint, region: region, credentials: credentials)
    }
}

/// The INI files of the AWS tools: `[section]` lines, `name = value` lines, `#` and `;`
/// comments. An indented line continues a nested block (`s3 =` settings), which is skipped.
enum AWSProfileFile {
    /// The section's settings; none when the file or the section is missing.
    static func section(_ name: String, in path: String) throws(S3Error) -> [String: String] {
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw S3Error(.configuration, operation: "configure", message: "cannot read \(path): \(error)")
        }
        return parse(text)[name] ?? [:]
    }

    static func parse(_ text: String) -> [String: [String: String]] {
        var sections: [String: [String: String]] = [:]
        var current: String?
        for rawLine in text.split(whereSeparator: \.isNewline) {
            if rawLine.first == " " || rawLine.first == "\t" { continue }
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                let name = line.dropFirst().dropLast().split(separator: " ", omittingEmptySubsequences: true)
                    .joined(separator: " ")
                current = name
                sections[name, default: [:]] = sections[name] ?? [:]
                continue
            }
            guard let current, let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            sections[current, default: [:]][key] = value
        }
        return sections
    }
}
