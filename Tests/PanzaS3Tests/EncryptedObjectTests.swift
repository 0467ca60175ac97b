import Foundation
import Panza
import Testing

@testable import PanzaS3

/// Encrypted entries against a real S3 server: they round-trip between machines that hold the
/// key, are unreadable without it, and cannot be altered, moved or cut short.
@Suite(.timeLimit(.minutes(2)))
struct EncryptedObjectTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    static let key = try! S3EncryptionKey(id: "team", bytes: Array(repeating: 4, count: 32))
    static let otherKey = try! S3EncryptionKey(id: "team", bytes: Array(repeating: 5, count: 32))

    func tier(
        bucket: String, encryption: [S3EncryptionKey]?, signing: [S3SigningKey]? = [],
        policy: S3Tier.SignaturePolicy = .required
    ) throws -> S3Tier.Configuration {
        var tier = try S3TestServer.tierConfiguration(bucket: bucket)
        tier.encryptionKeys = encryption
        tier.signingKeys = signing
        tier.signaturePolicy = policy
        tier.invalidationPollInterval = nil
        return tier
    }

    func cache(_ tier: S3Tier.Configuration) async throws -> TieredCache {
        var configuration = TieredCache.Configuration()
        configuration.remoteReadTimeout = .seconds(30)
        configuration.remoteBreaker.skipsTiersSlowerThanLoads = false
        configuration.memory = nil
        configuration.sqlite = .init(path: self.directory.path("\(UUID().uuidString).sqlite"))
        configuration.remote = try S3Tier(configuration: tier)
        configuration.modes = CacheModes()
        configuration.remoteCloseTimeout = .seconds(2)
        return try await TieredCache(configuration: configuration)
    }

    @Test(
        "Encrypted entries round-trip, small and large, signed or not; the bucket never holds the value in clear",
        arguments: [false, true])
    func roundTrip(signed: Bool) async throws {
        let bucket = S3TestServer.uniqueBucket("enc")
        let signing = signed ? [try S3SigningKey(id: "sig", secret: Array(repeating: 8, count: 32))] : []
        let tier = try self.tier(bucket: bucket, encryption: [Self.key], signing: signing)
        var generator = SplitMix64(seed: 5)
        let large = Data((0..<(2 << 20 + 777)).map { _ in UInt8(truncatingIfNeeded: generator.next() % 7) })
        let secret = "the quarterly numbers are secret"
        let writer = try await self.cache(tier)
        try await writer.set(secret, forKey: "small")
        try await writer.set(large, forKey: "large")
        try await writer.flush()
        try await writer.close()

        let client = try S3TestServer.client(bucket: bucket)
        let object = try #require(try await client.get(key: "v1/_keys/small"))
        #expect(object[6] == 1, "the encrypted flag is set")
        #expect(!Data(object).contains(Data(secret.utf8.prefix(10))), "the value is in the bucket in clear")

        let reader = try await self.cache(tier)
        #expect(try await reader.value(forKey: "small", as: String.self) == secret)
        #expect(try await reader.value(forKey: "large", as: Data.self) == large)
        #expect(reader.statistics.tiers["s3"]?.hits == 2)
        try await reader.close()
    }

    @Test("Without the key, with another key, tampered, moved or cut short: a miss, counted, never served")
    func refusals() async throws {
        let bucket = S3TestServer.uniqueBucket("enc")
        let tier = try self.tier(bucket: bucket, encryption: [Self.key])
        let writer = try await self.cache(tier)
        try await writer.set("secret", forKey: "k")
        var generator = SplitMix64(seed: 9)
        let random = Data((0..<(3 << 20)).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
        try await writer.set(random, forKey: "big")
        try await writer.flush()
        try await writer.close()
        let client = try S3TestServer.client(bucket: bucket)
        let object = try #require(try await client.get(key: "v1/_keys/k"))
        var tampered = object
        tampered[tampered.count - 20] ^= 1
        try await client.put(key: "v1/_keys/tampered", body: tampered)
        try await client.put(key: "v1/_keys/moved", body: object)
        try await client.put(key: "v1/_keys/cut", body: Array(object.dropLast(5)))
        let big = try #require(try await client.get(key: "v1/_keys/big"))
        try await client.put(key: "v1/_keys/big-cut", body: Array(big[0..<(big.count - (1 << 20) - 16)]))
        // In clear, where encryption is required.
        let plain = BlobEnvelope(contentType: .text, payload: Array("plain".utf8), createdAtMilliseconds: 1).encoded()
        try await client.put(key: "v1/_keys/plain", body: plain)

        let reader = try await self.cache(tier)
        #expect(try await reader.value(forKey: "k", as: String.self) == "secret")
        for key in ["tampered", "moved", "cut", "plain"] {
            #expect(try await reader.value(forKey: key, as: String.self) == nil, "\(key) was served")
        }
        #expect(try await reader.value(forKey: "big-cut", as: Data.self) == nil, "a large object cut short was served")
        #expect(reader.statistics.untrustedBlobs == 5)
        try await reader.close()

        for (name, keys) in [("no key", [S3EncryptionKey]()), ("another key", [Self.otherKey])] {
            let outsider = try await self.cache(try self.tier(bucket: bucket, encryption: keys))
            #expect(try await outsider.value(forKey: "k", as: String.self) == nil, "readable with \(name)")
            #expect(try await outsider.value(forKey: "big", as: Data.self) == nil, "readable with \(name)")
            #expect(outsider.statistics.untrustedBlobs == 2)
            try await outsider.close()
        }
        let migrating = try await self.cache(try self.tier(bucket: bucket, encryption: [Self.key], policy: .migrating))
        #expect(try await migrating.value(forKey: "plain", as: String.self) == "plain")
        try await migrating.close()
    }

    @Test("PANZA_S3_ENCRYPTION_KEYS parses; bad keys are clear errors")
    func keyParsing() throws {
        let generated = try S3EncryptionKey.generate(id: "new")
        #expect(try S3EncryptionKey.parse(" \(generated.environmentValue) ") == [generated])
        #expect(!"\(generated)".contains(generated.environmentValue.split(separator: ":")[1]))
        for bad in ["a:" + Data(repeating: 1, count: 16).base64EncodedString(), "a", "a:%%%", "bad id:AAAA"] {
            let error = #expect(throws: S3Error.self) { try S3EncryptionKey.parse(bad) }
            #expect(error?.code == .invalidConfiguration)
        }
    }
}
