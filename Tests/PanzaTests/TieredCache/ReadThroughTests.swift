import Foundation
import Synchronization
import Testing

@testable import Panza

struct ReadThroughTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    @Test("set then value returns the value for every kind of payload")
    func setAndGet() async throws {
        let cache = try await makeCache(in: self.directory)
        let forecast = Forecast(city: "Oslo", days: 3, temperatures: [1, 2.5])
        try await cache.set(forecast, forKey: "json")
        try await cache.set("text", forKey: "text")
        try await cache.set(Data([1, 2, 3]), forKey: "data")
        try await cache.set([UInt8]([9, 8]), forKey: "bytes")
        #expect(try await cache.value(forKey: "json", as: Forecast.self) == forecast)
        #expect(try await cache.value(forKey: "text", as: String.self) == "text")
        #expect(try await cache.value(forKey: "data", as: Data.self) == Data([1, 2, 3]))
        #expect(try await cache.value(forKey: "bytes", as: [UInt8].self) == [9, 8])
        #expect(try await cache.value(forKey: "missing", as: String.self) == nil)
        try await cache.close()
    }

    @Test("A SQLite hit is decoded and fills memory")
    func sqliteHitFillsMemory() async throws {
        let writer = try await makeCache(in: self.directory)
        let forecast = Forecast(city: "Bergen", days: 1, temperatures: [4])
        try await writer.set(forecast, forKey: "k")
        try await writer.close()

        let reader = try await makeCache(in: self.directory)
        #expect(try await reader.value(forKey: "k", as: Forecast.self) == forecast)
        #expect(try await reader.value(forKey: "k", as: Forecast.self) == forecast)
        let statistics = reader.statistics
        #expect(statistics.tiers["sqlite"]?.hits == 1)
        #expect(statistics.memory.hits == 1)
        #expect(statistics.memory.misses == 1)
        #expect(statistics.memoryEntries == 1)
        try await reader.close()
    }

    @Test("Without a memory tier every read is served by SQLite")
    func noMemoryTier() async throws {
        let cache = try await makeCache(in: self.directory, memory: nil)
        try await cache.set("v", forKey: "k")
        try await cache.flush()
        for _ in 0..<3 { #expect(try await cache.value(forKey: "k", as: String.self) == "v") }
        #expect(cache.statistics.tiers["sqlite"]?.hits == 3)
        try await cache.close()
    }

    @Test("A value evicted from memory but not yet written is still found")
    func pendingWritesAreVisible() async throws {
        let cache = try await makeCache(in: self.directory, memory: .init(maxEntries: 1, maxBytes: 1 << 20))
        for index in 0..<200 { try await cache.set("value \(index)", forKey: "k\(index)") }
        for index in 0..<200 {
            #expect(try await cache.value(forKey: "k\(index)", as: String.self) == "value \(index)")
        }
        try await cache.close()
    }

    @Test("Read-through calls the loader on a miss only, and stores its result")
    func readThrough() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        for _ in 0..<3 {
            let value = try await cache.value(forKey: "k") {
                calls.increment()
                return "loaded"
            }
            #expect(value == "loaded")
        }
        #expect(calls.value == 1)
        #expect(cache.statistics.loads == 1)
        try await cache.close()
    }

    /// Sizes of incompressible values, and where their stored bytes are damaged (1-based, as in
    /// SQL's `substr`): the header, or the middle (the checksum). Both sizes are decoded from
    /// SQLite's buffer as they are read.
    static let corruptions: [(size: Int, offset: Int)] = [(800, 1), (800, 300), (64 << 10, 1), (64 << 10, 30_000)]

    @Test("A corrupt blob in SQLite is a miss, is removed and is counted", arguments: corruptions)
    func corruptBlob(size: Int, offset: Int) async throws {
        let path = self.directory.path("cache.sqlite")
        let writer = try await makeCache(in: self.directory)
        var generator = SplitMix64(seed: UInt64(size))
        let value = Data((0..<size).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
        try await writer.set(value, forKey: "k")
        try await writer.close()
        let intact = try await makeCache(in: self.directory)
        #expect(try await intact.value(forKey: "k", as: Data.self) == value, "read back whole from SQLite")
        try await intact.close()

        // Damage the stored bytes behind Panza's back.
        let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 1000)
        try connection.execute(
            """
            UPDATE entry SET blob = CAST(substr(blob, 1, \(offset - 1)) || zeroblob(10) || substr(blob, \(offset + 10)) \
            AS BLOB) WHERE key = 'k'
            """)
        connection.close()

        let reader = try await makeCache(in: self.directory)
        #expect(try await reader.value(forKey: "k", as: Data.self) == nil)
        #expect(reader.statistics.corruptBlobs == 1)
        try await reader.flush()
        let tier = try #require(reader.tiers.first as? SQLiteTier)
        #expect(try await tier.storedBlob(forKey: "k") == nil)
        // The loader fills it again.
        #expect(try await reader.value(forKey: "k") { "fresh" } == "fresh")
        try await reader.close()
    }

    @Test("Oversized values are refused by set with valueTooLarge; a loader's is returned and not stored")
    func oversizedValue() async throws {
        let cache = try await makeCache(in: self.directory) { $0.maxValueBytes = 1000 }
        let error = try await #require(throws: PanzaError.self) {
            try await cache.set(Data(count: 1001), forKey: "big")
        }
        #expect(error.code == .valueTooLarge)
        #expect(error.key == "big")
        try await cache.set(Data(count: 1000), forKey: "fits")
        try await cache.flush()
        #expect(try await cache.value(forKey: "big", as: Data.self) == nil)
        #expect(try await cache.value(forKey: "fits", as: Data.self)?.count == 1000)
        // A loader's oversized result was paid for: it reaches the caller, uncached.
        #expect(try await cache.value(forKey: "big-load") { Data(count: 5000) }.count == 5000)
        #expect(cache.statistics.unstorableResults == 1)
        try await cache.close()
    }

    @Test("Invalid keys are refused", arguments: ["", String(repeating: "k", count: TieredCache.maximumKeyLength + 1)])
    func invalidKeys(key: String) async throws {
        let cache = try await makeCache(in: self.directory, sqlite: false)
        let error = try await #require(throws: PanzaError.self) { try await cache.set(1, forKey: key) }
        #expect(error.code == .invalidKey)
        try await cache.close()
    }

    @Test("Reading a value as another type: the same typed error in memory and below it; a read-through loads")
    func typeMismatch() async throws {
        let cache = try await makeCache(in: self.directory)
        try await cache.set(Forecast(city: "Oslo", days: 1, temperatures: []), forKey: "k")
        let memoryError = try await #require(throws: PanzaError.self) {
            _ = try await cache.value(forKey: "k", as: Int.self)
        }
        #expect(memoryError.code == .typeMismatch)
        try await cache.close()
        let reopened = try await makeCache(in: self.directory)
        // From SQLite, a plain read of a value that does not decode as the type asked for throws
        // the same typed error, counted, and deletes nothing; a read-through loads (issue 9: the
        // loader runs instead of the call failing for ever), and its store replaces it.
        let sqliteError = try await #require(throws: PanzaError.self) {
            _ = try await reopened.value(forKey: "k", as: [String].self)
        }
        #expect(sqliteError.code == .typeMismatch)
        #expect(reopened.statistics.undecodableValues == 1)
        let check = try await makeCache(in: self.directory, memory: nil)
        #expect(try await check.value(forKey: "k", as: Forecast.self)?.city == "Oslo", "nothing was deleted")
        try await check.close()
        let loaded = try await reopened.value(forKey: "k", timeToLive: nil) { ["fresh"] }
        #expect(loaded == ["fresh"])
        try await reopened.flush()
        try await reopened.close()
        let third = try await makeCache(in: self.directory)
        #expect(try await third.value(forKey: "k", as: [String].self) == ["fresh"])
        try await third.close()
    }

    @Test("Entries expire after their time to live in every tier")
    func timeToLive() async throws {
        let cache = try await makeCache(in: self.directory)
        // Read at once (from memory), before a loaded machine could let the time to live pass; the
        // flush and the wait come after.
        try await cache.set("short", forKey: "k", timeToLive: .seconds(2))
        #expect(try await cache.value(forKey: "k", as: String.self) == "short")
        try await cache.flush()
        try await Task.sleep(for: .milliseconds(2_100))
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        #expect(cache.statistics.expired >= 1)
        try await cache.close()
    }

    @Test("An older copy below a newer one that expired is never served: the newer value replaced it")
    func olderCopyBelowAnExpiredNewerOne() async throws {
        let clock = ManualCacheClock()
        let remote = RecordingTier()
        let cache = try await makeCache(in: self.directory) {
            $0.clock = clock
            $0.remote = remote
        }
        try await cache.set("old", forKey: "k", timeToLive: .seconds(60))
        try await cache.flush()
        clock.advance(by: .seconds(1))
        // The newer value waits in the SQLite queue (another process holds the write lock), so
        // its upload is not queued yet and the remote tier keeps the older value, which lives
        // longer.
        let holder = LockHolder(path: self.directory.path("cache.sqlite"))
        try holder.lock()
        try await cache.set("new", forKey: "k", timeToLive: .seconds(1))
        clock.advance(by: .seconds(5))
        let served = try await cache.value(forKey: "k", as: String.self)
        #expect(served == nil, "served \(served ?? "") from below a newer value that expired")
        // Again, now that the lookup queued the deletion of the expired copy (a repair).
        let again = try await cache.value(forKey: "k", as: String.self)
        #expect(again == nil, "served \(again ?? "") from below a newer value once its repair was queued")
        holder.unlock()
        try await cache.close()
    }

    @Test("An older copy below a newer one that expired in SQLite's file is never served")
    func olderCopyBelowAnExpiredRow() async throws {
        let clock = ManualCacheClock()
        let remote = RecordingTier()
        let cache = try await makeCache(in: self.directory, memory: nil) {
            $0.clock = clock
            $0.remote = remote
        }
        try await cache.set("old", forKey: "k", timeToLive: .seconds(60))
        try await cache.flush()
        clock.advance(by: .seconds(1))
        // A newer value in the file that never reached the remote tier (written by a process of
        // the file without one, or its upload dead-lettered).
        let (contentType, payload) = try ValueCoding.encode("new")
        let newer = BlobEnvelope(
            contentType: contentType, payload: payload, createdAtMilliseconds: clock.nowMilliseconds(),
            timeToLiveMilliseconds: 1_000
        ).encoded()
        let sqlite = try #require(cache.sqliteTier)
        try await sqlite.applyWrites([
            SQLiteWrite(
                operation: .store(
                    key: CacheKey(rawValue: "k"), blob: newer, expiresAtMilliseconds: clock.nowMilliseconds() + 1_000))
        ])
        clock.advance(by: .seconds(5))
        let served = try await cache.value(forKey: "k", as: String.self)
        #expect(served == nil, "served \(served ?? "") from below a newer value that expired in SQLite")
        try await cache.close()
    }

    @Test("removeValue and bustAll reach every tier")
    func removal() async throws {
        let cache = try await makeCache(in: self.directory)
        try await cache.set("a", forKey: "a")
        try await cache.set("b", forKey: "b")
        try await cache.removeValue(forKey: "a")
        #expect(try await cache.value(forKey: "a", as: String.self) == nil)
        try await cache.close()
        let reopened = try await makeCache(in: self.directory)
        #expect(try await reopened.value(forKey: "a", as: String.self) == nil)
        #expect(try await reopened.value(forKey: "b", as: String.self) == "b")
        try await reopened.bustAll()
        #expect(try await reopened.value(forKey: "b", as: String.self) == nil)
        let tier = try #require(reopened.tiers.first as? SQLiteTier)
        #expect(try await tier.usage().entries == 0)
        try await reopened.close()
    }

    @Test("Write-through returns once SQLite holds the value")
    func writeThrough() async throws {
        let cache = try await makeCache(in: self.directory) { $0.writeMode = .writeThrough }
        try await cache.set("v", forKey: "k")
        #expect(cache.statistics.pendingWrites == 0)
        let tier = try #require(cache.tiers.first as? SQLiteTier)
        #expect(try await tier.storedBlob(forKey: "k") != nil)
        try await cache.close()
    }

    @Test("Write-behind batches many writes into few transactions")
    func batching() async throws {
        let cache = try await makeCache(in: self.directory)
        for index in 0..<2_000 { try await cache.set(index, forKey: "k\(index)") }
        try await cache.flush()
        let statistics = cache.statistics
        #expect(statistics.writes == 2_000)
        #expect(statistics.writeBatches < 2_000)
        let tier = try #require(cache.tiers.first as? SQLiteTier)
        #expect(try await tier.usage().entries == 2_000)
        try await cache.close()
    }

    @Test("A closed cache refuses calls")
    func closed() async throws {
        let cache = try await makeCache(in: self.directory)
        try await cache.close()
        let error = try await #require(throws: PanzaError.self) { try await cache.set(1, forKey: "k") }
        #expect(error.code == .closed)
    }
}
