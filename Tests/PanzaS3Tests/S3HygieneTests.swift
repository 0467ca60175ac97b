import Foundation
import Panza
import Testing

@testable import PanzaS3

/// HTTP hygiene of the S3 client: what it refuses to do whatever the server says. Faults come from
/// loopback stand-ins (`LoopbackHTTPServer`); the real-server twins run against SeaweedFS.
@Suite(.timeLimit(.minutes(2)))
struct S3HygieneTests {
    func configuration(_ endpoint: String, signsPayload: Bool = true) throws -> S3Client.Configuration {
        let settings = try S3TestServer.settings()
        var configuration = S3Client.Configuration(
            bucket: "hygiene",
            endpoint: endpoint,
            credentials: settings.credentials,
            retry: .none
        )
        configuration.signsPayload = signsPayload
        configuration.requestTimeout = .seconds(5)
        return configuration
    }

    func client(_ endpoint: String, signsPayload: Bool = true) throws -> S3Client {
        try S3Client(configuration: self.configuration(endpoint, signsPayload: signsPayload))
    }

    @Test("A redirect is never followed: the signed request does not reach the other host")
    func redirectsRefused() async throws {
        let other = try LoopbackHTTPServer.canned(status: 200, body: "stolen")
        defer { other.close() }
        let redirecting = try LoopbackHTTPServer.canned(
            status: 301, headers: ["Location": "\(other.endpoint)/hygiene/k"])
        defer { redirecting.close() }
        let client = try self.client(redirecting.endpoint)
        let error = try await #require(throws: S3Error.self) { _ = try await client.get(key: "k") }
        #expect(error.httpStatus == 301)
        #expect(other.requests.isEmpty, "the redirect was followed")
        try await client.shutdown()
    }

    @Test("A listing that repeats its continuation token ends with an error, not a loop")
    func repeatedContinuationToken() async throws {
        let body = """
            <ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>same</NextContinuationToken>\
            <Contents><Key>v1/a</Key><Size>1</Size></Contents></ListBucketResult>
            """
        let server = try LoopbackHTTPServer.canned(status: 200, body: body)
        defer { server.close() }
        let client = try self.client(server.endpoint)
        let error = try await #require(throws: S3Error.self) { _ = try await client.listAll(prefix: "v1/") }
        #expect(error.code == .invalidResponse)
        #expect(server.requests.count == 2)
        try await client.shutdown()
    }

    @Test(
        "Listings decode '+' as a space (encoding-type=url), so collecting a busted id with a space deletes its objects"
    )
    func plusIsSpace() async throws {
        #expect(URIEncoding.decode("a+b%2Bc", plusIsSpace: true) == "a b+c")
        #expect(URIEncoding.decode("a+b") == "a+b")
        let body =
            "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>v1/my+id/x%2By</Key><Size>3</Size></Contents></ListBucketResult>"
        let server = try LoopbackHTTPServer.canned(status: 200, body: body)
        defer { server.close() }
        let client = try self.client(server.endpoint)
        #expect(try await client.listAll(prefix: "v1/") == ["v1/my id/x+y"])
        try await client.shutdown()

        // The real-server twin: an id with a space is busted, and its old generation collected.
        let bucket = S3TestServer.uniqueBucket()
        let real = try S3TestServer.client(bucket: bucket)
        try await real.createBucket()
        for key in ["v1/my id/a", "v1/my id/b+c", "v1/other/d"] { try await real.put(key: key, body: [1]) }
        #expect(Set(try await real.listAll(prefix: "v1/my id/")) == ["v1/my id/a", "v1/my id/b+c"])
        let tier = try S3Tier(configuration: S3TestServer.tierConfiguration(bucket: bucket))
        try await tier.apply([.removeNamespace("my id")])
        let plan = try await tier.planGarbageCollection(cutoffMilliseconds: 0)
        #expect(Set(plan.oldGenerations) == ["v1/my id/a", "v1/my id/b+c"])
        try await tier.collectGarbage(plan)
        #expect(try await tier.allObjectKeys() == ["v1/other/d"])
        try await tier.close()
        try await real.shutdown()
    }

