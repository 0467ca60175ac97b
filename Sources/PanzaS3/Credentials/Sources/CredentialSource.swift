/// One link of the credential chain.
protocol CredentialSource: Sendable {
    /// What it is, for logs and for the error that lists where the chain looked.
    var name: String { get }

    /// Credentials, or `nil` when this source is not set up here (the chain then asks the next).
    ///
    /// - Throws: when the source is set up but failed (the chain stops there, as the AWS SDKs do).
    func load() async throws -> S3Credentials?
}
