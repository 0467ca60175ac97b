import Foundation
import Testing

@testable import Panza
@testable import PanzaS3

/// Hostile bytes from the bucket, against the real test server: whatever an object holds, a reader
/// allocates no more than its limits, serves nothing it should not, and deletes nothing.
@Suite(.timeLimit(.minutes(2)))
struct HostileBucketTests {
    /// A valid envelope (checksum recomputed) of 4 KiB of text whose header claims `claimed` bytes.
    static func envelope(claiming claimed: UInt32) -> [UInt8] {
        var bytes = BlobEnvelope(
            contentType: .text, payload: Array(repeating: UInt8(ascii: "a"), count: 4096), createdAtMilliseconds: 1
        )
        .encoded()
        withUnsafeBytes(of: claimed.littleEndian) { bytes.replaceSubrange(12..<16, with: $0) }
        let end = bytes.count - 8
        let checksum = XXHash64.hash(bytes[0..<end])
        withUnsafeBytes(of: checksum.littleEndian) { bytes.replaceSubrange(end..<bytes.count, with: $0) }
        return bytes
    }

    @Test(
        "An object that lies about its size, is not an envelope, or comes from a newer Panza is a miss; it stays in the bucket",
        arguments: ["claims 512 MiB", "not an envelope", "newer format", "empty"]
    )
    func hostileObject(kind: String) async throws {
        let directory = try TemporaryDirectory()
        let bucket = S3TestServer.uniqueBucket("hostile")
        var newer = BlobEnvelope(contentType: .text, payload: Array("v".utf8), createdAtMilliseconds: 1).encoded()
        newer[4] = 9
        let bytes: [UInt8] =
            switch kind {
            case "claims 512 MiB": Self.envelope(claiming: 512 << 20)
            case "not an envelope": Array("<html>a proxy's error page</html>".utf8)
            case "newer format": newer
            default: []
            }
        let client = try S3TestServer.client(bucket: bucket)
        try await client.createBucket()
        try await client.put(key: "v1/_keys/k", body: bytes)

        var configuration = TieredCache.Configuration()
        configuration.sqlite = .init(path: directory.path("reader.sqlite"))
        configuration.remote = try S3Tier(configuration: S3TestServer.tierConfiguration(bucket: bucket))
        configuration.modes = CacheModes()
        configuration.remoteReadTimeout = .seconds(30)
        configuration.maxValueBytes = 1 << 20
        let cache = try await TieredCache(configuration: configuration)
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        #expect(cache.statistics.corruptBlobs == 1)
        try await cache.flush()
        #expect(try await client.get(key: "v1/_keys/k") == bytes, "a reader deleted or rewrote the shared object")
        #expect(try await cache.value(forKey: "k") { "from the loader" } == "from the loader")
        try await cache.close()
        // The loader's value replaced it (a write of ours); before that, nothing was deleted.
        let stored = try #require(try await client.get(key: "v1/_keys/k"))
        #expect(try BlobEnvelope.decode(stored).payload == Array("from the loader".utf8))
        try await client.shutdown()
    }
}