    @Test("Over plain http a body is always signed, even with signsPayload off")
    func noUnsignedPayloadOverHTTP() async throws {
        let server = try LoopbackHTTPServer.canned(status: 200)
        defer { server.close() }
        let client = try self.client(server.endpoint, signsPayload: false)
        try await client.put(key: "k", body: Array("body".utf8))
        let header = server.requests.first?.headers["x-amz-content-sha256"]
        #expect(header != nil && header != "UNSIGNED-PAYLOAD")
        try await client.shutdown()
    }

    @Test("The tier creates the bucket only when HEAD says it is missing (least-privilege identities)")
    func createBucketAfterHead() async throws {
        // A bucket that exists but may not be listed: HEAD answers 403, and no CreateBucket follows.
        let server = try LoopbackHTTPServer.canned(status: 403, body: "<Error><Code>AccessDenied</Code></Error>")
        defer { server.close() }
        let settings = try S3TestServer.settings()
        var configuration = S3Tier.Configuration(
            bucket: "hygiene", prefix: "v1", endpoint: server.endpoint, credentials: settings.credentials)
        configuration.client.retry = .none
        let tier = try S3Tier(configuration: configuration)
        await #expect(throws: S3Error.self) {
            try await tier.apply([.store(key: CacheKey(rawValue: "k"), blob: [1], expiresAtMilliseconds: nil)])
        }
        let requests = server.requests.map { "\($0.method) \($0.target)" }
        #expect(requests.first == "HEAD /hygiene/", "\(requests)")
        #expect(!requests.contains("PUT /hygiene/"), "CreateBucket was sent: \(requests)")
        #expect(
            requests.contains { $0.hasPrefix("PUT /hygiene/v1/") },
            "the upload (or the prefix marker) was not tried: \(requests)")
        try await tier.close()

        // The real-server twin: a missing bucket is created once, after a HEAD.
        let bucket = S3TestServer.uniqueBucket()
        let real = try S3Tier(configuration: S3TestServer.tierConfiguration(bucket: bucket))
        #expect(try await !real.client.bucketExists())
        try await real.apply([.store(key: CacheKey(rawValue: "k"), blob: [1], expiresAtMilliseconds: nil)])
        #expect(try await real.client.bucketExists())
        #expect(try await real.allObjectKeys() == ["v1/_keys/k"])
        try await real.close()
    }

    @Test("Retry-After is honoured; a server asking for longer than maxRetryAfter fails the request at once")
    func retryAfter() async throws {
        let count = CallCounter()
        let server = try LoopbackHTTPServer { _ in
            count.increment() == 1
                ? LoopbackHTTPServer.response(
                    status: 503,
                    headers: ["Retry-After": "1"],
                    body: "<Error><Code>SlowDown</Code></Error>"
                )
                : LoopbackHTTPServer.response(status: 200, body: "ok")
        }
        defer { server.close() }
        var configuration = try self.configuration(server.endpoint)
        configuration.retry = .init(maxAttempts: 3, baseDelay: .milliseconds(1), maxDelay: .milliseconds(2))
        let client = try S3Client(configuration: configuration)
        #expect(try await client.get(key: "k") == Array("ok".utf8))
        let times = server.requests.map(\.receivedAt)
        #expect(times.count == 2)
        if times.count == 2 {
            #expect(times[1].timeIntervalSince(times[0]) >= 0.9, "the retry did not wait for Retry-After")
        }
        try await client.shutdown()

        let impatient = try LoopbackHTTPServer.canned(
            status: 503, headers: ["Retry-After": "3600"], body: "<Error><Code>SlowDown</Code></Error>")
        defer { impatient.close() }
        let other = try S3Client(
            configuration: {
                var c = configuration
                c.endpoint = impatient.endpoint
                return c
            }())
        let error = try await #require(throws: S3Error.self) { _ = try await other.get(key: "k") }
        #expect(error.retryAfter == .seconds(3600))
        #expect(impatient.requests.count == 1, "a request was retried past maxRetryAfter")
        try await other.shutdown()
    }

    @Test("RequestTimeTooSkewed corrects the signing clock from the server's Date and retries once")
    func clockSkew() async throws {
        let serverNow = Date().addingTimeInterval(3 * 3600)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        let dateHeader = formatter.string(from: serverNow)
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let server = try LoopbackHTTPServer { request in
            guard let signed = request.headers["x-amz-date"].flatMap(formatter.date(from:)),
                abs(signed.timeIntervalSince(serverNow)) < 300
            else {
                return LoopbackHTTPServer.response(
                    status: 403,
                    headers: ["Date": dateHeader],
                    body: "<Error><Code>RequestTimeTooSkewed</Code></Error>"
                )
            }
            return LoopbackHTTPServer.response(status: 200, body: "in time")
        }
        defer { server.close() }
        let client = try self.client(server.endpoint)  // retry: .none
        #expect(try await client.get(key: "k") == Array("in time".utf8))
        #expect(server.requests.count == 2)
        #expect(try await client.get(key: "k") == Array("in time".utf8), "the correction was not kept")
        #expect(server.requests.count == 3)
        try await client.shutdown()
    }

    @Test("A body longer than maxResponseBytes is refused from its Content-Length, and not retried")
    func boundedBodies() async throws {
        let server = try LoopbackHTTPServer.canned(status: 200, body: String(repeating: "x", count: 5_000))
        defer { server.close() }
        var configuration = try self.configuration(server.endpoint)
        configuration.maxResponseBytes = 1_000
        configuration.retry = .init(maxAttempts: 4, baseDelay: .milliseconds(1), maxDelay: .milliseconds(2))
        let client = try S3Client(configuration: configuration)
        let error = try await #require(throws: S3Error.self) { _ = try await client.get(key: "k") }
        #expect(error.code == .invalidResponse)
        #expect(server.requests.count == 1, "an oversize body was retried")
        try await client.shutdown()
    }

    @Test("A lookup's GET is retried at most once (readRetry); uploads keep the client's retries")
    func foregroundRetries() async throws {
        let server = try LoopbackHTTPServer.canned(status: 500, body: "<Error><Code>InternalError</Code></Error>")
        defer { server.close() }
        let settings = try S3TestServer.settings()
        var configuration = S3Tier.Configuration(
            bucket: "hygiene", prefix: "v1", endpoint: server.endpoint, credentials: settings.credentials)
        configuration.client.retry = .init(maxAttempts: 4, baseDelay: .milliseconds(1), maxDelay: .milliseconds(2))
        configuration.readRetry = .init(maxAttempts: 2, baseDelay: .milliseconds(1), maxDelay: .milliseconds(2))
        configuration.createsBucket = false
        let tier = try S3Tier(configuration: configuration)
        await #expect(throws: S3Error.self) { _ = try await tier.blob(forKey: CacheKey(rawValue: "k")) }
        // The lookup's requests (here the first read of the invalidation log, which fails before
        // the GET) are tried twice, not four times.
        #expect(server.requests.count == 2)
        await #expect(throws: S3Error.self) {
            try await tier.apply([.store(key: CacheKey(rawValue: "k"), blob: [1], expiresAtMilliseconds: nil)])
        }
        #expect(server.requests.count == 2 + 4)
        try await tier.close()
    }

    @Test("A retry budget: when every request fails, retries stop once the budget is spent; successes refill it")
    func retryBudget() async throws {
        let failing = try LoopbackHTTPServer.canned(status: 503, body: "<Error><Code>SlowDown</Code></Error>")
        defer { failing.close() }
        var configuration = try self.configuration(failing.endpoint)
        configuration.retry = .init(maxAttempts: 4, baseDelay: .milliseconds(1), maxDelay: .milliseconds(2))
        configuration.retryBudget = 10
        let client = try S3Client(configuration: configuration)
        await #expect(throws: S3Error.self) { _ = try await client.get(key: "a") }
        #expect(failing.requests.count == 3, "two retries (5 tokens each), then the budget is spent")
        await #expect(throws: S3Error.self) { _ = try await client.get(key: "b") }
        #expect(failing.requests.count == 4, "no retry without budget")
        try await client.shutdown()

        var quota = RetryQuota(capacity: 10)
        #expect(quota.acquire(after: S3Error(code: .transport, message: "reset")) == 10)
        #expect(quota.acquire(after: S3Error(code: .http, message: "503")) == nil)
        quota.recordSuccess(lastRetryCost: 10)
        #expect(quota.available == 10)
        quota.recordSuccess(lastRetryCost: nil)
        #expect(quota.available == 10, "never above capacity")
    }
}
