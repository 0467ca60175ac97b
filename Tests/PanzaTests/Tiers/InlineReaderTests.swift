import Foundation
import PanzaTestSupport
import Testing

@testable import Panza

/// The read transaction an inline reader keeps across lookups (`InlineReader`): it must never
/// show a state older than a lookup in a transaction of its own would, whoever committed, and must
/// not pin the WAL once idle.
struct InlineReaderTests {
    let directory: TemporaryDirectory
    let log = AccessLog()

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    func blob(_ text: String) -> [UInt8] {
        BlobEnvelope(
            contentType: .text, payload: Array(text.utf8), createdAtMilliseconds: WallClock.nowMilliseconds(),
            timeToLiveMilliseconds: 0
        ).encoded(compress: false)
    }

    func store(_ key: String, _ text: String) -> CacheTierOperation {
        .store(key: CacheKey(rawValue: key), blob: self.blob(text), expiresAtMilliseconds: nil)
    }

    /// The payload of `key` as text, read on `pool`. A lookup that meets a lock (SQLite's busy
    /// answer, with no busy timeout) is left to the queues: it is tried again, a bounded number of
    /// times.
    func read(_ pool: InlineReaderPool, _ key: String) throws -> String? {
        var answer: (found: TierFound?, missStamp: Int64?, requestMaintenance: Bool)?
        for _ in 0..<1_000 where answer == nil {
            answer = try pool.lookup(CacheKey(rawValue: key), log: self.log, decodingUpTo: nil)
        }
        let found = try #require(answer, "every lookup met a lock").found
        guard let found else { return nil }
        guard case .blob(let bytes) = found else {
            Issue.record("expected the stored bytes, got \(found)")
            return nil
        }
        return String(decoding: try BlobEnvelope.decode(bytes).payload, as: UTF8.self)
    }

    func pool(_ path: String, idleTransaction: Duration = .seconds(600)) throws -> InlineReaderPool {
        try InlineReaderPool(
            path: path, count: 1, memoryMapBytes: 1 << 20, accessTimeResolution: 60_000,
            slowLookup: .seconds(3_600), idleTransaction: idleTransaction)
    }

    @Test("A kept read transaction serves lookups until this process commits, then sees the commit")
    func commitsOfThisProcess() async throws {
        let path = self.directory.path("kept.sqlite")
        let tier = try await SQLiteTier.open(configuration: .init(path: path))
        try await tier.apply([self.store("k", "first")])
        let pool = try self.pool(path)
        defer { pool.close() }
        #expect(pool.keepsTransactions, "the WAL index of a WAL-mode file can be watched")

        #expect(try self.read(pool, "k") == "first")
        #expect(try self.read(pool, "k") == "first")
        #expect(try self.read(pool, "missing") == nil)
        #expect(pool.transactionsBegunCount == 1, "three lookups, nothing committed: one transaction")
        #expect(pool.heldTransactionCount == 1)

        try await tier.apply([self.store("k", "second")])
        #expect(try self.read(pool, "k") == "second", "a replaced value is never served")
        try await tier.apply([.remove(CacheKey(rawValue: "k"))])
        #expect(try self.read(pool, "k") == nil, "a removed value is never served")
        try await tier.apply([self.store("new", "third")])
        #expect(try self.read(pool, "new") == "third")
        #expect(pool.transactionsBegunCount == 4, "one transaction after each commit")
        await tier.close()
    }

    @Test("A kept read transaction sees the commits of another process at once")
    func commitsOfAnotherProcess() async throws {
        let path = self.directory.path("shared.sqlite")
        let tier = try await SQLiteTier.open(configuration: .init(path: path))
        let child = try ChildProcess.start(["script", path])
        defer { child.kill(signal: SIGKILL) }
        #expect(await child.ask("set k first") == "ok")
        #expect(await child.ask("flush") == "ok")
        let pool = try self.pool(path)
        defer { pool.close() }
        #expect(try self.read(pool, "k")?.contains("first") == true)
        #expect(pool.heldTransactionCount == 1)

        for round in 0..<20 {
            #expect(await child.ask("set k value-\(round)") == "ok")
            #expect(await child.ask("flush") == "ok")
            #expect(try self.read(pool, "k")?.contains("value-\(round)") == true, "round \(round)")
        }
        #expect(await child.ask("remove k") == "ok")
        #expect(await child.ask("flush") == "ok")
        #expect(try self.read(pool, "k") == nil, "a removal by another process is seen")
        #expect(await child.ask("quit") == "bye")
        await tier.close()
    }

