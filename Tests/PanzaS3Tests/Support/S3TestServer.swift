import Foundation
import Panza
import PanzaS3
@_exported import PanzaTestSupport
import Testing

/// The S3 server the test command started (SeaweedFS with signature checks on).
///
/// Tests that need it fail, never skip, when it is missing: run them with `scripts/test`.
enum S3TestServer {
    struct Settings {
        var endpoint: String
        var credentials: S3Credentials
    }

    static func settings() throws -> Settings {
        let environment = ProcessInfo.processInfo.environment
        guard let endpoint = environment["PANZA_TEST_S3_ENDPOINT"],
            let access = environment["PANZA_TEST_S3_ACCESS_KEY"],
            let secret = environment["PANZA_TEST_S3_SECRET_KEY"]
        else {
            throw S3Error(
                code: .invalidConfiguration,
                message:
                    "no S3 test server: PANZA_TEST_S3_ENDPOINT is not set. Run the tests with scripts/test, which starts SeaweedFS"
            )
        }
        return Settings(endpoint: endpoint, credentials: S3Credentials(accessKeyID: access, secretAccessKey: secret))
    }

    /// A bucket name of its own for each test.
    static func uniqueBucket(_ label: String = "t") -> String {
        "panza-\(label)-\(UUID().uuidString.prefix(8).lowercased())"
    }

    static func client(
        bucket: String, credentials: S3Credentials? = nil, endpoint: String? = nil,
        retry: S3Client.Configuration.RetryPolicy = .init()
    ) throws -> S3Client {
        let settings = try settings()
        return try S3Client(
            configuration: .init(
                bucket: bucket,
                endpoint: endpoint ?? settings.endpoint,
                credentials: credentials ?? settings.credentials,
                retry: retry
            ))
    }

    static func tierConfiguration(bucket: String, prefix: String = "v1") throws -> S3Tier.Configuration {
        let settings = try settings()
        return S3Tier.Configuration(
            bucket: bucket, prefix: prefix, endpoint: settings.endpoint, credentials: settings.credentials)
    }
}
