import Foundation

/// The shared AWS files: `~/.aws/credentials` and `~/.aws/config` (or `AWS_SHARED_CREDENTIALS_FILE`
/// and `AWS_CONFIG_FILE`), read when asked so that edits are seen at the next refresh.
struct SharedConfigFiles: Sendable {
    /// One profile's settings: the config file's section, overlaid by the credentials file's.
    struct Profile: Sendable {
        var name: String
        var values: [String: String]

        var exists: Bool { !self.values.isEmpty }
        subscript(_ key: String) -> String? { self.values[key].flatMap { $0.isEmpty ? nil : $0 } }

        var staticCredentials: S3Credentials? {
            guard let key = self["aws_access_key_id"], let secret = self["aws_secret_access_key"] else { return nil }
            return S3Credentials(accessKeyID: key, secretAccessKey: secret, sessionToken: self["aws_session_token"])
        }
    }

    var credentialsPath: String
    var configPath: String

    init(environment: [String: String]) {
        let home = environment["HOME"] ?? NSHomeDirectory()
        self.credentialsPath = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? "\(home)/.aws/credentials"
        self.configPath = environment["AWS_CONFIG_FILE"] ?? "\(home)/.aws/config"
    }

    func profile(_ name: String) -> Profile {
        var values: [String: String] = [:]
        if let text = try? String(contentsOfFile: self.configPath, encoding: .utf8) {
            values = INIFile.section(name == "default" ? "default" : "profile \(name)", in: text)
            if values.isEmpty, name == "default" { values = INIFile.section("profile default", in: text) }
        }
        if let text = try? String(contentsOfFile: self.credentialsPath, encoding: .utf8) {
            values.merge(INIFile.section(name, in: text)) { $1 }
        }
        return Profile(name: name, values: values)
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
