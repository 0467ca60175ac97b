import ArgumentParser
import Foundation
import Panza
import PanzaS3

/// The S3 tier's options, shared by every command. S3 is used when a bucket is given.
struct S3Options: ParsableArguments {
    @Option(name: .customLong("s3-bucket"), help: "The S3 bucket of the shared tier (default: $PANZA_S3_BUCKET).")
    var bucket: String?

    @Option(name: .customLong("s3-prefix"), help: "The prefix of the cache's objects (default: panza).")
    var prefix: String?

    @Option(
        name: .customLong("s3-endpoint"),
        help: "The S3 endpoint URL (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, AWS).")
    var endpoint: String?

    @Option(
        name: .customLong("s3-region"),
        help: "The bucket's region (default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's region, or us-east-1).")
    var region: String?

    @Option(
        name: .customLong("s3-profile"), help: "The profile of the shared AWS files (default: $AWS_PROFILE or default)."
    )
    var profile: String?

    var resolvedBucket: String? {
        self.bucket ?? ProcessInfo.processInfo.environment["PANZA_S3_BUCKET"]
    }

    /// The S3 tier, or `nil` when no bucket is given.
    ///
    /// - Parameter requestTimeout: the longest one request may take; the client's default when `nil`.
    func makeTier(requestTimeout: Duration? = nil) throws -> S3Tier? {
        guard let bucket = self.resolvedBucket else { return nil }
        let environment = ProcessInfo.processInfo.environment
        var configuration = S3Tier.Configuration(
            bucket: bucket,
            prefix: self.prefix ?? environment["PANZA_S3_PREFIX"] ?? "panza",
            region: self.region,
            endpoint: self.endpoint,
            profile: self.profile
        )
        if let requestTimeout {
            configuration.client.requestTimeout = requestTimeout
            configuration.client.retry = .init(maxAttempts: 2, baseDelay: .milliseconds(100))
        }
        return try S3Tier(configuration: configuration)
    }

    /// These options as command-line arguments, to hand to a child process.
    var arguments: [String] {
        var arguments: [String] = []
        if let bucket = self.resolvedBucket { arguments += ["--s3-bucket", bucket] }
        if let prefix { arguments += ["--s3-prefix", prefix] }
        if let endpoint { arguments += ["--s3-endpoint", endpoint] }
        if let region { arguments += ["--s3-region", region] }
        if let profile { arguments += ["--s3-profile", profile] }
        return arguments
    }
}
