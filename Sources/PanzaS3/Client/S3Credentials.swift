public import Foundation

/// An access key, its secret, and an optional session token.
///
/// `description`, `debugDescription`, `dump` and `Mirror` never show the secret or the token.
public struct S3Credentials: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String {
        "S3Credentials(accessKeyID: \(self.accessKeyID), secretAccessKey: <redacted>\(self.sessionToken == nil ? "" : ", sessionToken: <redacted>"))"
    }

    public var debugDescription: String { self.description }

    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "accessKeyID": self.accessKeyID,
                "secretAccessKey": S3Redaction.placeholder,
                "sessionToken": self.sessionToken == nil ? "nil" : S3Redaction.placeholder,
            ],
            displayStyle: .struct
        )
    }

    /// Finds credentials the way the AWS tools do, in order:
    /// 1. `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`);
    /// 2. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, or `~/.aws/credentials`), then
    ///    the config file (`AWS_CONFIG_FILE`, or `~/.aws/config`), for the profile `profile`, or
    ///    `AWS_PROFILE`, or `default`.
    ///
    /// - Throws: ``S3Error`` with code ``S3Error/Code/missingCredentials`` naming where it looked.
    public static func resolve(
        profile: String? = nil,
        environment: [String: String]? = nil
    ) throws -> S3Credentials {
        let environment = environment ?? ProcessInfo.processInfo.environment
        if profile == nil, let key = environment["AWS_ACCESS_KEY_ID"], let secret = environment["AWS_SECRET_ACCESS_KEY"],
            !key.isEmpty, !secret.isEmpty
        {
            return S3Credentials(accessKeyID: key, secretAccessKey: secret, sessionToken: environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
        }
        let profile = profile ?? environment["AWS_PROFILE"] ?? "default"
        let home = environment["HOME"] ?? NSHomeDirectory()
        let credentialsPath = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? "\(home)/.aws/credentials"
        let configPath = environment["AWS_CONFIG_FILE"] ?? "\(home)/.aws/config"
        let files: [(path: String, section: String)] = [
            (credentialsPath, profile),
            (configPath, profile == "default" ? "default" : "profile \(profile)"),
        ]
        for (path, section) in files {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let values = INIFile.section(section, in: text)
            if let key = values["aws_access_key_id"], let secret = values["aws_secret_access_key"] {
                return S3Credentials(accessKeyID: key, secretAccessKey: secret, sessionToken: values["aws_session_token"])
            }
        }
        throw S3Error(
            code: .missingCredentials,
            message: "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add profile '\(profile)' to \(credentialsPath) or \(configPath)"
        )
    }

    /// The `region` of a profile in the config file, if any.
    static func region(profile: String?, environment: [String: String]) -> String? {
        let profile = profile ?? environment["AWS_PROFILE"] ?? "default"
        let home = environment["HOME"] ?? NSHomeDirectory()
        let configPath = environment["AWS_CONFIG_FILE"] ?? "\(home)/.aws/config"
        guard let text = try? String(contentsOfFile: configPath, encoding: .utf8) else { return nil }
        return INIFile.section(profile == "default" ? "default" : "profile \(profile)", in: text)["region"]
    }
}

/// The few rules of the AWS shared files: `[section]` headers, `key = value` lines, `#`/`;` comments.
enum INIFile {
    static func section(_ name: String, in text: String) -> [String: String] {
        var current: String?
        var values: [String: String] = [:]
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                current = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                continue
            }
            guard current == name, let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            values[key] = value
        }
        return values
    }
}
