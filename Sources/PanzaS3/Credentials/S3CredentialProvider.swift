/// Where an ``S3Client`` gets the credentials it signs with, before every request.
///
/// ``S3CredentialChain`` is the standard one (the AWS SDKs' order, refreshing); give your own
/// through ``S3Client/Configuration/credentialProvider`` to fetch them from elsewhere (a vault,
/// a sidecar). Implementations cache: `credentials()` is called for every request.
public protocol S3CredentialProvider: Sendable {
    /// Credentials valid now.
    ///
    /// - Throws: when none can be had; ``S3Error/Code/missingCredentials`` says so best.
    func credentials() async throws -> S3Credentials

    /// Forgets cached credentials: S3 answered `ExpiredToken`, so the next call must fetch anew.
    func invalidate() async
}

extension S3CredentialProvider {
    /// Does nothing: a provider without a cache has nothing to forget.
    public func invalidate() async {}
}

/// Fixed credentials, as given in the configuration.
struct StaticCredentialProvider: S3CredentialProvider {
    let fixed: S3Credentials

    func credentials() async throws -> S3Credentials { self.fixed }
}
