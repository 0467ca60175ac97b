import Foundation
import Testing

@testable import Panza

/// Fills from a lower tier next to expiry, and a file migrated under a running process: a fill
/// replaces an expired copy, an expiry pass refuses only the fills of the keys it deleted, and a
/// process that finds a newer schema stops using the file.
@Suite(.timeLimit(.minutes(1)))
struct SQLiteFillTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    private func envelope(_ text: String, createdAt: Int64, timeToLive: Int64?) throws -> [UInt8] {
        let (contentType, payload) = try ValueCoding.encode(text)
        return BlobEnvelope(
            contentType: contentType, payload: payload, createdAtMilliseconds: createdAt,
            timeToLiveMilliseconds: timeToLive ?? 0
        ).encoded()
    }

    private func store(_ key: String, _ blob: [UInt8], expiresAt: Int64?, fillStamp: Int64? = nil) -> SQLiteWrite {
        SQLiteWrite(
            operation: .store(key: CacheKey(rawValue: key), blob: blob, expiresAtMilliseconds: expiresAt),
            fillStamp: fillStamp)
    }

    @Test("A fill from S3 replaces the expired copy its lookup found, and never a newer one")
    func fillReplacesAnExpiredRow() async throws {
        let clock = ManualCacheClock()
        let tier = try await SQLiteTier.open(
            configuration: .init(path: self.directory.path("cache.sqlite")), clock: clock)
        // The pass after the open would delete the expired row before the fill comes.
        #expect(await eventually { tier.hasFinishedFirstReclaimPass })
        let start = clock.nowMilliseconds()
        let key = CacheKey(rawValue: "k")
        try await tier.applyWrites([
            self.store("k", try self.envelope("old", createdAt: start, timeToLive: 1_000), expiresAt: start + 1_000)
        ])
        clock.advance(by: .seconds(2))
        let stamp = try await tier.writeStamp(forKey: key)
        let newer = try self.envelope("newer", createdAt: start + 1_500, timeToLive: 60_000)
        try await tier.applyWrites([self.store("k", newer, expiresAt: start + 61_500, fillStamp: stamp)])
        #expect(try await tier.blob(forKey: key) == newer, "the fill did not replace the expired row")

        // A fill older than the expired row it would replace is dropped.
        clock.advance(by: .seconds(120))
        let again = try await tier.writeStamp(forKey: key)
        let older = try self.envelope("older", createdAt: start, timeToLive: 600_000)
        try await tier.applyWrites([self.store("k", older, expiresAt: start + 600_000, fillStamp: again)])
        let connection = try SQLiteConnection(path: self.directory.path("cache.sqlite"), busyTimeoutMilliseconds: 1000)
        defer { connection.close() }
        let row = try connection.statement("SELECT created_at FROM entry WHERE key = 'k'")
        defer { row.reset() }
        #expect(try row.step() && row.int64(at: 0) == start + 1_500, "an older fill replaced a newer expired row")
        await tier.close()
    }

    @Test("Through the cache: a copy filled from the remote tier over an expired row is served from SQLite next time")
    func fillOverAnExpiredRowThroughTheCache() async throws {
        let clock = ManualCacheClock()
        let remote = RecordingTier()
        let cache = try await makeCache(in: self.directory, memory: nil) {
            $0.clock = clock
            $0.remote = remote
            // The deletion of the expired row the lookup noted waits for the next write (the
            // fill's own transaction, after the fill) rather than a timer, which on a loaded
            // machine could fire first and, bumping the key's stamp, refuse the fill.
            $0.sqlite?.accessTimeResolution = .seconds(600)
        }
        let start = clock.nowMilliseconds()
        let sqlite = try #require(cache.sqliteTier)
        #expect(await eventually { sqlite.hasFinishedFirstReclaimPass })
        try await sqlite.applyWrites([
            self.store("k", try self.envelope("old", createdAt: start, timeToLive: 1_000), expiresAt: start + 1_000)
        ])
        clock.advance(by: .seconds(2))
        try await remote.apply([
            .store(
                key: CacheKey(rawValue: "k"),
                blob: try self.envelope("from remote", createdAt: start + 1_500, timeToLive: 60_000),
                expiresAtMilliseconds: start + 61_500)
        ])
        #expect(try await cache.value(forKey: "k", as: String.self) == "from remote")
        #expect(remote.reads == 1)
        try await cache.waitForLocalTiers()
        #expect(try await cache.value(forKey: "k", as: String.self) == "from remote")
        #expect(remote.reads == 1, "the fill over the expired row did not land: the remote tier was asked again")
        try await cache.close()
    }

    @Test("An expiry pass refuses only the fills of the keys it deleted")
    func expiryPassKeepsOtherFills() async throws {
        let clock = ManualCacheClock()
        let tier = try await SQLiteTier.open(
            configuration: .init(path: self.directory.path("cache.sqlite")), clock: clock)
        let start = clock.nowMilliseconds()
        // Two keys of different buckets.
        let other = (0..<100).map { "expiring-\($0)" }.first {
            WriteStamp.bucket(of: $0) != WriteStamp.bucket(of: "filled")
        }!
        try await tier.applyWrites([
            self.store(other, try self.envelope("short", createdAt: start, timeToLive: 1_000), expiresAt: start + 1_000)
        ])
        let filledStamp = try await tier.writeStamp(forKey: CacheKey(rawValue: "filled"))
        let otherStamp = try await tier.writeStamp(forKey: CacheKey(rawValue: other))
        clock.advance(by: .seconds(2))
        #expect(try await tier.removeExpired() == 1)
        let value = try self.envelope("value", createdAt: start, timeToLive: nil)
        try await tier.applyWrites([
            self.store("filled", value, expiresAt: nil, fillStamp: filledStamp),
            self.store(other, value, expiresAt: nil, fillStamp: otherStamp),
        ])
        #expect(
            try await tier.blob(forKey: CacheKey(rawValue: "filled")) == value,
            "an expiry pass of another key refused the fill")
        #expect(
            try await tier.blob(forKey: CacheKey(rawValue: other)) == nil,
            "a fill of a key deleted since its lookup landed")
        await tier.close()
    }

    @Test("A file migrated to a newer schema while open: the tier stops reading and writing it, and says so")
    func newerSchemaWhileOpen() async throws {
        let path = self.directory.path("cache.sqlite")
        let cache = try await makeCache(in: self.directory, memory: nil)
        try await cache.set("before", forKey: "k")
        try await cache.waitForLocalTiers()
        do {
            let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 1000)
            try connection.execute("PRAGMA user_version = \(SQLiteSchema.currentVersion + 1)")
            connection.close()
        }
        let tier = try #require(cache.sqliteTier)
        let error = try await #require(throws: PanzaError.self) {
            try await tier.applyWrites([self.store("x", [1], expiresAt: nil)])
        }
        #expect(error.code == .unsupportedSchemaVersion)
        #expect(tier.isPermanentFailure(error))
        await #expect(throws: PanzaError.self) { _ = try await tier.blob(forKey: CacheKey(rawValue: "k")) }
        // The cache keeps working without the file: a call is loaded, not failed.
        #expect(try await cache.value(forKey: "k2") { "loaded" } == "loaded")
        try await cache.set("after", forKey: "k3")
        // The write to SQLite fails for good (permanent), so it is dropped and counted, not retried.
        _ = try? await cache.waitForLocalTiers()
        #expect(cache.statistics.droppedWrites >= 1)
        let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 1000)
        defer { connection.close() }
        let count = try connection.statement("SELECT count(*) FROM entry WHERE key IN ('x', 'k2', 'k3')")
        defer { count.reset() }
        #expect(try count.step() && count.int64(at: 0) == 0, "the tier wrote to a file of a newer schema")
        _ = try? await cache.close()
    }
}
