import Foundation

/// The JSON that the container endpoint, instance metadata and `credential_process` answer with.
struct CredentialJSON: Decodable {
    var version: Int?
    var code: String?
    var message: String?
    var accessKeyId: String?
    var secretAccessKey: String?
    /// `Token` from the container endpoint and instance metadata, `SessionToken` from a process.
    var token: String?
    var sessionToken: String?
    var expiration: String?

    enum CodingKeys: String, CodingKey {
        case version = "Version"
        case code = "Code"
        case message = "Message"
        case accessKeyId = "AccessKeyId"
        case secretAccessKey = "SecretAccessKey"
        case token = "Token"
        case sessionToken = "SessionToken"
        case expiration = "Expiration"
    }

    /// The credentials in `bytes`, from `source` (named in errors).
    static func credentials(from bytes: [UInt8], source: String) throws -> S3Credentials {
        let decoded: CredentialJSON
        do {
            decoded = try JSONDecoder().decode(CredentialJSON.self, from: Data(bytes))
        } catch {
            throw S3Error(
                code: .invalidResponse, message: "\(source) answered with something other than credentials JSON")
        }
        if let code = decoded.code, code != "Success" {
            throw S3Error(
                code: .missingCredentials, message: "\(source) answered \(code): \(decoded.message ?? "no message")")
        }
        guard let key = decoded.accessKeyId, let secret = decoded.secretAccessKey else {
            throw S3Error(code: .invalidResponse, message: "\(source) answered without AccessKeyId and SecretAccessKey")
        }
        return S3Credentials(
            accessKeyID: key,
            secretAccessKey: secret,
            sessionToken: decoded.token ?? decoded.sessionToken,
            expiration: decoded.expiration.flatMap(Self.parseDate)
        )
    }

    /// ISO 8601, with or without fractional seconds.
    static func parseDate(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }
}