    @Test("An idle reader's transaction ends, so that another process can restart and truncate the WAL")
    func idleTransactionEnds() async throws {
        let path = self.directory.path("idle.sqlite")
        var configuration = SQLiteTier.Configuration(path: path)
        configuration.inlineReaderCount = 0
        let tier = try await SQLiteTier.open(configuration: configuration)
        try await tier.apply([self.store("k", "first")])
        let pool = try self.pool(path, idleTransaction: .milliseconds(5))
        defer { pool.close() }
        #expect(try self.read(pool, "k") == "first")
        // A commit after the reader's snapshot: the reader, now idle, holds frames the checkpoint
        // must wait for.
        try await tier.apply([self.store("k", "second")])

        // A TRUNCATE checkpoint waits (its busy handler, up to 30 s) until every reader left the
        // WAL: it succeeds only once the idle transaction ended.
        let other = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 30_000)
        defer { other.close() }
        #expect(try !other.truncateCheckpointIsBusy(), "a reader still held the WAL")
        #expect(pool.heldTransactionCount == 0)
        let walBytes = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int
        #expect(walBytes == 0)
        #expect(try self.read(pool, "k") == "second")
        await tier.close()
    }

    @Test("A checkpoint's progress ends a kept transaction at the next lookup")
    func checkpointProgress() async throws {
        let path = self.directory.path("progress.sqlite")
        // A file with the schema, then written by one connection that checkpoints only when told.
        let setup = try await SQLiteTier.open(configuration: .init(path: path))
        await setup.close()
        let other = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 0)
        defer { other.close() }
        let insert = try other.statement(
            "INSERT INTO entry (key, namespace, blob, size, created_at, accessed_at) VALUES ('k', '', ?, 1, 0, 0)")
        try insert.bind(self.blob("first"), at: 1)
        #expect(try !insert.step())
        insert.reset()
        let pool = try self.pool(path)
        defer { pool.close() }
        // The WAL holds the commit: the reader's snapshot reads it from there.
        #expect(try self.read(pool, "k") == "first")
        let begun = pool.transactionsBegunCount
        #expect(try self.read(pool, "k") == "first")
        #expect(pool.transactionsBegunCount == begun, "nothing changed: the transaction is kept")
        let checkpoint = try other.statement("PRAGMA wal_checkpoint(PASSIVE)")
        #expect(try checkpoint.step())
        checkpoint.reset()
        // The frames are now in the database file: the next lookup moves off the WAL, which lets
        // a later checkpoint restart it.
        #expect(try self.read(pool, "k") == "first")
        #expect(pool.transactionsBegunCount == begun + 1)
    }
    /// Another process's TRUNCATE checkpoint, which does not wait: its "busy" column.
    func checkpointIsBusy(_ path: String) async throws -> Bool {
        let result = try await ChildProcess.start(["checkpoint", path]).wait()
        #expect(result.status == 0, "the checkpoint process failed: \(result.error)")
        return result.output.hasPrefix("busy=1")
    }

    @Test(
        "Releasing another cache of the same file in this process keeps SQLite's locks: a kept transaction still blocks a TRUNCATE"
    )
    func releasingAnotherCacheKeepsTheLocks() async throws {
        let path = self.directory.path("locks.sqlite")
        var configuration = SQLiteTier.Configuration(path: path)
        configuration.inlineReaderCount = 0
        let tier = try await SQLiteTier.open(configuration: configuration)
        try await tier.apply([self.store("k", "first")])
        let pool = try self.pool(path)
        #expect(pool.keepsTransactions)
        #expect(try self.read(pool, "k") == "first")
        // A commit after the kept snapshot: a TRUNCATE checkpoint must wait for the reader.
        try await tier.apply([self.store("k", "second")])
        #expect(try await self.checkpointIsBusy(path), "the kept transaction did not block the checkpoint")

        // A second cache of the file in this process, closed, then released (a reload).
        let second = try await TieredCache(
            configuration: {
                var configuration = TieredCache.Configuration()
                configuration.memory = nil
                configuration.sqlite = .init(path: path)
                configuration.modes = CacheModes()
                return configuration
            }())
        #expect(try await second.value(forKey: "absent", as: String.self) == nil)
        try await second.close()
        // And a tier released without close().
        var third: SQLiteTier? = try await SQLiteTier.open(configuration: .init(path: path))
        _ = try await third?.storedBlob(forKey: "k")
        third = nil

        #expect(try await self.checkpointIsBusy(path), "releasing a cache of the file dropped this process's locks")
        #expect(pool.heldTransactionCount == 1)
        #expect(try self.read(pool, "k") == "second")
        pool.close()
        await tier.close()
    }
}
