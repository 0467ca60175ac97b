import Foundation
import NIOHTTP1

/// The ECS task role and EKS Pod Identity endpoint: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on
/// `169.254.170.2`) or `AWS_CONTAINER_CREDENTIALS_FULL_URI`, with the authorization token of
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read at every refresh) or
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
struct ContainerCredentialSource: CredentialSource {
    let url: String
    let tokenFile: String?
    let token: String?
    let http: CredentialHTTP
    var name: String { "container credentials endpoint" }

    /// The ECS agent's address, for relative URIs.
    static let ecsHost = "http://169.254.170.2"

    init?(environment: [String: String], http: CredentialHTTP) throws {
        if let relative = environment["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"], !relative.isEmpty {
            self.url = Self.ecsHost + (relative.hasPrefix("/") ? relative : "/" + relative)
        } else if let full = environment["AWS_CONTAINER_CREDENTIALS_FULL_URI"], !full.isEmpty {
            guard Self.isAllowed(full) else {
                throw S3Error(
                    code: .invalidConfiguration,
                    message:
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback or the ECS/EKS agent address"
                )
            }
            self.url = full
        } else {
            return nil
        }
        self.tokenFile = environment["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        self.token = environment["AWS_CONTAINER_AUTHORIZATION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        self.http = http
    }

    /// Credentials travel in clear over http only to the machine itself or to the agents.
    static func isAllowed(_ url: String) -> Bool {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
            let host = components.host?.lowercased()
        else { return false }
        if scheme == "https" { return true }
        guard scheme == "http" else { return false }
        return host == "localhost" || host.hasPrefix("127.") || host == "::1" || host == "[::1]"
            || host == "169.254.170.2" || host == "169.254.170.23" || host == "fd00:ec2::23" || host == "[fd00:ec2::23]"
    }

    func load() async throws -> S3Credentials? {
        var headers: [(String, String)] = []
        if let tokenFile {
            guard let token = try? String(contentsOfFile: tokenFile, encoding: .utf8) else {
                throw S3Error(
                    code: .missingCredentials,
                    message: "the container authorization token file \(tokenFile) cannot be read")
            }
            headers.append(("authorization", token.trimmingCharacters(in: .whitespacesAndNewlines)))
        } else if let token {
            headers.append(("authorization", token))
        }
        let response = try await self.http.send(.GET, self.url, headers: headers)
        guard response.status == 200 else {
            throw S3Error(
                code: .missingCredentials,
                message: "the container credentials endpoint answered HTTP \(response.status)",
                httpStatus: response.status)
        }
        return try CredentialJSON.credentials(from: response.body, source: "the container credentials endpoint")
    }
}
