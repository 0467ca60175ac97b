import Foundation
import Testing

@testable import Panza

/// The local-hit path: a memory miss answered by an inline SQLite reader on the caller's thread,
/// before the single flight. It must answer exactly what the full read-through path would, and
/// decline (answer `nil`, counting nothing) whenever that path has something to decide.
struct LocalHitTests {
    let directory: TemporaryDirectory
    let clock = ManualCacheClock(nowMilliseconds: 1_800_000_000_000)

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    /// A cache on the shared file, with the manual clock.
    func open(
        memory: MemoryTier.Configuration? = .init(),
        configure: (inout TieredCache.Configuration) -> Void = { _ in }
    ) async throws -> TieredCache {
        try await makeCache(in: self.directory, memory: memory) { configuration in
            configuration.clock = self.clock
            configure(&configuration)
        }
    }

    /// Stores `value` under `key` for `timeToLive` from another cache, closed before returning.
    func store(_ value: some Codable & Sendable, forKey key: String, timeToLive: Duration? = nil) async throws {
        let writer = try await self.open()
        try await writer.set(value, forKey: key, timeToLive: timeToLive)
        try await writer.close()
    }

    @Test("A memory miss is answered by an inline SQLite reader, counted as a SQLite hit, and fills memory")
    func hit() async throws {
        let forecast = Forecast(city: "Tromsø", days: 2, temperatures: [-3, -1.5])
        try await self.store(forecast, forKey: "k")
        let cache = try await self.open()
        let key = try TieredCache.plainKey("k")
        #expect(cache.localHit(key, as: Forecast.self, refreshAhead: nil) == forecast)
        let statistics = cache.statistics
        #expect(statistics.tiers["sqlite"]?.hits == 1)
        #expect(statistics.tiers["sqlite"]?.misses == 0)
        #expect(statistics.memoryEntries == 1)
        #expect(try cache.memoryLookup(key, as: Forecast.self) == forecast)
        try await cache.close()
    }

    @Test("Without a memory tier, memoized calls in a new cache are SQLite hits, and the loader is not called")
    func memoizedWithoutMemory() async throws {
        let calls = CallCounter()
        let writer = try await self.open()
        let square = writer.memoize(id: "square") { (n: Int) async throws -> Int in
            calls.increment()
            return n * n
        }
        for n in 0..<20 { _ = try await square(n) }
        try await writer.close()

        let cache = try await self.open(memory: nil)
        let again = cache.memoize(id: "square") { (n: Int) async throws -> Int in
            calls.increment()
            return -1
        }
        for n in 0..<20 { #expect(try await again(n) == n * n) }
        #expect(calls.value == 20)
        #expect(cache.statistics.tiers["sqlite"]?.hits == 20)
        try await cache.close()
    }

    @Test("A miss declines without counting it; the full path counts it once")
    func miss() async throws {
        try await self.store("v", forKey: "other")
        let cache = try await self.open()
        #expect(cache.localHit(try TieredCache.plainKey("k"), as: String.self, refreshAhead: nil) == nil)
        #expect(cache.statistics.tiers["sqlite"]?.misses == 0)
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        #expect(cache.statistics.tiers["sqlite"]?.misses == 1)
        try await cache.close()
    }

    @Test("An expired or stale entry declines; the full path decides")
    func expired() async throws {
        try await self.store("v", forKey: "k", timeToLive: .seconds(10))
        let cache = try await self.open()
        let key = try TieredCache.plainKey("k")
        self.clock.advance(by: .seconds(11))
        #expect(cache.localHit(key, as: String.self, refreshAhead: nil) == nil)
        #expect(cache.statistics.tiers["sqlite"]?.hits == 0)
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        try await cache.close()
    }

    @Test("An entry due for a refresh ahead declines, so that the full path starts the refresh")
    func refreshDue() async throws {
        try await self.store("v", forKey: "k", timeToLive: .seconds(10))
        let cache = try await self.open()
        let key = try TieredCache.plainKey("k")
        #expect(cache.localHit(key, as: String.self, refreshAhead: 0.5) == "v")
        self.clock.advance(by: .seconds(6))
        let other = try await self.open(memory: nil)
        #expect(other.localHit(key, as: String.self, refreshAhead: 0.5) == nil)
        #expect(other.localHit(key, as: String.self, refreshAhead: nil) == "v")
        try await other.close()
        try await cache.close()
    }

    @Test("A write of the key still queued for SQLite declines: the queue decides, not the file")
    func queuedWrite() async throws {
        try await self.store("old", forKey: "k")
        let cache = try await self.open(memory: nil)
        let key = try TieredCache.plainKey("k")
        let queue = try #require(cache.localReads?.queue)
        // Queued without waking the drainer, so that it stays queued while this test looks.
        queue.enqueue(.remove(key), version: 1, replicate: false)
        #expect(cache.localHit(key, as: String.self, refreshAhead: nil) == nil)
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        try await cache.close()
    }

    @Test("A damaged entry declines without counting; the full path counts it once and repairs it")
    func corrupt() async throws {
        try await self.store("a value to damage, long enough to hold a checksum worth breaking", forKey: "k")
        let connection = try SQLiteConnection(path: self.directory.path("cache.sqlite"), busyTimeoutMilliseconds: 1000)
        try connection.execute(
            "UPDATE entry SET blob = CAST(substr(blob, 1, 20) || zeroblob(8) || substr(blob, 29) AS BLOB) WHERE key = 'k'"
        )
        connection.close()
        let cache = try await self.open()
        #expect(cache.localHit(try TieredCache.plainKey("k"), as: String.self, refreshAhead: nil) == nil)
        #expect(cache.statistics.corruptBlobs == 0)
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        #expect(cache.statistics.corruptBlobs == 1)
        try await cache.close()
    }

    @Test("A value of another type declines; the full path counts it and throws typeMismatch")
    func otherType() async throws {
        try await self.store(Forecast(city: "Oslo", days: 1, temperatures: [2]), forKey: "k")
        let cache = try await self.open()
        #expect(cache.localHit(try TieredCache.plainKey("k"), as: Int.self, refreshAhead: nil) == nil)
        #expect(cache.statistics.undecodableValues == 0)
        let error = try await #require(throws: PanzaError.self) { _ = try await cache.value(forKey: "k", as: Int.self) }
        #expect(error.code == .typeMismatch)
        #expect(cache.statistics.undecodableValues == 1)
        try await cache.close()
    }

    @Test("A bust mode, a closed cache, or no inline readers decline")
    func declines() async throws {
        try await self.store("v", forKey: "k")
        let key = try TieredCache.plainKey("k")

        let busting = try await self.open { $0.modes = CacheModes(bust: .all) }
        #expect(busting.localHit(key, as: String.self, refreshAhead: nil) == nil)
        try await busting.close()

        let closed = try await self.open()
        try await closed.close()
        #expect(closed.localHit(key, as: String.self, refreshAhead: nil) == nil)

        let queued = try await self.open { $0.sqlite?.inlineReaderCount = 0 }
        #expect(queued.localReads == nil)
        #expect(queued.localHit(key, as: String.self, refreshAhead: nil) == nil)
        #expect(try await queued.value(forKey: "k", as: String.self) == "v", "the reader queues still answer")
        try await queued.close()
    }
}
