import Foundation
import Synchronization
import Testing

@testable import Panza

struct SQLiteTierTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    func blob(_ text: String, count: Int = 1, ttl: Int64 = 0) -> [UInt8] {
        BlobEnvelope(
            contentType: .text,
            payload: Array(String(repeating: text, count: count).utf8),
            createdAtMilliseconds: WallClock.nowMilliseconds(),
            timeToLiveMilliseconds: ttl
        ).encoded(compress: false)
    }

    func store(_ key: String, _ blob: [UInt8], namespace: String = "", expiresAt: Int64? = nil) -> CacheTierOperation {
        .store(key: CacheKey(namespace: namespace, rawValue: key), blob: blob, expiresAtMilliseconds: expiresAt)
    }

    @Test("Entries persist across connections")
    func persistence() async throws {
        let path = self.directory.path("cache.sqlite")
        let alpha = blob("alpha")
        let beta = blob("beta")
        let first = try await SQLiteTier.open(configuration: .init(path: path))
        try await first.apply([store("a", alpha), store("b", beta)])
        await first.close()
        let second = try await SQLiteTier.open(configuration: .init(path: path))
        #expect(try await second.blob(forKey: CacheKey(rawValue: "a")) == alpha)
        let usage = try await second.usage()
        #expect(usage.entries == 2)
        #expect(usage.bytes == SQLiteTier.size(key: "a", blob: alpha) + SQLiteTier.size(key: "b", blob: beta))
        #expect(try await second.blob(forKey: CacheKey(rawValue: "missing")) == nil)
        await second.close()
    }

    @Test("Removals by key, namespace and all")
    func removals() async throws {
        let tier = try await SQLiteTier.open(configuration: .init(path: self.directory.path("cache.sqlite")))
        try await tier.apply([
            store("f/1", blob("1"), namespace: "f"), store("f/2", blob("2"), namespace: "f"),
            store("g/1", blob("3"), namespace: "g"), store("plain", blob("4")),
        ])
        try await tier.apply([.remove(CacheKey(rawValue: "plain"))])
        #expect(try await tier.usage().entries == 3)
        try await tier.apply([.removeNamespace("f")])
        #expect(try await tier.entries().map(\.key) == ["g/1"])
        try await tier.apply([.removeAll])
        #expect(try await tier.usage().entries == 0)
        #expect(try await tier.usage().bytes == 0)
        await tier.close()
    }

    @Test("The byte bound evicts the least recently used entries")
    func lruEviction() async throws {
        let configuration = SQLiteTier.Configuration(
            path: self.directory.path("cache.sqlite"),
            maxBytes: 10_000,
            accessTimeResolution: .zero
        )
        let tier = try await SQLiteTier.open(configuration: configuration)
        let payload = blob("x", count: 950)  // about 1 KB with its envelope
        for index in 0..<9 {
            try await tier.apply([store("k\(index)", payload)])
            try await Task.sleep(for: .milliseconds(3))
        }
        #expect(try await tier.blob(forKey: CacheKey(rawValue: "k0")) != nil)  // k0 becomes the most recent
        try await Task.sleep(for: .milliseconds(3))
        try await tier.apply([store("k9", payload), store("k10", payload)])
        let usage = try await tier.usage()
        #expect(usage.bytes <= 10_000)
        let keys = Set(try await tier.entries().map(\.key))
        #expect(keys.contains("k0"), "the entry read last was evicted")
        #expect(keys.contains("k10") && keys.contains("k9"))
        #expect(!keys.contains("k1") && !keys.contains("k2"), "older entries were kept: \(keys.sorted())")
        #expect(tier.evictionCount >= 2)
        await tier.close()
    }

    @Test(
        "Opening leaves expired entries to a background pass: they are misses at once and reclaimed soon after, with no interval set",
        arguments: [nil, Duration.seconds(3_600)])
    func expiredReclaimedAfterOpen(interval: Duration?) async throws {
        let path = self.directory.path("backlog.sqlite")
        var configuration = SQLiteTier.Configuration(path: path)
        configuration.expiredReclaimInterval = interval
        let now = WallClock.nowMilliseconds()
        let writer = try await SQLiteTier.open(configuration: configuration)
        // 25,000 expired entries: more than one batch of the background pass.
        try await writer.apply(
            (0..<25_000).map { store("old\($0)", blob("o"), expiresAt: now - 1) } + [store("kept", blob("k"))])
        await writer.close()
        let tier = try await SQLiteTier.open(configuration: configuration)
        #expect(try await tier.blob(forKey: CacheKey(rawValue: "old7")) == nil)
        #expect(try await tier.blob(forKey: CacheKey(rawValue: "kept")) != nil)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        while try await tier.usage().entries > 1, clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(try await tier.usage().entries == 1, "the background pass did not reclaim the expired entries")
        await tier.close()
    }

    @Test(
        "Lookups on the caller's thread and on the reader queues agree, with more tasks than inline connections",
        arguments: [0, 1, 2])
    func inlineLookups(inlineReaderCount: Int) async throws {
        var configuration = SQLiteTier.Configuration(path: self.directory.path("inline-\(inlineReaderCount).sqlite"))
        configuration.inlineReaderCount = inlineReaderCount
        let tier = try await SQLiteTier.open(configuration: configuration)
        var generator = SplitMix64(seed: 3)
        let large = (0..<(BlobChunks.chunkSize + 5_000)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let largeBlob = BlobEnvelope(contentType: .bytes, payload: large, createdAtMilliseconds: 1).encoded()
        let blobs = (0..<100).map { self.blob("v\($0)") }
        try await tier.apply((0..<100).map { store("k\($0)", blobs[$0]) } + [store("large", largeBlob)])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<16 {
                group.addTask {
                    for index in 0..<200 {
                        let key = (task * 31 + index) % 110
                        let found = try await tier.blob(forKey: CacheKey(rawValue: key < 100 ? "k\(key)" : "x\(key)"))
                        #expect(found == (key < 100 ? blobs[key] : nil))
                    }
                    // An entry stored in chunks is read by a reader queue, whole.
                    #expect(try await tier.blob(forKey: CacheKey(rawValue: "large")) == largeBlob)
                }
            }
            try await group.waitForAll()
        }
        await tier.close()
        let error = await #expect(throws: PanzaError.self) { _ = try await tier.blob(forKey: CacheKey(rawValue: "k1")) }
        #expect(error?.code == .closed)
    }

    @Test("A slow inline lookup sends lookups to the reader queues only when the process read from the disk meanwhile")
    func inlinePauseNeedsDiskReads() async throws {
        let path = self.directory.path("pause.sqlite")
        let tier = try await SQLiteTier.open(configuration: .init(path: path))
        try await tier.apply([store("k", self.blob("v"))])
        let reads = Mutex(100)
        // Every lookup counts as slow: what decides is whether the disk was read.
        let pool = try InlineReaderPool(
            path: path, count: 1, memoryMapBytes: 0, accessTimeResolution: 60_000, slowLookup: .zero,
            pause: .seconds(600), diskReads: { reads.withLock { $0 } })
        defer { pool.close() }
        let log = AccessLog()
        for _ in 0..<3 {
            // Slow but no disk read (a preempted thread on a busy machine): lookups stay inline.
            #expect(try pool.lookup(CacheKey(rawValue: "k"), log: log, decodingUpTo: nil)?.found != nil)
            #expect(!pool.isPaused)
        }
        reads.withLock { $0 += 1 }  // a cold page read from the disk
        #expect(try pool.lookup(CacheKey(rawValue: "k"), log: log, decodingUpTo: nil)?.found != nil)
        #expect(pool.isPaused)
        #expect(try pool.lookup(CacheKey(rawValue: "k"), log: log, decodingUpTo: nil) == nil, "paused: use the queues")

        // When the disk reads cannot be counted, a slow lookup pauses, as before.
        let uncounted = try InlineReaderPool(
            path: path, count: 1, memoryMapBytes: 0, accessTimeResolution: 60_000, slowLookup: .zero,
            pause: .seconds(600), diskReads: { nil })
        defer { uncounted.close() }
        #expect(try uncounted.lookup(CacheKey(rawValue: "k"), log: log, decodingUpTo: nil)?.found != nil)
        #expect(uncounted.isPaused)
        await tier.close()
    }

    @Test("Once the writer is idle, the WAL is copied into the database file, where readers find the entries")
    func idleCheckpoint() async throws {
        let path = self.directory.path("idle.sqlite")
        var configuration = SQLiteTier.Configuration(path: path)
        configuration.expiredReclaimInterval = nil
        let tier = try await SQLiteTier.open(configuration: configuration)
        let blobs = (0..<200).map { self.blob("value \($0)", count: 1_000) }
        let checkpointsBefore = tier.idleCheckpointCount
        try await tier.apply((0..<200).map { store("k\($0)", blobs[$0]) })
        // Waits for the checkpoint itself, bounded so that a writer that never checkpoints fails
        // the test instead of hanging it.
        _ = try await Deadline.value(within: .seconds(30)) {
            await tier.waitForIdleCheckpoint(after: checkpointsBefore)
        }
        #expect(tier.idleCheckpointCount > checkpointsBefore, "no checkpoint after the writer went idle")
        let fileBytes = try #require(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(fileBytes >= 200 * 1_000, "the entries are still only in the WAL (\(fileBytes) bytes in the file)")
        for index in [0, 99, 199] {
            #expect(try await tier.blob(forKey: CacheKey(rawValue: "k\(index)")) == blobs[index])
        }
        await tier.close()
    }

    @Test("Deleted blobs are not zeroed into the WAL: secure_delete is FAST on the writer")
    func deletesWriteLittleToTheWAL() async throws {
        let path = self.directory.path("delete.sqlite")
        var configuration = SQLiteTier.Configuration(path: path)
        configuration.expiredReclaimInterval = nil
        let tier = try await SQLiteTier.open(configuration: configuration)
        #expect(try await tier.secureDeleteMode() == 2)
        // 4 MiB that do not compress, in entries of 64 KiB.
        var random = SplitMix64(seed: 7)
        let payload = (0..<(64 << 10)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        try await tier.apply(
            (0..<64).map {
                .store(
                    key: CacheKey(rawValue: "k\($0)"),
                    blob: BlobEnvelope(contentType: .bytes, payload: payload, createdAtMilliseconds: 1).encoded(
                        compress: false), expiresAtMilliseconds: nil)
            })
        // Empty the WAL, then delete everything: only the b-tree and freelist pages change.
        let other = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 30_000)
        defer { other.close() }
        #expect(try !other.truncateCheckpointIsBusy(), "the checkpoint was busy")
        try await tier.apply([.removeAll])
        let walBytes = try #require(FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int)
        #expect(walBytes < 512 << 10, "deleting 4 MiB wrote \(walBytes) bytes to the WAL")
        #expect(try await tier.blob(forKey: CacheKey(rawValue: "k0")) == nil)
        await tier.close()
    }

    @Test(
        "A TRUNCATE held back by a long reader is counted, holds no writer for the busy timeout, and is tried again until it completes"
    )
    func busyCheckpoint() async throws {
        let path = self.directory.path("busy.sqlite")
        let clock = ManualCacheClock()
        var configuration = SQLiteTier.Configuration(path: path)
        configuration.expiredReclaimInterval = nil
        configuration.checkpointAfterBytes = 64 << 10
        configuration.busyTimeout = .seconds(60)
        let tier = try await SQLiteTier.open(configuration: configuration, clock: clock)
        try await tier.apply([store("a", self.blob("a", count: 1_000))])
        // A long read transaction of another connection, older than the next commit.
        let reader = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 0)
        defer { reader.close() }
        try reader.execute("BEGIN")
        let count = try reader.statement("SELECT count(*) FROM entry")
        #expect(try count.step())
        // 128 KiB written: a TRUNCATE is due, and the reader holds it back. It waits a short while,
        // not the writer's busy timeout of 60 s.
        let big = store("big", self.blob("b", count: 128 << 10))
        try await Deadline.value(within: .seconds(20)) { try await tier.apply([big]) }
        #expect(tier.busyCheckpointCount == 1)
        // Not tried again at once: the next batch does not wait for the reader either.
        try await tier.apply([store("b", self.blob("b", count: 1_000))])
        #expect(tier.busyCheckpointCount == 1)
        count.reset()
        try reader.execute("COMMIT")
        // Later, the bytes still count: the next batch empties the WAL.
        clock.advance(by: .seconds(2))
        try await tier.apply([store("c", self.blob("c", count: 1_000))])
        #expect(tier.busyCheckpointCount == 1)
        let walBytes = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int
        #expect(walBytes == 0, "the WAL was not emptied once the reader left")
        await tier.close()
    }

    @Test("The process's disk reads are counted, and never go down")
    func diskReadsCount() throws {
        let first = try #require(DiskReads.count())
        let path = self.directory.path("read.bin")
        try Data(repeating: 7, count: 1 << 20).write(to: URL(fileURLWithPath: path))
        _ = try Data(contentsOf: URL(fileURLWithPath: path))
        let second = try #require(DiskReads.count())
        #expect(first >= 0)
        #expect(second >= first)
    }

    @Test("Expired entries are misses and are reclaimed")
    func expiry() async throws {
        let tier = try await SQLiteTier.open(configuration: .init(path: self.directory.path("cache.sqlite")))
        // Expiry times around now, far enough apart that a loaded machine cannot blur them: no sleep.
        let now = WallClock.nowMilliseconds()
        try await tier.apply([
            store("short", blob("s"), expiresAt: now - 1), store("long", blob("l"), expiresAt: now + 600_000),
        ])
        #expect(try await tier.blob(forKey: CacheKey(rawValue: "short")) == nil)
        #expect(try await tier.blob(forKey: CacheKey(rawValue: "long")) != nil)
        try await tier.apply([])  // any write reclaims the entries found expired
        #expect(try await tier.entries().map(\.key) == ["long"])
        await tier.close()
    }

    @Test("A file that is not a database gives corruptDatabase naming the path")
    func notADatabase() async throws {
        let path = self.directory.path("garbage.sqlite")
        try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: path))
        let error = try await #require(throws: PanzaError.self) {
            _ = try await SQLiteTier.open(configuration: .init(path: path))
        }
        #expect(error.code == .corruptDatabase)
        #expect(error.path == path)
        #expect(error.description.contains(path))
        // The file is left as it was.
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(repeating: 0x42, count: 8192))
    }

    @Test("rebuildIfUnreadable moves a damaged file aside and starts anew")
    func rebuild() async throws {
        let path = self.directory.path("garbage.sqlite")
        try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: path))
        let tier = try await SQLiteTier.open(configuration: .init(path: path, rebuildIfUnreadable: true))
        try await tier.apply([store("k", blob("v"))])
        #expect(try await tier.usage().entries == 1)
        await tier.close()
        let moved = try FileManager.default.contentsOfDirectory(atPath: self.directory.url.path)
            .filter { $0.hasPrefix("garbage.sqlite.unreadable-") }
        #expect(moved.count == 1)
    }

    @Test("A database of another application is refused and never moved")
    func foreignDatabase() async throws {
        let path = self.directory.path("other.sqlite")
        do {
            let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 100)
            try connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
            connection.close()
        }
        for rebuild in [false, true] {
            let error = try await #require(throws: PanzaError.self) {
                _ = try await SQLiteTier.open(configuration: .init(path: path, rebuildIfUnreadable: rebuild))
            }
            #expect(error.code == .notAPanzaDatabase)
            #expect(error.path == path)
        }
        #expect(FileManager.default.fileExists(atPath: path))
    }

    @Test("A file of a newer schema version is refused")
    func newerSchema() async throws {
        let path = self.directory.path("cache.sqlite")
        let tier = try await SQLiteTier.open(configuration: .init(path: path))
        await tier.close()
        do {
            let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 100)
            try connection.execute("PRAGMA user_version = 99")
            connection.close()
        }
        let error = try await #require(throws: PanzaError.self) {
            _ = try await SQLiteTier.open(configuration: .init(path: path))
        }
        #expect(error.code == .unsupportedSchemaVersion)
    }

    @Test("A file of schema version 1 from the fixtures opens and serves its entries")
    func schemaVersion1Fixture() async throws {
        let fixture = Fixtures.url("sqlite/schema-v1.sqlite")
        if Fixtures.regenerate {
            try? FileManager.default.removeItem(at: fixture)
            let tier = try await SQLiteTier.open(configuration: .init(path: fixture.path))
            let envelope = BlobEnvelope(
                contentType: .text, payload: Array("fixture value".utf8), createdAtMilliseconds: 1_764_000_000_000)
            try await tier.apply([store("fixture-key", envelope.encoded())])
            await tier.close()
            let connection = try SQLiteConnection(path: fixture.path, busyTimeoutMilliseconds: 100)
            try connection.execute("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE")
            connection.close()
        }
        let path = self.directory.path("copy.sqlite")
        try FileManager.default.copyItem(atPath: fixture.path, toPath: path)
        let tier = try await SQLiteTier.open(configuration: .init(path: path))
        let bytes = try #require(try await tier.blob(forKey: CacheKey(rawValue: "fixture-key")))
        #expect(try BlobEnvelope.decode(bytes).payload == Array("fixture value".utf8))
        #expect(try await tier.outboxCount() == 0, "the file was not migrated to schema version 2")
        await tier.close()
    }

    @Test("A schema version 2 file is migrated with its pending uploads kept, in order, unclaimed")
    func migratesVersionTwo() async throws {
        let path = self.directory.path("v2.sqlite")
        try FileManager.default.copyItem(atPath: Fixtures.url("sqlite/schema-v2.sqlite").path, toPath: path)
        let tier = try await SQLiteTier.open(configuration: .init(path: path))
        #expect(
            try await tier.blob(forKey: CacheKey(rawValue: "fixture-key"))
                == (try Fixtures.bytes("blobs/v1-text-lz4.pnza")))
        #expect(try await tier.outboxCount() == 2)
        #expect(try await tier.deadLetterCount() == 0)
        #expect(try await tier.outboxShadow(forKey: CacheKey(rawValue: "gone")) == .removed)
        let claimed = try await tier.claimOutbox(limit: 10, owner: "test", lease: .seconds(60))
        #expect(
            claimed.map(\.operation.summary) == [
                "store fixture-key (\(try Fixtures.bytes("blobs/v1-text-lz4.pnza").count) bytes)", "remove gone",
            ])
        #expect(claimed.allSatisfy { $0.attempts == 0 })
        await tier.close()
    }

    @Test("A lock held past the busy timeout gives databaseBusy, and write-behind retries until it lands")
    func busyDatabase() async throws {
        let path = self.directory.path("cache.sqlite")
        let configuration = SQLiteTier.Configuration(path: path, busyTimeout: .milliseconds(100))
        let tier = try await SQLiteTier.open(configuration: configuration)
        let holder = LockHolder(path: path)
        try holder.lock()
        let error = try await #require(throws: PanzaError.self) {
            try await tier.apply([store("k", blob("v"))])
        }
        #expect(error.code == .databaseBusy)
        #expect(error.path == path)
        await tier.close()

        var cacheConfiguration = TieredCache.Configuration()
        cacheConfiguration.sqlite = configuration
        cacheConfiguration.modes = CacheModes()
        // Opening must not fail while another connection holds the lock (its background pass waits).
        let cache = try await TieredCache(configuration: cacheConfiguration)
        try await cache.set("kept", forKey: "k")
        let flushError = try await #require(throws: PanzaError.self) { try await cache.flush() }
        #expect(flushError.code == .databaseBusy)
        #expect(cache.statistics.pendingWrites == 1)
        holder.unlock()
        try await cache.flush()
        #expect(cache.statistics.pendingWrites == 0)
        #expect(cache.statistics.writeFailures >= 1)
        try await cache.close()

        let reopened = try await SQLiteTier.open(configuration: configuration)
        #expect(try await reopened.usage().entries == 1)
        await reopened.close()
    }

    @Test("Reads are served while the writer waits for another process's lock")
    func readsDoNotWaitForTheWriter() async throws {
        let path = self.directory.path("cache.sqlite")
        let tier = try await SQLiteTier.open(configuration: .init(path: path, busyTimeout: .seconds(30)))
        let stored = blob("v")
        try await tier.apply([store("k", stored)])
        let holder = LockHolder(path: path)
        try holder.lock()
        let finished = CallCounter()
        let operation = store("other", blob("w"))
        let write = Task {
            try await tier.apply([operation])
            finished.increment()
        }
        try await Task.sleep(for: .milliseconds(50))  // the writer is now waiting for the lock
        #expect(try await tier.blob(forKey: CacheKey(rawValue: "k")) == stored)
        #expect(finished.value == 0, "the read was served only after the write")
        holder.unlock()
        try await write.value
        #expect(try await tier.usage().entries == 2)
        await tier.close()
    }

    @Test("Invalid bounds are refused")
    func invalidConfiguration() async throws {
        for configuration in [
            SQLiteTier.Configuration(path: self.directory.path("a.sqlite"), maxBytes: 0),
            SQLiteTier.Configuration(path: self.directory.path("b.sqlite"), readerCount: 0),
        ] {
            let error = try await #require(throws: PanzaError.self) {
                _ = try await SQLiteTier.open(configuration: configuration)
            }
            #expect(error.code == .invalidConfiguration)
        }
    }
}

/// Holds SQLite's write lock from a second connection, as another process would.
final class LockHolder: @unchecked Sendable {
    let connection: SQLiteConnection

    init(path: String) {
        self.connection = try! SQLiteConnection(path: path, busyTimeoutMilliseconds: 1000)
    }

    func lock() throws { try self.connection.execute("BEGIN IMMEDIATE") }
    func unlock() { try? self.connection.execute("COMMIT") }
}
