import Crypto
import Foundation
import PanzaS3
import Testing

@testable import Panza

/// Signed entries against a real S3 server: what a cache with keys accepts, and what anyone who can
/// write to the bucket cannot make it serve.
@Suite(.timeLimit(.minutes(2)))
struct SignedObjectTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    static let keyOne = try! S3SigningKey(id: "one", secret: Array(repeating: 1, count: 32))
    static let keyTwo = try! S3SigningKey(id: "two", secret: Array(repeating: 2, count: 32))
    /// An attacker's key that reuses the id of key one.
    static let impostor = try! S3SigningKey(id: "one", secret: Array(repeating: 9, count: 32))

    func tier(
        bucket: String, prefix: String = "v1", keys: [S3SigningKey]?, policy: S3Tier.SignaturePolicy = .required
    ) throws -> S3Tier.Configuration {
        var tier = try S3TestServer.tierConfiguration(bucket: bucket, prefix: prefix)
        tier.signingKeys = keys
        tier.signaturePolicy = policy
        tier.invalidationPollInterval = nil
        return tier
    }

    func cache(_ file: String, _ tier: S3Tier.Configuration, memory: Bool = false) async throws -> TieredCache {
        var configuration = TieredCache.Configuration()
        configuration.remoteReadTimeout = .seconds(30)
        configuration.remoteBreaker.skipsTiersSlowerThanLoads = false
        configuration.memory = memory ? .init() : nil
        configuration.sqlite = .init(path: self.directory.path(file))
        configuration.remote = try S3Tier(configuration: tier)
        configuration.modes = CacheModes()
        configuration.remoteCloseTimeout = .seconds(2)
        return try await TieredCache(configuration: configuration)
    }

    /// Writes `value` under plain key `key` through a cache of its own and closes it.
    func write(_ value: String, key: String, _ tier: S3Tier.Configuration) async throws {
        let writer = try await self.cache("writer-\(UUID().uuidString).sqlite", tier)
        try await writer.set(value, forKey: key)
        try await writer.flush()
        try await writer.close()
    }

    func objectKey(_ key: String, _ tier: S3Tier.Configuration) throws -> String {
        try S3Tier(configuration: tier).objectKey(for: CacheKey(rawValue: key))
    }

    @Test("Signed entries flow; unsigned, tampered, re-keyed and foreign objects are misses, counted, never copied")
    func forgeriesAreRefused() async throws {
        let bucket = S3TestServer.uniqueBucket("sig")
        let signed = try self.tier(bucket: bucket, keys: [Self.keyOne])
        let client = try S3TestServer.client(bucket: bucket)
        try await self.write("genuine", key: "k", signed)
        let genuine = try #require(try await client.get(key: try self.objectKey("k", signed)))
        #expect(genuine[7] == 1, "the object carries signature scheme 1 (HMAC-SHA256)")

        // Unsigned: a well-formed envelope an attacker (or an old machine) wrote.
        let unsigned = BlobEnvelope(contentType: .text, payload: Array("FORGED".utf8), createdAtMilliseconds: 1)
            .encoded()
        try await client.put(key: try self.objectKey("unsigned", signed), body: unsigned)
        // Tampered: the genuine object with one payload byte changed and its checksum recomputed.
        var tampered = genuine
        let signatureLength = Int(tampered[44])
        tampered[BlobEnvelope.headerSize + 4] ^= 0x20
        Self.recomputeChecksum(&tampered, signatureLength: signatureLength)
        try await client.put(key: try self.objectKey("tampered", signed), body: tampered)
        // Re-keyed: the genuine object copied under another key.
        try await client.put(key: try self.objectKey("copied", signed), body: genuine)
        // Foreign: signed with the right key, but for another bucket at the same object key.
        let otherBucket = S3TestServer.uniqueBucket("sig")
        try await self.write("foreign", key: "foreign", try self.tier(bucket: otherBucket, keys: [Self.keyOne]))
        let foreign = try #require(
            try await S3TestServer.client(bucket: otherBucket).get(key: try self.objectKey("foreign", signed)))
        try await client.put(key: try self.objectKey("foreign", signed), body: foreign)
        // Forged: "FORGED" signed with a key that reuses the id but not the secret.
        try await self.write("FORGED", key: "impostor", try self.tier(bucket: otherBucket, keys: [Self.impostor]))
        let impostor = try #require(
            try await S3TestServer.client(bucket: otherBucket).get(key: try self.objectKey("impostor", signed)))
        try await client.put(key: try self.objectKey("impostor", signed), body: impostor)
        // Another prefix: signed for v2, placed under v1.
        try await self.write(
            "other prefix", key: "prefixed", try self.tier(bucket: bucket, prefix: "v2", keys: [Self.keyOne]))
        let prefixed = try #require(
            try await client.get(
                key: try self.objectKey("prefixed", try self.tier(bucket: bucket, prefix: "v2", keys: nil))))
        try await client.put(key: try self.objectKey("prefixed", signed), body: prefixed)

        let reader = try await self.cache("reader.sqlite", signed)
        #expect(try await reader.value(forKey: "k", as: String.self) == "genuine")
        let refused = ["unsigned", "tampered", "copied", "foreign", "impostor", "prefixed"]
        for key in refused {
            #expect(try await reader.value(forKey: key, as: String.self) == nil, "\(key) was served")
        }
        #expect(reader.statistics.untrustedBlobs == refused.count)
        // Never copied into SQLite: asked again, they are refused by S3 again, not served locally.
        for key in refused { #expect(try await reader.value(forKey: key, as: String.self) == nil) }
        #expect(reader.statistics.untrustedBlobs == 2 * refused.count)
        #expect(reader.statistics.tiers["s3"]?.errors == 0, "a refusal is not an outage")
        // Never deleted by a reader.
        #expect(try await client.get(key: try self.objectKey("tampered", signed)) == tampered)
        try await reader.close()

        // Migrating: unsigned objects are read too; tampered ones still are not.
        let migrating = try await self.cache(
            "migrating.sqlite", try self.tier(bucket: bucket, keys: [Self.keyOne], policy: .migrating))
        #expect(try await migrating.value(forKey: "unsigned", as: String.self) == "FORGED")
        #expect(try await migrating.value(forKey: "tampered", as: String.self) == nil)
        try await migrating.close()

        // A machine without keys trusts the bucket: it reads signed entries as they are.
        let trusting = try await self.cache("trusting.sqlite", try self.tier(bucket: bucket, keys: []))
        #expect(try await trusting.value(forKey: "k", as: String.self) == "genuine")
        try await trusting.close()
    }

    @Test("Rotation: add the new key everywhere, sign with it, drop the old one, without a miss while both are known")
    func rotation() async throws {
        let bucket = S3TestServer.uniqueBucket("sig")
        try await self.write("old", key: "old", try self.tier(bucket: bucket, keys: [Self.keyOne]))
        // Step 1: every machine knows both keys, the old one still signs.
        let both = try await self.cache("both.sqlite", try self.tier(bucket: bucket, keys: [Self.keyOne, Self.keyTwo]))
        #expect(try await both.value(forKey: "old", as: String.self) == "old")
        try await both.close()
        // Step 2: the new key signs; entries signed with the old one are still served.
        try await self.write("new", key: "new", try self.tier(bucket: bucket, keys: [Self.keyTwo, Self.keyOne]))
        let moved = try await self.cache(
            "moved.sqlite", try self.tier(bucket: bucket, keys: [Self.keyTwo, Self.keyOne]))
        #expect(try await moved.value(forKey: "old", as: String.self) == "old")
        #expect(try await moved.value(forKey: "new", as: String.self) == "new")
        #expect(moved.statistics.untrustedBlobs == 0)
        try await moved.close()
        // Step 3: the old key is dropped; what it signed is no longer trusted.
        let dropped = try await self.cache("dropped.sqlite", try self.tier(bucket: bucket, keys: [Self.keyTwo]))
        #expect(try await dropped.value(forKey: "new", as: String.self) == "new")
        #expect(try await dropped.value(forKey: "old", as: String.self) == nil)
        #expect(dropped.statistics.untrustedBlobs == 1)
        try await dropped.close()
    }

    @Test("Ed25519: CI signs with the private key; a developer machine with the public key reads and never writes")
    func publicKeyReaders() async throws {
        let bucket = S3TestServer.uniqueBucket("sig")
        let ci = try S3SigningKey.generate(id: "ci", algorithm: .ed25519)
        try await self.write("built by CI", key: "artifact", try self.tier(bucket: bucket, keys: [ci]))
        let laptopTier = try self.tier(bucket: bucket, keys: [ci.verifyingOnly])
        #expect(try S3Tier(configuration: laptopTier).isWritable == false)
        let laptop = try await self.cache("laptop.sqlite", laptopTier)
        #expect(try await laptop.value(forKey: "artifact", as: String.self) == "built by CI")
        // The laptop's own results stay local.
        try await laptop.set("laptop value", forKey: "poison")
        try await laptop.flush()
        try await laptop.close()
        let client = try S3TestServer.client(bucket: bucket)
        #expect(try await client.get(key: try self.objectKey("poison", laptopTier)) == nil)
        // Another Ed25519 key under CI's id is refused; so is an HMAC signature under it.
        let impostor = try S3SigningKey.generate(id: "ci", algorithm: .ed25519)
        try await self.write("poisoned", key: "artifact2", try self.tier(bucket: bucket, keys: [impostor]))
        try await self.write(
            "poisoned", key: "artifact3",
            try self.tier(bucket: bucket, keys: [try S3SigningKey(id: "ci", secret: Array(repeating: 3, count: 32))]))
        let again = try await self.cache("laptop2.sqlite", laptopTier)
        #expect(try await again.value(forKey: "artifact2", as: String.self) == nil)
        #expect(try await again.value(forKey: "artifact3", as: String.self) == nil)
        #expect(again.statistics.untrustedBlobs == 2)
        try await again.close()
    }

    @Test("Large signed values stream both ways; a tampered large object is refused")
    func largeSignedValues() async throws {
        let bucket = S3TestServer.uniqueBucket("sig")
        let tier = try self.tier(bucket: bucket, keys: [Self.keyOne])
        var generator = SplitMix64(seed: 11)
        let value = Data((0..<(3 << 20 + 12_345)).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
        let writer = try await self.cache("writer.sqlite", tier)
        try await writer.set(value, forKey: "big")
        try await writer.flush()
        try await writer.close()
        let reader = try await self.cache("reader.sqlite", tier)
        #expect(try await reader.value(forKey: "big", as: Data.self) == value)
        #expect(reader.statistics.tiers["s3"]?.hits == 1)
        try await reader.close()

        let client = try S3TestServer.client(bucket: bucket)
        var object = try #require(try await client.get(key: try self.objectKey("big", tier)))
        let signatureLength = Int(object[44])
        object[object.count / 2] ^= 1
        Self.recomputeChecksum(&object, signatureLength: signatureLength)
        try await client.put(key: try self.objectKey("big", tier), body: object)
        let second = try await self.cache("second.sqlite", tier)
        #expect(try await second.value(forKey: "big", as: Data.self) == nil)
        #expect(second.statistics.untrustedBlobs == 1)
        try await second.close()
    }

    @Test("PANZA_S3_SIGNING_KEYS parses; bad keys are clear errors that never print a secret")
    func keyParsing() throws {
        let secret = Data(repeating: 5, count: 32).base64EncodedString()
        let ed = try S3SigningKey.generate(id: "ci", algorithm: .ed25519)
        let keys = try S3SigningKey.parse(
            " a:\(secret) , \(ed.environmentValue),\(ed.verifyingOnly.environmentValue)".replacingOccurrences(
                of: "ci:ed25519-public", with: "ci-pub:ed25519-public"))
        #expect(keys.map(\.id) == ["a", "ci", "ci-pub"])
        #expect(keys.map(\.canSign) == [true, true, false])
        #expect(!"\(keys)".contains(secret))
        for bad in [
            "a:notbase64!", "a:\(Data(repeating: 1, count: 16).base64EncodedString())", "a b:\(secret)", "a:x:y:z",
            "a:\(secret),a:\(secret)",
        ] {
            let error = #expect(throws: S3Error.self) { try S3SigningKey.parse(bad) }
            #expect(error?.code == .invalidConfiguration)
            #expect(!(error?.message.contains(secret) ?? true))
        }
        let generated = try S3SigningKey.generate(id: "new")
        #expect(try S3SigningKey.parse(generated.environmentValue) == [generated])
    }

    /// Recomputes the XXH64 of an envelope whose signature scheme and length are set (taken as zero).
    static func recomputeChecksum(_ object: inout [UInt8], signatureLength: Int) {
        var unsigned = Array(object[0..<(object.count - signatureLength - 8)])
        unsigned[7] = 0
        for index in 44..<48 { unsigned[index] = 0 }
        let checksum = XXHash64.hash(unsigned)
        withUnsafeBytes(of: checksum.littleEndian) { bytes in
            for index in 0..<8 { object[object.count - signatureLength - 8 + index] = bytes[index] }
        }
    }
}
