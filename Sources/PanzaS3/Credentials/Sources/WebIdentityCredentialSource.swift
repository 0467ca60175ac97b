import Foundation

/// A web identity token in a file (EKS service accounts, GitHub Actions OIDC), exchanged with STS
/// `AssumeRoleWithWebIdentity` for temporary credentials. The file is read at every refresh, since
/// its token is rotated.
struct WebIdentityCredentialSource: CredentialSource {
    let tokenFile: String
    let roleARN: String
    let sessionName: String
    let sts: STSClient
    var name: String { "web identity token (\(self.tokenFile))" }

    /// From `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN` and `AWS_ROLE_SESSION_NAME`.
    init?(environment: [String: String], sts: STSClient) {
        guard let tokenFile = environment["AWS_WEB_IDENTITY_TOKEN_FILE"], !tokenFile.isEmpty,
            let roleARN = environment["AWS_ROLE_ARN"], !roleARN.isEmpty
        else { return nil }
        self.init(tokenFile: tokenFile, roleARN: roleARN, sessionName: environment["AWS_ROLE_SESSION_NAME"], sts: sts)
    }

    init(tokenFile: String, roleARN: String, sessionName: String?, sts: STSClient) {
        self.tokenFile = tokenFile
        self.roleARN = roleARN
        self.sessionName = sessionName ?? Self.defaultSessionName()
        self.sts = sts
    }

    func load() async throws -> S3Credentials? {
        guard let token = try? String(contentsOfFile: self.tokenFile, encoding: .utf8) else {
            throw S3Error(
                code: .missingCredentials, message: "the web identity token file \(self.tokenFile) cannot be read")
        }
        return try await self.sts.assumeRoleWithWebIdentity(
            roleARN: self.roleARN,
            sessionName: self.sessionName,
            token: token.trimmingCharacters(in: .whitespacesAndNewlines)
        )
    }

    static func defaultSessionName() -> String {
        "panza-\(Int(Date().timeIntervalSince1970))"
    }
}
