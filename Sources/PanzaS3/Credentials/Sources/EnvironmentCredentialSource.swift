import Foundation

/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` (with
/// `AWS_CREDENTIAL_EXPIRATION` when set), as read when the configuration was made.
struct EnvironmentCredentialSource: CredentialSource {
    let environment: [String: String]
    var name: String { "environment variables" }

    func load() async throws -> S3Credentials? { Self.credentials(in: self.environment) }

    static func credentials(in environment: [String: String]) -> S3Credentials? {
        guard let key = environment["AWS_ACCESS_KEY_ID"], let secret = environment["AWS_SECRET_ACCESS_KEY"],
            !key.isEmpty, !secret.isEmpty
        else { return nil }
        return S3Credentials(
            accessKeyID: key,
            secretAccessKey: secret,
            sessionToken: environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 },
            expiration: environment["AWS_CREDENTIAL_EXPIRATION"].flatMap(CredentialJSON.parseDate)
        )
    }
}
