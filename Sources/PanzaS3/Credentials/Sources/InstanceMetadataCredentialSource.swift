import Foundation
import NIOHTTP1

/// The EC2 instance profile, through instance metadata with IMDSv2 session tokens (never the
/// tokenless IMDSv1). `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it; `AWS_EC2_METADATA_DISABLED=true`
/// turns it off. Off EC2 the token request finds nobody within a second, and the chain goes on.
struct InstanceMetadataCredentialSource: CredentialSource {
    let endpoint: String
    let http: CredentialHTTP
    var name: String { "EC2 instance metadata (\(self.endpoint))" }

    init?(environment: [String: String], http: CredentialHTTP) {
        if environment["AWS_EC2_METADATA_DISABLED"]?.lowercased() == "true" { return nil }
        var endpoint =
            environment["AWS_EC2_METADATA_SERVICE_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 }
            ?? "http://169.254.169.254"
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        self.endpoint = endpoint
        var http = http
        http.timeout = .seconds(1)
        self.http = http
    }

    func load() async throws -> S3Credentials? {
        let tokenResponse: CredentialHTTP.Response
        do {
            tokenResponse = try await self.http.send(
                .PUT, self.endpoint + "/latest/api/token", headers: [("x-aws-ec2-metadata-token-ttl-seconds", "21600")]
            )
        } catch let error as S3Error where error.code == .transport {
            return nil  // not on EC2 (or metadata unreachable): the chain goes on
        }
        guard tokenResponse.status == 200 else {
            // 403: metadata is turned off for this instance; 404/405: not an IMDSv2 server.
            return nil
        }
        let token = [("x-aws-ec2-metadata-token", tokenResponse.text.trimmingCharacters(in: .whitespacesAndNewlines))]
        let base = self.endpoint + "/latest/meta-data/iam/security-credentials/"
        let roles = try await self.http.send(.GET, base, headers: token)
        guard roles.status == 200,
            let role = roles.text.split(whereSeparator: \.isNewline).first.map({
                $0.trimmingCharacters(in: .whitespaces)
            }),
            !role.isEmpty
        else {
            throw S3Error(
                code: .missingCredentials,
                message: "this EC2 instance has no instance profile (metadata answered HTTP \(roles.status))")
        }
        let answer = try await self.http.send(.GET, base + URIEncoding.encode(role), headers: token)
        guard answer.status == 200 else {
            throw S3Error(
                code: .missingCredentials, message: "instance metadata answered HTTP \(answer.status) for role \(role)",
                httpStatus: answer.status)
        }
        return try CredentialJSON.credentials(from: answer.body, source: "EC2 instance metadata")
    }
}
