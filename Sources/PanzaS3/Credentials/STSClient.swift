import Crypto
import Foundation
import NIOHTTP1

/// The two STS actions of the credential chain: `AssumeRoleWithWebIdentity` (unsigned: the token is
/// the proof) and `AssumeRole` (signed with the source credentials).
struct STSClient: Sendable {
    let http: CredentialHTTP
    /// `AWS_ENDPOINT_URL_STS`, then `AWS_ENDPOINT_URL`, then the regional AWS endpoint.
    let endpoint: String
    let region: String

    init(http: CredentialHTTP, region: String, environment: [String: String]) {
        self.http = http
        self.region = region
        self.endpoint =
            environment["AWS_ENDPOINT_URL_STS"] ?? environment["AWS_ENDPOINT_URL"]
            ?? "https://sts.\(region).amazonaws.com"
    }

    func assumeRoleWithWebIdentity(roleARN: String, sessionName: String, token: String) async throws -> S3Credentials {
        let form = Self.form([
            ("Action", "AssumeRoleWithWebIdentity"), ("Version", "2011-06-15"), ("RoleArn", roleARN),
            ("RoleSessionName", sessionName), ("WebIdentityToken", token),
        ])
        let response = try await self.http.send(
            .POST, self.endpoint + "/",
            headers: [("content-type", "application/x-www-form-urlencoded; charset=utf-8")],
            body: form
        )
        return try Self.credentials(from: response, action: "AssumeRoleWithWebIdentity", roleARN: roleARN)
    }

    func assumeRole(
        roleARN: String,
        sessionName: String,
        externalID: String?,
        durationSeconds: Int?,
        using source: S3Credentials
    ) async throws -> S3Credentials {
        var parameters = [
            ("Action", "AssumeRole"), ("Version", "2011-06-15"), ("RoleArn", roleARN), ("RoleSessionName", sessionName),
        ]
        if let externalID { parameters.append(("ExternalId", externalID)) }
        if let durationSeconds { parameters.append(("DurationSeconds", "\(durationSeconds)")) }
        let form = Self.form(parameters)
        guard let components = URLComponents(string: self.endpoint), let host = components.host else {
            throw S3Error(code: .invalidConfiguration, message: "'\(self.endpoint)' is not an STS endpoint URL")
        }
        let hostHeader = host + (components.port.map { ":\($0)" } ?? "")
        let contentType = "application/x-www-form-urlencoded; charset=utf-8"
        let signer = SigV4Signer(credentials: source, region: self.region, service: "sts")
        let signed = signer.signedHeaders(
            for: SigV4Signer.Request(
                method: "POST", host: hostHeader, path: "/", headers: [("content-type", contentType)],
                payloadHash: SigV4Signer.hex(SHA256.hash(data: form))
            ),
            date: Date()
        )
        let response = try await self.http.send(
            .POST, self.endpoint + "/",
            headers: [("host", hostHeader), ("content-type", contentType)] + signed.map { ($0.name, $0.value) },
            body: form
        )
        return try Self.credentials(from: response, action: "AssumeRole", roleARN: roleARN)
    }

    private static func form(_ parameters: [(String, String)]) -> [UInt8] {
        Array(parameters.map { "\(URIEncoding.encode($0.0))=\(URIEncoding.encode($0.1))" }.joined(separator: "&").utf8)
    }

    private static func credentials(from response: CredentialHTTP.Response, action: String, roleARN: String) throws
        -> S3Credentials
    {
        let text = response.text
        guard response.status == 200 else {
            throw S3Error(
                code: .http,
                message:
                    "STS \(action) for \(roleARN) failed: \(S3XML.value(of: "Message", in: text) ?? "HTTP \(response.status)")",
                s3Code: S3XML.value(of: "Code", in: text),
                httpStatus: response.status,
                requestID: S3XML.value(of: "RequestId", in: text)
            )
        }
        guard let block = S3XML.blocks("Credentials", in: text).first,
            let key = S3XML.value(of: "AccessKeyId", in: block),
            let secret = S3XML.value(of: "SecretAccessKey", in: block)
        else {
            throw S3Error(
                code: .invalidResponse, message: "STS \(action) for \(roleARN) answered without credentials",
                httpStatus: 200)
        }
        return S3Credentials(
            accessKeyID: key,
            secretAccessKey: secret,
            sessionToken: S3XML.value(of: "SessionToken", in: block),
            expiration: S3XML.value(of: "Expiration", in: block).flatMap(CredentialJSON.parseDate)
        )
    }
}
