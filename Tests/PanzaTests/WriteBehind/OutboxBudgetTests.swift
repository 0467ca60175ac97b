import Foundation
import Synchronization
import Testing

@testable import Panza

/// The outbox and the dead letters stay within their disk budget: a newer write of a key drops its
/// queued uploads, a store that does not fit is refused (its key removed remotely instead), and
/// dead-lettered stores expire. The S3 twin of the outage test is in `FaultInjectionTests`.
@Suite(.timeLimit(.minutes(3)))
struct OutboxBudgetTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    private func tier(_ configure: (inout SQLiteTier.Configuration) -> Void = { _ in }) async throws -> SQLiteTier {
        var configuration = SQLiteTier.Configuration(path: self.directory.path("cache.sqlite"))
        configure(&configuration)
        return try await SQLiteTier.open(configuration: configuration)
    }

    private func store(_ key: String, _ blob: [UInt8]) -> SQLiteWrite {
        SQLiteWrite(
            operation: .store(key: CacheKey(rawValue: key), blob: blob, expiresAtMilliseconds: nil), replicate: true)
    }

    /// The bytes of the outbox and the dead letters, summed from their rows (the triggers'
    /// totals are checked against it).
    private func countedBytes(_ path: String) throws -> (outbox: Int, deadLetters: Int) {
        let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 1000)
        defer { connection.close() }
        let statement = try connection.statement(
            """
            SELECT (SELECT coalesce(sum(length(blob)) + sum(length(CAST(key AS BLOB))), 0) FROM outbox)
                + (SELECT coalesce(sum(length(bytes)), 0) FROM blob_chunk WHERE owner LIKE 'outbox:%'),
                (SELECT coalesce(sum(coalesce(length(blob), 0) + coalesce(length(CAST(key AS BLOB)), 0)), 0)
                    FROM dead_letter)
                + (SELECT coalesce(sum(length(bytes)), 0) FROM blob_chunk WHERE owner LIKE 'dead_letter:%')
            """)
        defer { statement.reset() }
        guard try statement.step() else { return (0, 0) }
        return (Int(statement.int64(at: 0)), Int(statement.int64(at: 1)))
    }

    @Test("A newer write of a key drops its queued uploads, but not the one an uploader holds")
    func supersededUploads() async throws {
        let tier = try await self.tier()
        try await tier.applyWrites([self.store("k", [1]), self.store("k", [2]), self.store("other", [9])])
        try await tier.applyWrites([self.store("k", [3])])
        #expect(try await tier.outboxCount() == 2, "a superseded upload of k stayed queued")
        let claimed = try await tier.claimOutbox(limit: 10, owner: "uploader", lease: .seconds(60))
        #expect(claimed.map(\.operation.summary).sorted() == ["store k (1 bytes)", "store other (1 bytes)"])
        // The claimed record is on the wire: a newer write queues behind it and drops nothing.
        try await tier.applyWrites([self.store("k", [4])])
        #expect(try await tier.outboxCount() == 3)
        try await tier.applyWrites([
            SQLiteWrite(operation: .remove(CacheKey(rawValue: "k")), replicate: true),
            SQLiteWrite(operation: .remove(CacheKey(rawValue: "k")), replicate: true),
        ])
        // Left: the claimed store of k and of other, and one removal of k (the unclaimed store and
        // the first removal were superseded).
        #expect(try await tier.outboxCount() == 3)
        #expect(try await tier.outboxShadow(forKey: CacheKey(rawValue: "k")) == .removed)
        let usage = try await tier.usage()
        let counted = try self.countedBytes(self.directory.path("cache.sqlite"))
        #expect(usage.outboxBytes == counted.outbox)
        await tier.close()
    }

    @Test("A store that does not fit is refused: stored locally, and its key removed remotely instead")
    func refusedStore() async throws {
        let tier = try await self.tier { $0.maxOutboxBytes = 1_000 }
        try await tier.applyWrites([self.store("small", [UInt8](repeating: 1, count: 600))])
        try await tier.applyWrites([self.store("big", [UInt8](repeating: 2, count: 600))])
        #expect(try await tier.blob(forKey: CacheKey(rawValue: "big")) == [UInt8](repeating: 2, count: 600))
        #expect(try await tier.outboxShadow(forKey: CacheKey(rawValue: "big")) == .removed)
        #expect(try await tier.outboxShadow(forKey: CacheKey(rawValue: "small")) != .removed)
        let usage = try await tier.usage()
        #expect(usage.refusedUploads == 1)
        #expect(tier.refusedUploadCount == 1)
        #expect(usage.outboxBytes <= 1_000)
        // A newer store of "small" supersedes its queued one, so it fits again.
        try await tier.applyWrites([self.store("small", [UInt8](repeating: 3, count: 600))])
        #expect(try await tier.usage().refusedUploads == 1)
        // Removals are never refused, whatever the budget.
        try await tier.applyWrites([
            SQLiteWrite(operation: .removeNamespace(String(repeating: "n", count: 2_000)), replicate: true)
        ])
        #expect(try await tier.usage().outboxBytes > 1_000)
        await tier.close()
    }

    @Test("Dead-lettered stores expire by age; dead-lettered removals stay; both are counted")
    func deadLettersExpire() async throws {
        let tier = try await self.tier { $0.deadLetterTimeToLive = .seconds(60) }
        try await tier.applyWrites([
            self.store("stored", [UInt8](repeating: 7, count: 100)),
            SQLiteWrite(operation: .remove(CacheKey(rawValue: "removed")), replicate: true),
        ])
        for write in try await tier.claimOutbox(limit: 10, owner: "uploader", lease: .seconds(60)) {
            try await tier.deadLetterOutbox(id: Int64(write.sequence), error: "refused", token: write.leaseToken)
        }
        var usage = try await tier.usage()
        #expect(usage.outboxBytes == 0)
        #expect(usage.deadLetterBytes == 100 + "stored".utf8.count + "removed".utf8.count)
        #expect(try await tier.expireDeadLetters() == 0, "a dead letter expired before its time to live")
        #expect(try await tier.expireDeadLetters(now: WallClock.nowMilliseconds() + 61_000) == 1)
        #expect(try await tier.deadLetters().map(\.operation) == ["remove"])
        #expect(try await tier.outboxShadow(forKey: CacheKey(rawValue: "removed")) == .removed)
        usage = try await tier.usage()
        #expect(usage.deadLetterBytes == "removed".utf8.count)
        #expect(usage.deadLetterBytes == (try self.countedBytes(self.directory.path("cache.sqlite"))).deadLetters)
        await tier.close()
    }

    @Test(
        "A remote that never answers: 1,000 sets of 100 KiB that do not compress keep the file and its WAL under 3 × maxBytes, and recent values are served"
    )
    func outageStaysWithinBudget() async throws {
        let remote = RecordingTier()
        remote.state.withLock { $0.hangs = true }
        let maxBytes = 10 << 20
        let path = self.directory.path("cache.sqlite")
        let cache = try await makeCache(in: self.directory, memory: nil) { configuration in
            configuration.sqlite?.maxBytes = maxBytes
            configuration.remote = remote
            configuration.closeTimeout = .seconds(2)
            configuration.remoteCloseTimeout = .milliseconds(100)
        }
        var random = SplitMix64(seed: 27)
        var sizes = ""
        var largestWAL = 0
        func fileBytes() -> Int {
            let bytes = ["", "-wal"].map { suffix in
                let attributes = try? FileManager.default.attributesOfItem(atPath: path + suffix)
                return (attributes?[.size] as? NSNumber)?.intValue ?? 0
            }
            largestWAL = max(largestWAL, bytes[1])
            if bytes.reduce(0, +) > 3 * maxBytes, sizes.isEmpty { sizes = "file \(bytes[0]), WAL \(bytes[1])" }
            return bytes.reduce(0, +)
        }
        var largest = 0
        var values: [[UInt8]] = []
        for index in 0..<1_000 {
            var value = [UInt8](repeating: 0, count: 100 << 10)
            for offset in stride(from: 0, to: value.count, by: 8) {
                withUnsafeBytes(of: random.next()) { value.replaceSubrange(offset..<offset + 8, with: $0) }
            }
            try await cache.set(value, forKey: "value-\(index)")
            if index >= 990 { values.append(value) }
            if index % 10 == 0 { largest = max(largest, fileBytes()) }
        }
        try await cache.waitForLocalTiers()
        largest = max(largest, fileBytes())
        #expect(
            largest < 3 * maxBytes,
            "the file and its WAL reached \(largest) bytes (\(sizes)); busy checkpoints \(cache.sqliteTier?.busyCheckpointCount ?? -1)"
        )
        for (offset, value) in values.enumerated() {
            #expect(
                try await cache.value(forKey: "value-\(990 + offset)", as: [UInt8].self) == value,
                "a recent value was not served")
        }
        let tier = try #require(cache.sqliteTier)
        let usage = try await tier.usage()
        #expect(usage.outboxBytes + usage.deadLetterBytes <= maxBytes)
        #expect(usage.refusedUploads > 0 && tier.refusedUploadCount == usage.refusedUploads)
        #expect(usage.bytes <= maxBytes)
        _ = try? await cache.close()
    }
}
