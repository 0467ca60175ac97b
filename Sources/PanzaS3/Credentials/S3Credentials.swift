public import Foundation

/// An access key, its secret, an optional session token, and when they expire.
///
/// `description`, `debugDescription`, `dump` and `Mirror` never show the secret or the token.
public struct S3Credentials: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// The access key id (not a secret; shown in descriptions).
    public var accessKeyID: String
    /// The secret access key; redacted in every description.
    public var secretAccessKey: String
    /// The session token of temporary credentials; redacted in every description.
    public var sessionToken: String?
    /// When temporary credentials stop working; `nil` for long-term keys. An ``S3CredentialChain``
    /// fetches new ones before this moment.
    public var expiration: Date?

    /// Credentials from their parts.
    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil, expiration: Date? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
    }

    /// The access key id and expiration; the secret and token redacted.
    public var description: String {
        var text = "S3Credentials(accessKeyID: \(self.accessKeyID), secretAccessKey: \(S3Redaction.placeholder)"
        if self.sessionToken != nil { text += ", sessionToken: \(S3Redaction.placeholder)" }
        if let expiration { text += ", expiration: \(expiration)" }
        return text + ")"
    }

    /// Same as `description`.
    public var debugDescription: String { self.description }

    /// A mirror with the secret and token redacted, for `dump`.
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "accessKeyID": self.accessKeyID,
                "secretAccessKey": S3Redaction.placeholder,
                "sessionToken": self.sessionToken == nil ? "nil" : S3Redaction.placeholder,
                "expiration": self.expiration as Any,
            ],
            displayStyle: .struct
        )
    }

    /// Finds long-term credentials without any request: `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), then static keys of the profile `profile`
    /// (or `AWS_PROFILE`, or `default`) in the shared credentials and config files.
    ///
    /// This is the synchronous part of the chain; ``S3CredentialChain`` follows the whole of it
    /// (web identity, roles, `credential_process`, containers, EC2 instance metadata) and refreshes
    /// temporary credentials. ``S3Client`` uses the chain.
    ///
    /// - Throws: ``S3Error`` with code ``S3Error/Code/missingCredentials`` naming where it looked.
    public static func resolve(
        profile: String? = nil,
        environment: [String: String]? = nil
    ) throws -> S3Credentials {
        let environment = environment ?? ProcessInfo.processInfo.environment
        if profile == nil, let credentials = EnvironmentCredentialSource.credentials(in: environment) {
            return credentials
        }
        let files = SharedConfigFiles(environment: environment)
        let name = profile ?? environment["AWS_PROFILE"] ?? "default"
        if let credentials = files.profile(name).staticCredentials {
            return credentials
        }
        throw S3Error(
            code: .missingCredentials,
            message: "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add profile '\(name)' "
                + "to \(files.credentialsPath) or \(files.configPath)"
        )
    }
}
