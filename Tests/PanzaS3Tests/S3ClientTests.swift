import Foundation
import MetricsTestKit
import PanzaS3
import Testing

/// S3Client against a real S3 server (SeaweedFS, signatures checked).
@Suite(.timeLimit(.minutes(2)))
struct S3ClientTests {
    @Test("Put, get, head and delete round-trip; a missing key is nil")
    func roundTrip() async throws {
        let bucket = S3TestServer.uniqueBucket()
        let client = try S3TestServer.client(bucket: bucket)
        try await client.createBucket()
        try await client.createBucket()  // an existing bucket of ours is fine
        let body = Array("hello, panza".utf8)
        try await client.put(key: "a/b c+d", body: body, contentType: "text/plain")
        #expect(try await client.get(key: "a/b c+d") == body)
        #expect(try await client.head(key: "a/b c+d")?.size == body.count)
        #expect(try await client.get(key: "missing") == nil)
        #expect(try await client.head(key: "missing") == nil)
        try await client.delete(key: "a/b c+d")
        #expect(try await client.get(key: "a/b c+d") == nil)
        try await client.delete(key: "a/b c+d")  // deleting a missing key succeeds
        try await client.shutdown()
    }

    @Test("A wrong secret and an unknown access key are rejected with S3's code, and not retried")
    func badCredentials() async throws {
        let bucket = S3TestServer.uniqueBucket()
        let good = try S3TestServer.client(bucket: bucket)
        try await good.createBucket()
        let settings = try S3TestServer.settings()
        let cases = [
            (
                S3Credentials(accessKeyID: settings.credentials.accessKeyID, secretAccessKey: "not-the-secret"),
                "SignatureDoesNotMatch"
            ),
            (
                S3Credentials(accessKeyID: "AKIAUNKNOWN", secretAccessKey: settings.credentials.secretAccessKey),
                "InvalidAccessKeyId"
            ),
        ]
        for (credentials, expectedCode) in cases {
            let client = try S3TestServer.client(bucket: bucket, credentials: credentials)
            let error = try await #require(throws: S3Error.self) { _ = try await client.get(key: "k") }
            #expect(error.code == .http)
            #expect(error.s3Code == expectedCode)
            #expect(error.httpStatus == 403)
            #expect(!error.isRetryable)
            #expect(!error.description.contains(credentials.secretAccessKey))
            try await client.shutdown()
        }
        try await good.shutdown()
    }

