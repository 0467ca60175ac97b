import Foundation
import Panza
import Testing

@testable import PanzaS3

/// HTTP hygiene of the S3 client: what it refuses to do whatever the server says. Faults come from
/// loopback stand-ins (`LoopbackHTTPServer`); the real-server twins run against SeaweedFS.
@Suite(.timeLimit(.minutes(2)))
struct S3HygieneTests {
    func client(_ endpoint: String, signsPayload: Bool = true) throws -> S3Client {
        let settings = try S3TestServer.settings()
        var configuration = S3Client.Configuration(
            bucket: "hygiene",
            endpoint: endpoint,
            credentials: settings.credentials,
            retry: .none
        )
        configuration.signsPayload = signsPayload
        configuration.requestTimeout = .seconds(5)
        return try S3Client(configuration: configuration)
    }

    @Test("A redirect is never followed: the signed request does not reach the other host")
    func redirectsRefused() async throws {
        let other = try LoopbackHTTPServer.canned(status: 200, body: "stolen")
        defer { other.close() }
        let redirecting = try LoopbackHTTPServer.canned(status: 301, headers: ["Location": "\(other.endpoint)/hygiene/k"])
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

    @Test("Listings decode '+' as a space (encoding-type=url), so busting an id with a space deletes its objects")
    func plusIsSpace() async throws {
        #expect(URIEncoding.decode("a+b%2Bc", plusIsSpace: true) == "a b+c")
        #expect(URIEncoding.decode("a+b") == "a+b")
        let body = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>v1/my+id/x%2By</Key><Size>3</Size></Contents></ListBucketResult>"
        let server = try LoopbackHTTPServer.canned(status: 200, body: body)
        defer { server.close() }
        let client = try self.client(server.endpoint)
        #expect(try await client.listAll(prefix: "v1/") == ["v1/my id/x+y"])
        try await client.shutdown()

        // The real-server twin: an id with a space is busted for real.
        let bucket = S3TestServer.uniqueBucket()
        let real = try S3TestServer.client(bucket: bucket)
        try await real.createBucket()
        for key in ["v1/my id/a", "v1/my id/b+c", "v1/other/d"] { try await real.put(key: key, body: [1]) }
        #expect(Set(try await real.listAll(prefix: "v1/my id/")) == ["v1/my id/a", "v1/my id/b+c"])
        let tier = try S3Tier(configuration: S3TestServer.tierConfiguration(bucket: bucket))
        try await tier.apply([.removeNamespace("my id")])
        #expect(try await real.listAll(prefix: "v1/") == ["v1/other/d"])
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
        var configuration = S3Tier.Configuration(bucket: "hygiene", prefix: "v1", endpoint: server.endpoint, credentials: settings.credentials)
        configuration.client.retry = .none
        let tier = try S3Tier(configuration: configuration)
        await #expect(throws: S3Error.self) {
            try await tier.apply([.store(key: CacheKey(rawValue: "k"), blob: [1], expiresAtMilliseconds: nil)])
        }
        let requests = server.requests.map { "\($0.method) \($0.target)" }
        #expect(requests.first == "HEAD /hygiene/", "\(requests)")
        #expect(!requests.contains("PUT /hygiene/"), "CreateBucket was sent: \(requests)")
        #expect(requests.contains { $0.hasPrefix("PUT /hygiene/v1/_keys/k") }, "the upload was not tried: \(requests)")
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
}
