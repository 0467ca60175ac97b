import Foundation
import Panza
import Testing

@testable import PanzaS3

/// Key layouts that cannot collide: caches whose prefixes nest see each other through their
/// marker objects, against the real test server.
@Suite(.timeLimit(.minutes(2)))
struct S3LayoutTests {
    func tier(bucket: String, prefix: String) throws -> S3Tier {
        var configuration = try S3TestServer.tierConfiguration(bucket: bucket, prefix: prefix)
        configuration.client.retry = .none
        return try S3Tier(configuration: configuration)
    }

    func store(_ key: String, namespace: String = "") -> CacheTierOperation {
        .store(
            key: CacheKey(namespace: namespace, rawValue: namespace.isEmpty ? key : "\(namespace)/\(key)"),
            blob: Array(key.utf8), expiresAtMilliseconds: nil)
    }

    @Test("A prefix inside another cache's prefix is refused for reads and writes, naming both")
    func nestedInsideAnother() async throws {
        let bucket = S3TestServer.uniqueBucket("layout")
        let outer = try self.tier(bucket: bucket, prefix: "team")
        try await outer.apply([self.store("a")])
        #expect(try await outer.client.head(key: "team/_panza") != nil, "the marker is written before the first write")

        let inner = try self.tier(bucket: bucket, prefix: "team/v1")
        let readError = try await #require(throws: S3Error.self) {
            _ = try await inner.blob(forKey: CacheKey(rawValue: "x"))
        }
        #expect(readError.code == .invalidConfiguration && readError.message.contains("'team'"))
        await #expect(throws: S3Error.self) { try await inner.apply([self.store("b")]) }
        #expect(
            try await inner.client.head(key: "team/v1/_keys/b") == nil, "nothing was written inside the other prefix")
        try await outer.close()
        try await inner.close()
    }

    @Test("Removing everything under a prefix leaves alone a nested cache that was there first")
    func purgeSparesNested() async throws {
        let bucket = S3TestServer.uniqueBucket("layout")
        let inner = try self.tier(bucket: bucket, prefix: "team/v1")
        try await inner.apply([self.store("kept"), self.store("h1", namespace: "llm")])
        let outer = try self.tier(bucket: bucket, prefix: "team")
        try await outer.apply([self.store("gone"), self.store("h2", namespace: "forecast")])
        try await outer.purgeAll()
        #expect(try await outer.allObjectKeys().sorted() == ["team/v1/_keys/kept", "team/v1/llm/h1"])
        #expect(try await inner.allObjectKeys().sorted() == ["team/v1/_keys/kept", "team/v1/llm/h1"])
        #expect(try await outer.client.head(key: "team/_panza") != nil, "a purge keeps the prefix's own marker")
        try await outer.close()
        try await inner.close()
    }

    @Test("A raw memoize key's '/', '.' and '..' stay inside one segment of the object key")
    func rawKeySegments() async throws {
        let bucket = S3TestServer.uniqueBucket("layout")
        let tier = try self.tier(bucket: bucket, prefix: "v1")
        let key = CacheKey(namespace: "f", rawValue: "f/../x/./y")
        #expect(tier.objectKey(for: key) == "v1/f/..%2Fx%2F.%2Fy")
        let hashed = CacheKey(namespace: "f", rawValue: "f/" + String(repeating: "ab", count: 32))
        #expect(tier.objectKey(for: hashed) == "v1/f/" + String(repeating: "ab", count: 32), "a hex hash is unchanged")
        try await tier.apply([.store(key: key, blob: [1, 2, 3], expiresAtMilliseconds: nil)])
        #expect(try await tier.blob(forKey: key) == [1, 2, 3])
        #expect(try await tier.allObjectKeys() == ["v1/f/..%2Fx%2F.%2Fy"])
        try await tier.close()
    }
}