    @Test("If-None-Match: * keeps an existing object")
    func conditionalPut() async throws {
        let client = try S3TestServer.client(bucket: S3TestServer.uniqueBucket())
        try await client.createBucket()
        try await client.put(key: "once", body: [1], ifNoneMatch: true)
        let error = try await #require(throws: S3Error.self) {
            try await client.put(key: "once", body: [2], ifNoneMatch: true)
        }
        #expect(error.code == .preconditionFailed)
        #expect(try await client.get(key: "once") == [1])
        try await client.shutdown()
    }

    @Test("Listing follows pagination, and DeleteObjects deletes in batches of 1,000")
    func listAndBatchDelete() async throws {
        let client = try S3TestServer.client(bucket: S3TestServer.uniqueBucket())
        try await client.createBucket()
        let keys = (0..<1_050).map { "p/\($0)" }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for chunk in stride(from: 0, to: keys.count, by: 150) {
                group.addTask {
                    for key in keys[chunk..<min(chunk + 150, keys.count)] { try await client.put(key: key, body: [1]) }
                }
            }
            try await group.waitForAll()
        }
        let first = try await client.list(prefix: "p/", maxKeys: 400)
        #expect(first.keys.count == 400)
        #expect(first.continuationToken != nil)
        let all = try await client.listAll(prefix: "p/")
        #expect(Set(all) == Set(keys))
        try await client.delete(keys: all)
        #expect(try await client.listAll(prefix: "p/").isEmpty)
        try await client.shutdown()
    }

    @Test("Large bodies go up in parallel parts and come back whole in parallel ranges")
    func multipart() async throws {
        let settings = try S3TestServer.settings()
        let metrics = TestMetrics()
        var configuration = S3Client.Configuration(
            bucket: S3TestServer.uniqueBucket(), endpoint: settings.endpoint, credentials: settings.credentials)
        configuration.multipartThreshold = 6 << 20
        configuration.multipartPartSize = 5 << 20
        configuration.metricsFactory = metrics
        let client = try S3Client(configuration: configuration)
        try await client.createBucket()
        var generator = SystemRandomNumberGenerator()
        let body = (0..<(12 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try await client.put(key: "big", body: body)
        #expect(try await client.get(key: "big") == body)
        func count(_ operation: String, _ status: String) throws -> Int64 {
            try metrics.expectCounter(
                "panza_s3_requests_total",
                [("bucket", configuration.bucket), ("operation", operation), ("status", status)]
            ).totalValue
        }
        #expect(try count("UploadPart", "200") == 3)
        #expect(try count("GetObject", "206") == 3, "one GET per 5 MiB range")
        // Edge sizes: exactly one range, one byte more, and an empty object.
        for size in [5 << 20, (5 << 20) + 1, 0, 1] {
            let object = Array(body.prefix(size))
            try await client.put(key: "edge-\(size)", body: object)
            #expect(try await client.get(key: "edge-\(size)") == object, "\(size) bytes")
        }
        try await client.shutdown()
    }

    @Test("The Content-Range total is parsed, and nonsense is refused")
    func contentRange() {
        #expect(S3Client.totalLength(contentRange: "bytes 0-5242879/12582912") == 12_582_912)
        #expect(S3Client.totalLength(contentRange: "bytes 0-0/1") == 1)
        #expect(S3Client.totalLength(contentRange: "bytes 0-9/*") == nil)
        #expect(S3Client.totalLength(contentRange: nil) == nil)
    }

    @Test("A dead endpoint gives a transport error after the configured retries")
    func deadEndpoint() async throws {
        let settings = try S3TestServer.settings()
        let client = try S3Client(
            configuration: .init(
                bucket: "panza-dead",
                endpoint: "http://127.0.0.1:9",
                credentials: settings.credentials,
                connectTimeout: .seconds(1),
                retry: .init(maxAttempts: 2, baseDelay: .milliseconds(10))
            ))
        let error = try await #require(throws: S3Error.self) { _ = try await client.get(key: "k") }
        #expect(error.code == .transport)
        #expect(error.isRetryable)
        try await client.shutdown()
    }

    @Test("Invalid settings are refused up front")
    func invalidConfiguration() throws {
        let credentials = S3Credentials(accessKeyID: "a", secretAccessKey: "b")
        for configuration in [
            S3Client.Configuration(bucket: "No_Such", credentials: credentials),
            S3Client.Configuration(bucket: "ok-bucket", endpoint: "ftp://example.com", credentials: credentials),
        ] {
            #expect(throws: S3Error.self) { _ = try S3Client(configuration: configuration) }
        }
    }

    @Test("Credentials come from the environment, then the shared files, with AWS_PROFILE")
    func credentialChain() throws {
        let directory = try TemporaryDirectory()
        try """
        [default]
        aws_access_key_id = DEFAULTKEY
        aws_secret_access_key = defaultsecret
        [team]
        aws_access_key_id = TEAMKEY
        aws_secret_access_key = teamsecret
        aws_session_token = teamtoken
        """.write(toFile: directory.path("credentials"), atomically: true, encoding: .utf8)
        try """
        [profile other]
        aws_access_key_id = CONFIGKEY
        aws_secret_access_key = configsecret
        """.write(toFile: directory.path("config"), atomically: true, encoding: .utf8)
        let files = [
            "AWS_SHARED_CREDENTIALS_FILE": directory.path("credentials"), "AWS_CONFIG_FILE": directory.path("config"),
        ]
        let fromEnvironment = try S3Credentials.resolve(
            environment: files.merging(["AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "envsecret"]) { $1 })
        #expect(fromEnvironment.accessKeyID == "ENVKEY")
        #expect(try S3Credentials.resolve(environment: files).accessKeyID == "DEFAULTKEY")
        let team = try S3Credentials.resolve(environment: files.merging(["AWS_PROFILE": "team"]) { $1 })
        #expect(team == S3Credentials(accessKeyID: "TEAMKEY", secretAccessKey: "teamsecret", sessionToken: "teamtoken"))
        #expect(try S3Credentials.resolve(profile: "other", environment: files).accessKeyID == "CONFIGKEY")
        let error = try #require(throws: S3Error.self) {
            try S3Credentials.resolve(profile: "nobody", environment: files)
        }
        #expect(error.code == .missingCredentials)
    }

    @Test("Requests are counted by operation and status in panza_s3_requests_total")
    func requestMetrics() async throws {
        let settings = try S3TestServer.settings()
        let metrics = TestMetrics()
        var configuration = S3Client.Configuration(
            bucket: S3TestServer.uniqueBucket(), endpoint: settings.endpoint, credentials: settings.credentials)
        configuration.metricsFactory = metrics
        let client = try S3Client(configuration: configuration)
        try await client.createBucket()
        try await client.put(key: "k", body: [1])
        _ = try await client.get(key: "k")
        _ = try await client.get(key: "missing")
        try await client.shutdown()
        func count(_ operation: String, _ status: String) throws -> Int64 {
            try metrics.expectCounter(
                "panza_s3_requests_total",
                [("bucket", configuration.bucket), ("operation", operation), ("status", status)]
            ).totalValue
        }
        #expect(try count("CreateBucket", "200") == 1)
        #expect(try count("PutObject", "200") == 1)
        #expect(try count("GetObject", "206") == 1, "a GET asks for the first range")
        #expect(try count("GetObject", "404") == 1)
    }
}
