import Foundation
import Panza
import Testing

@testable import PanzaS3

/// Garbage collection by last use on the real S3 server, through the package API and `panza gc`.
@Suite(.timeLimit(.minutes(2)))
struct GarbageCollectionTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000) }

    /// An envelope of `text`, made `offset` milliseconds from now (before or after a bust, without waiting).
    func envelope(_ text: String, madeIn offset: Int64 = 0) -> [UInt8] {
        BlobEnvelope(contentType: .text, payload: Array(text.utf8), createdAtMilliseconds: Self.now() + offset)
            .encoded()
    }

    @Test(
        "gc deletes unused entries, busted generations and old log entries; never an entry refreshed after the cut-off")
    func collectsExactly() async throws {
        let bucket = S3TestServer.uniqueBucket("gc")
        var configuration = try S3TestServer.tierConfiguration(bucket: bucket)
        configuration.invalidationPollInterval = nil
        configuration.refreshAfter = .zero  // readers refresh whatever they are served
        let writer = try S3Tier(configuration: configuration)
        let f1 = CacheKey(namespace: "f", rawValue: "f/" + String(repeating: "1", count: 64))
        let f2 = CacheKey(namespace: "f", rawValue: "f/" + String(repeating: "2", count: 64))
        try await writer.apply([
            .store(key: CacheKey(rawValue: "used"), blob: self.envelope("used"), expiresAtMilliseconds: nil),
            .store(key: CacheKey(rawValue: "unused"), blob: self.envelope("unused"), expiresAtMilliseconds: nil),
            .store(key: CacheKey(rawValue: "gone"), blob: self.envelope("gone"), expiresAtMilliseconds: nil),
            .store(key: f1, blob: self.envelope("f1"), expiresAtMilliseconds: nil),
        ])
        let f1Old = writer.objectKey(for: f1)
        try await writer.apply([.remove(CacheKey(rawValue: "gone")), .removeNamespace("f")])
        try await writer.apply([.store(key: f2, blob: self.envelope("f2", madeIn: 1_000), expiresAtMilliseconds: nil)])
        let f2Current = writer.objectKey(for: f2)
        #expect(f2Current.contains("/~"), "after the bust, f's objects live in a new generation: \(f2Current)")

        // S3 dates objects to the second: the cut-off is the next second, and the refresh comes after it.
        let cutoff = (Self.now() / 1_000 + 1) * 1_000
        try await Task.sleep(for: .milliseconds(cutoff - Self.now() + 20))
        let reader = try S3Tier(configuration: configuration)
        #expect(try await reader.blob(forKey: CacheKey(rawValue: "used")) != nil)
        let refreshed = try await self.waitUntil {
            try await writer.client.listAllObjects(prefix: "v1/_keys/used").first?.lastModifiedMilliseconds ?? 0
                >= cutoff
        }
        #expect(refreshed, "the reader did not refresh the object it was served")

        let plan = try await writer.planGarbageCollection(cutoffMilliseconds: cutoff)
        #expect(Set(plan.unused) == ["v1/_keys/unused", f2Current])
        #expect(plan.oldGenerations == [f1Old])
        #expect(plan.logEntries.count == 1 && plan.logEntries[0].contains("/key."), "\(plan.logEntries)")
        try await writer.collectGarbage(plan)
        #expect(try await writer.allObjectKeys() == ["v1/_keys/used"])
        let log = try await writer.client.listAll(prefix: "v1/_invalidations/")
        #expect(log.count == 2 && log.contains { $0.contains("/id.") } && log.contains { $0.contains("/horizon/") })
        // The id's generation survives the collection: a new reader still looks in the new one.
        let late = try S3Tier(configuration: configuration)
        let invalidations = try await late.newInvalidations()
        #expect(late.objectKey(for: f2) == f2Current)
        #expect(invalidations.contains(CacheInvalidation(scope: .all, createdBeforeMilliseconds: cutoff)))
        for tier in [writer, reader, late] { try await tier.close() }
    }

    @Test("panza gc --dry-run lists and deletes nothing; without it, deletes; bad ages are usage errors")
    func command() async throws {
        let bucket = S3TestServer.uniqueBucket("gc")
        var configuration = try S3TestServer.tierConfiguration(bucket: bucket)
        configuration.invalidationPollInterval = nil
        let tier = try S3Tier(configuration: configuration)
        let key = CacheKey(namespace: "f", rawValue: "f/" + String(repeating: "a", count: 64))
        try await tier.apply([.store(key: key, blob: self.envelope("v"), expiresAtMilliseconds: nil)])
        let old = tier.objectKey(for: key)
        try await tier.apply([.removeNamespace("f")])
        let dry = try await self.panza(["gc", "--older-than", "1h", "--dry-run", "--json"], bucket: bucket)
        #expect(dry.status == 0, "\(dry.error)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(dry.output.utf8)) as? [String: Any])
        #expect(report["oldGenerations"] as? [String] == [old])
        #expect(report["deleted"] as? Bool == false)
        #expect(try await tier.allObjectKeys() == [old], "a dry run deleted something")
        let real = try await self.panza(["gc", "--older-than", "1h"], bucket: bucket)
        #expect(real.status == 0, "\(real.error)")
        #expect(real.output.contains("deleted 1 objects"))
        #expect(try await tier.allObjectKeys().isEmpty)
        let bad = try await self.panza(["gc", "--older-than", "soon"], bucket: bucket)
        #expect(bad.status == 64 && bad.error.contains("--older-than"))
        try await tier.close()
    }

    /// Runs the `panza` command on the test server's `bucket`, prefix `v1`.
    func panza(_ arguments: [String], bucket: String) async throws -> (status: Int32, output: String, error: String) {
        let settings = try S3TestServer.settings()
        let panza = ChildProcess.workerURL.deletingLastPathComponent().appendingPathComponent("panza")
        return try await ChildProcess.start(
            arguments + ["--s3-bucket", bucket, "--s3-prefix", "v1", "--s3-endpoint", settings.endpoint],
            executable: panza,
            environment: [
                "AWS_ACCESS_KEY_ID": settings.credentials.accessKeyID,
                "AWS_SECRET_ACCESS_KEY": settings.credentials.secretAccessKey,
            ]
        ).wait()
    }

    func waitUntil(_ condition: () async throws -> Bool) async throws -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(10)
        while clock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    @Test("A process set to collect in the background deletes a busted generation after its first poll")
    func backgroundCollection() async throws {
        let bucket = S3TestServer.uniqueBucket("gc")
        var configuration = try S3TestServer.tierConfiguration(bucket: bucket)
        configuration.invalidationPollInterval = nil
        let writer = try S3Tier(configuration: configuration)
        let key = CacheKey(namespace: "f", rawValue: "f/" + String(repeating: "c", count: 64))
        try await writer.apply([.store(key: key, blob: self.envelope("v"), expiresAtMilliseconds: nil)])
        try await writer.apply([.removeNamespace("f")])
        try await writer.apply([.store(key: key, blob: self.envelope("w"), expiresAtMilliseconds: nil)])
        #expect(try await writer.allObjectKeys().count == 2)
        configuration.backgroundCollectionOlderThan = .seconds(3_600)
        let collector = try S3Tier(configuration: configuration)
        _ = try await collector.newInvalidations()
        let collected = try await self.waitUntil { try await writer.allObjectKeys() == [writer.objectKey(for: key)] }
        #expect(collected, "the old generation was not collected")
        try await writer.close()
        try await collector.close()
    }

    @Test(
        "panza sync after a bust uploads into the id's current generation, once; a value made before the bust stays local"
    )
    func syncAfterBust() async throws {
        let bucket = S3TestServer.uniqueBucket("gc")
        var configuration = try S3TestServer.tierConfiguration(bucket: bucket)
        configuration.invalidationPollInterval = nil
        let tier = try S3Tier(configuration: configuration)
        let old = CacheKey(namespace: "f", rawValue: "f/" + String(repeating: "0", count: 64))
        let new = CacheKey(namespace: "f", rawValue: "f/" + String(repeating: "1", count: 64))
        let path = self.directory.path("sync.sqlite")
        let sqlite = try await SQLiteTier.open(configuration: .init(path: path))
        try await sqlite.apply([
            .store(key: old, blob: self.envelope("old", madeIn: -60_000), expiresAtMilliseconds: nil)
        ])
        try await tier.apply([.removeNamespace("f")])
        try await sqlite.apply([.store(key: new, blob: self.envelope("new", madeIn: 1_000), expiresAtMilliseconds: nil)]
        )
        await sqlite.close()
        let arguments = ["sync", "--json", "--path", path]
        for _ in 0..<2 {
            let result = try await self.panza(arguments, bucket: bucket)
            #expect(result.status == 0, "\(result.error)")
        }
        let second = try await self.panza(arguments, bucket: bucket)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(second.output.utf8)) as? [String: Any])
        #expect(report["alreadyInS3"] as? Int == 1, "\(second.output)")
        #expect(report["busted"] as? Int == 1 && report["uploaded"] as? Int == 0, "\(second.output)")
        _ = try await tier.newInvalidations()
        #expect(try await tier.allObjectKeys() == [tier.objectKey(for: new)], "only the value made after the bust")
        try await tier.close()
    }
}
