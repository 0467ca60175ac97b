import Foundation
import Logging
import Panza
import Synchronization
import Testing

@testable import PanzaS3

/// No secret in any description, dump, mirror, log line or error.
@Suite(.timeLimit(.minutes(1)))
struct SecretsTests {
    static let secret = "s3cr3t-\(UUID().uuidString)"
    static let token = "t0k3n-\(UUID().uuidString)"
    static let environment = [
        "AWS_ACCESS_KEY_ID": "AKIATEST",
        "AWS_SECRET_ACCESS_KEY": Self.secret,
        "AWS_SESSION_TOKEN": Self.token,
        "DATABASE_PASSWORD": "unrelated-\(Self.secret)",
        "PATH": "/usr/bin",
    ]

    /// Every text a user could print of `value`.
    static func texts(_ value: Any) -> [String] {
        var dumped = ""
        dump(value, to: &dumped)
        return [
            "\(value)", String(reflecting: value), dumped,
            "\(Mirror(reflecting: value).children.map { "\($0.value)" })",
        ]
    }

    static func expectNoSecret(_ texts: [String], _ what: String) {
        for text in texts {
            #expect(!text.contains(Self.secret), "\(what) shows the secret: \(text)")
            #expect(!text.contains(Self.token), "\(what) shows the session token: \(text)")
        }
    }

    @Test("Credentials and configurations redact the secret and the token, and keep nothing else of the environment")
    func configurations() throws {
        let credentials = S3Credentials(accessKeyID: "AKIATEST", secretAccessKey: Self.secret, sessionToken: Self.token)
        Self.expectNoSecret(Self.texts(credentials), "S3Credentials")
        let client = S3Client.Configuration(bucket: "b", credentials: credentials, environment: Self.environment)
        Self.expectNoSecret(Self.texts(client), "S3Client.Configuration")
        #expect(client.environment["PATH"] == nil && client.environment["DATABASE_PASSWORD"] == nil)
        #expect(client.environment["AWS_ACCESS_KEY_ID"] == "AKIATEST")
        var tier = S3Tier.Configuration(bucket: "b", prefix: "v1", credentials: credentials)
        tier.client = client
        Self.expectNoSecret(Self.texts(tier), "S3Tier.Configuration")
        let resolved = try S3Credentials.resolve(environment: Self.environment)
        #expect(resolved.secretAccessKey == Self.secret, "the secret must still be usable")
        Self.expectNoSecret(Self.texts(resolved), "resolved credentials")
    }

    @Test("Errors and log lines of a refused request carry no secret")
    func errorsAndLogs() async throws {
        let server = try LoopbackHTTPServer.canned(
            status: 403, body: "<Error><Code>AccessDenied</Code><Message>no</Message></Error>")
        defer { server.close() }
        let lines = LogLines()
        var logger = Logger(label: "secrets", factory: { _ in CapturingHandler(lines: lines) })
        logger.logLevel = .trace
        var configuration = S3Tier.Configuration(
            bucket: "secrets",
            prefix: "v1",
            endpoint: server.endpoint,
            credentials: S3Credentials(accessKeyID: "AKIATEST", secretAccessKey: Self.secret, sessionToken: Self.token)
        )
        configuration.client.retry = .none
        let tier = try S3Tier(configuration: configuration, logger: logger)
        var cacheConfiguration = TieredCache.Configuration()
        cacheConfiguration.remote = tier
        cacheConfiguration.modes = CacheModes()
        cacheConfiguration.writeBehind.maxAttempts = 1
        let cache = try await TieredCache(configuration: cacheConfiguration, logger: logger)
        _ = try await cache.value(forKey: "k") { "loaded" }
        try? await cache.flush()
        let error = try await #require(throws: S3Error.self) { _ = try await tier.client.get(key: "k") }
        Self.expectNoSecret(Self.texts(error), "S3Error")
        try? await cache.close()
        let logged = lines.all
        #expect(!logged.isEmpty, "nothing was logged")
        Self.expectNoSecret(logged, "a log line")
        // The request did carry the token, as it must.
        #expect(server.requests.contains { $0.headers["x-amz-security-token"] == Self.token })
    }
}

extension SecretsTests {
    @Test("The credential chain's description, its logs and the errors of a failed role exchange carry no secret")
    func credentialChain() async throws {
        let home = try TemporaryDirectory()
        let tokenFile = home.path("token")
        try Self.token.write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let sts = try LoopbackHTTPServer.canned(
            status: 400,
            body:
                "<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>rejected</Message></Error></ErrorResponse>"
        )
        defer { sts.close() }
        let lines = LogLines()
        var logger = Logger(label: "secrets", factory: { _ in CapturingHandler(lines: lines) })
        logger.logLevel = .trace
        let environment = [
            "HOME": home.url.path, "AWS_EC2_METADATA_DISABLED": "true", "AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile,
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/r", "AWS_ENDPOINT_URL_STS": sts.endpoint,
        ]
        let chain = try S3CredentialChain(environment: environment, logger: logger)
        Self.expectNoSecret(Self.texts(chain), "S3CredentialChain")
        let error = try await #require(throws: S3Error.self) { _ = try await chain.credentials() }
        Self.expectNoSecret(Self.texts(error), "the STS error")
        Self.expectNoSecret(lines.all, "a log line")
        #expect(sts.requests.first?.text.contains(Self.token) == true, "the token did go to STS, in the body")

        let fromEnvironment = try S3CredentialChain(
            environment: Self.environment.merging(["HOME": home.url.path]) { $1 }, logger: logger)
        let credentials = try await fromEnvironment.credentials()
        Self.expectNoSecret(Self.texts(fromEnvironment) + Self.texts(credentials) + lines.all, "the environment chain")
    }

    @Test("expectedBucketOwner travels as x-amz-expected-bucket-owner on every request")
    func expectedBucketOwner() async throws {
        let server = try LoopbackHTTPServer.canned(status: 404, body: "<Error><Code>NoSuchKey</Code></Error>")
        defer { server.close() }
        var configuration = S3Client.Configuration(
            bucket: "owner-check", endpoint: server.endpoint,
            credentials: S3Credentials(accessKeyID: "AKIATEST", secretAccessKey: Self.secret), retry: .none
        )
        configuration.expectedBucketOwner = "123456789012"
        let client = try S3Client(configuration: configuration)
        _ = try await client.get(key: "k")
        _ = try await client.head(key: "k")
        try await client.shutdown()
        #expect(server.requests.count == 2)
        #expect(server.requests.allSatisfy { $0.headers["x-amz-expected-bucket-owner"] == "123456789012" })
    }
}

final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { self.lines.withLock { $0.append(line) } }
    var all: [String] { self.lines.withLock { $0 } }
}

struct CapturingHandler: LogHandler {
    let lines: LogLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        self.lines.append("\(event.level) \(event.message) \(event.metadata ?? [:]) \(self.metadata)")
    }
}
