import Foundation
import Logging
import Synchronization

/// The one connection that writes: write-behind batches, maintenance, eviction and administration.
///
/// It runs on its own serial dispatch queue. Readers (``SQLiteReader``) never write; they leave
/// access times and expired keys in the shared ``AccessLog``, which the writer applies in its
/// transactions.
///
/// This file holds the connection and the batches of entries (and their chunks); the writer's
/// other concerns each have a file: `+Outbox` (uploads, their leases, the dead letters),
/// `+Maintenance` (access times, expiry, eviction within `maxBytes`), `+Checkpoints` (the WAL)
/// and `+Administration` (usage, listings, verification).
actor SQLiteWriter {
    typealias Configuration = SQLiteTier.Configuration
    typealias Usage = SQLiteTier.Usage
    typealias EntryInfo = SQLiteTier.EntryInfo
    typealias NamespaceSummary = SQLiteTier.NamespaceSummary
    typealias VerificationReport = SQLiteTier.VerificationReport

    nonisolated let configuration: Configuration
    /// The time by which entries expire and accesses are dated (the cache's clock); outbox leases,
    /// which other processes judge, use the wall clock.
    nonisolated let clock: any CacheClock
    nonisolated let executor: DispatchQueueExecutor
    let logger: Logger
    let accessLog = AccessLog()
    var connection: SQLiteConnection?
    var isClosed = false
    /// Bytes written since the last `TRUNCATE` checkpoint that completed.
    var bytesSinceCheckpoint = 0
    /// The clock's time before which no `TRUNCATE` is tried again (after one did not complete).
    var truncateNotBefore: Int64 = .min
    /// The WAL file's size when the last `TRUNCATE` did not complete (0 after one that did).
    var walBytesAtFailedTruncate = 0
    let busyCheckpoints = Atomic<Int>(0)
    /// Outbox claims made, which number their lease tokens.
    var claimCount = 0
    let evictions = Atomic<Int>(0)
    /// Set once the tier's first background pass after the open finished (for tests).
    let firstReclaimPassDone = Atomic<Bool>(false)
    /// Uploads this process's writer refused for want of room in the outbox (see ``OutboxBudget``).
    let refusedUploads = Atomic<Int>(0)
    /// The clock's time of the last warning about refused uploads, and the refusals since.
    var lastRefusalWarning: Int64 = .min
    var refusalsSinceWarning = 0

    nonisolated var unownedExecutor: UnownedSerialExecutor {
        self.executor.asUnownedSerialExecutor()
    }

    /// Opens (creating or migrating) the database described by `configuration`.
    static func open(
        configuration: Configuration, logger: Logger, clock: any CacheClock = SystemCacheClock()
    ) async throws -> SQLiteWriter {
        let writer = SQLiteWriter(configuration: configuration, logger: logger, clock: clock)
        try await writer.openConnection()
        return writer
    }

    private init(configuration: Configuration, logger: Logger, clock: any CacheClock) {
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        self.executor = DispatchQueueExecutor(label: "panza.sqlite.writer")
    }

    /// Entries evicted to keep within ``Configuration/maxBytes`` since the tier opened.
    nonisolated var evictionCount: Int { self.evictions.load(ordering: .relaxed) }

    func apply(_ operations: [CacheTierOperation]) throws {
        try self.apply(operations.map { SQLiteWrite(operation: $0) })
    }

    /// Applies `writes` in one transaction. Those marked `replicate` are also recorded in the
    /// outbox, for a remote tier. A fill is skipped when its key was removed since the lookup that
    /// missed it (its stamp changed) or stored since (a row exists); removals bump the stamps they
    /// change, and so do evictions and deletions of expired entries (see ``WriteStamp``).
    ///
    /// A batch larger than ``transactionByteLimit`` is applied in several transactions, each
    /// followed by its eviction and, when due, a checkpoint: a transaction's pages all stay in the
    /// WAL until it commits, so one of 512 large values would hold the file and its WAL far above
    /// ``Configuration/maxBytes``. A failure leaves the transactions before it applied; applying
    /// them again on the batch's retry changes nothing (a store rewrites the same value, a
    /// superseded upload is dropped, a removal removes nothing more).
    func apply(_ writes: [SQLiteWrite]) throws {
        var start = writes.startIndex
        while start < writes.endIndex {
            var end = start
            var bytes = 0
            repeat {
                bytes += writes[end].byteCount
                end += 1
            } while end < writes.endIndex && bytes + writes[end].byteCount <= self.transactionByteLimit
            try self.applyTransaction(writes[start..<end])
            start = end
        }
    }

    /// An eighth of ``Configuration/maxBytes``, at least 1 MiB: what a small file's WAL is sized
    /// by (the most values of one transaction, the `TRUNCATE` threshold, `journal_size_limit`),
    /// so that the disk budget, which counts the WAL, stays close to the file's bounds.
    var walScaleBytes: Int { max(1 << 20, self.configuration.maxBytes / 8) }

    /// The most bytes of values one transaction of a batch writes (a single larger value has a
    /// transaction of its own): ``walScaleBytes``, at most 32 MiB.
    var transactionByteLimit: Int { min(32 << 20, self.walScaleBytes) }

    private func applyTransaction(_ writes: ArraySlice<SQLiteWrite>) throws {
        let connection = try self.openConnectionOrThrow()
        var refused = 0
        try self.writeTransaction(connection) {
            refused = 0
            let now = self.clock.nowMilliseconds()
            for write in writes {
                let operation = write.operation
                if let stamp = write.fillStamp {
                    // A fill lands only where nothing was removed since its lookup missed (the
                    // stamp) and nothing was stored since: the row is absent, or holds an expired
                    // copy no newer than the fill's (the one the lookup found expired).
                    guard case .store(let key, _, _) = operation,
                        try WriteStamp.read(for: key, in: connection) == stamp
                    else { continue }
                } else if let stamp = write.refreshStamp {
                    // A load's store lands where nothing was removed since it started (evictions
                    // and deletions of expired entries are not removals: they do not refuse a
                    // value just paid for) and no newer value was stored since.
                    guard case .store(let key, let blob, _) = operation,
                        WriteStamp.sameRemovals(try WriteStamp.read(for: key, in: connection), stamp),
                        try !Self.holdsNewerValue(
                            key,
                            than: write.pending?.createdAtMilliseconds
                                ?? BlobEnvelope.createdAtMilliseconds(ofStored: blob) ?? now, in: connection)
                    else { continue }
                } else if case .store = operation {
                    // A store leaves a row, which is what keeps an older fill out.
                } else if write.isRepair {
                    // Deleting a copy found expired or damaged is maintenance (bumped below if a
                    // row went), not a removal: a load that started before it still lands.
                } else {
                    try WriteStamp.bump(for: operation, in: connection)
                }
                if let pending = write.pending, case .store(let key, _, let expiresAt) = operation {
                    var replicate = write.replicate
                    if replicate,
                        try !OutboxBudget.admitStore(
                            of: key, byteCount: pending.payloadCount + key.rawValue.utf8.count,
                            limit: self.configuration.outboxByteLimit, in: connection,
                            now: write.madeAtMilliseconds ?? now)
                    {
                        replicate = false
                        refused += 1
                    }
                    try BlobChunks.writeEncoding(
                        pending, key: key, expiresAtMilliseconds: expiresAt, replicate: replicate,
                        onlyIfAbsent: write.fillStamp != nil, in: connection, now: now)
                    self.accessLog.forget(key.rawValue)
                    continue
                }
                if write.replicate,
                    try OutboxBudget.enqueue(
                        operation, limit: self.configuration.outboxByteLimit, into: connection,
                        now: write.madeAtMilliseconds ?? now) == .refused
                {
                    refused += 1
                }
                switch operation {
                case .store(let key, let blob, let expiresAt):
                    let statement = try connection.statement(
                        write.fillStamp != nil
                            ? """
                            INSERT INTO entry (key, namespace, blob, size, created_at, expires_at, accessed_at, chunks)
                            VALUES (?1, ?2, ?3, ?4, ?8, ?6, ?5, ?7)
                            ON CONFLICT (key) DO UPDATE SET
                                namespace = excluded.namespace, blob = excluded.blob, size = excluded.size,
                                created_at = excluded.created_at, expires_at = excluded.expires_at,
                                accessed_at = excluded.accessed_at, chunks = excluded.chunks
                            WHERE entry.expires_at <= ?5 AND entry.created_at <= excluded.created_at
                            """
                            : """
                            INSERT INTO entry (key, namespace, blob, size, created_at, expires_at, accessed_at, chunks)
                            VALUES (?1, ?2, ?3, ?4, ?8, ?6, ?5, ?7)
                            ON CONFLICT (key) DO UPDATE SET
                                namespace = excluded.namespace, blob = excluded.blob, size = excluded.size,
                                created_at = excluded.created_at, expires_at = excluded.expires_at,
                                accessed_at = excluded.accessed_at, chunks = excluded.chunks
                            """
                    )
                    try statement.bind(key.rawValue, at: 1)
                    try statement.bind(key.namespace, at: 2)
                    try BlobChunks.bindHead(of: blob, to: statement, at: 3)
                    try statement.bind(Int64(Self.size(key: key.rawValue, blob: blob)), at: 4)
                    try statement.bind(now, at: 5)
                    try statement.bind(expiresAt, at: 6)
                    try statement.bind(Int64(BlobChunks.chunkCount(of: blob)), at: 7)
                    // When the value was made (its envelope's time), which removals bounded by
                    // creation time compare (invalidations from other machines).
                    try statement.bind(BlobEnvelope.createdAtMilliseconds(ofStored: blob) ?? now, at: 8)
                    try statement.run()
                    // A fill that found the row taken changed nothing; its chunks must not land.
                    if blob.count > BlobChunks.chunkSize, connection.changes > 0 {
                        try BlobChunks.writeTail(of: blob, owner: BlobChunks.owner(entry: key.rawValue), in: connection)
                    }
                    self.accessLog.forget(key.rawValue)
                case .remove(let key):
                    let statement = try connection.statement(
                        "DELETE FROM entry WHERE key = ?1 AND (?2 IS NULL OR created_at < ?2)")
                    try statement.bind(key.rawValue, at: 1)
                    try statement.bind(write.createdBefore, at: 2)
                    try statement.run()
                    if write.isRepair, connection.changes > 0 {
                        try WriteStamp.bumpMaintenance(forKeys: [key.rawValue], in: connection)
                    }
                    self.accessLog.forget(key.rawValue)
                case .removeNamespace(let namespace):
                    let statement = try connection.statement(
                        "DELETE FROM entry WHERE namespace = ?1 AND (?2 IS NULL OR created_at < ?2)")
                    try statement.bind(namespace, at: 1)
                    try statement.bind(write.createdBefore, at: 2)
                    try statement.run()
                case .removeAll:
                    let statement = try connection.statement("DELETE FROM entry WHERE ?1 IS NULL OR created_at < ?1")
                    try statement.bind(write.createdBefore, at: 1)
                    try statement.run()
                    if write.createdBefore == nil { self.accessLog.forgetAll() }
                }
            }
            try self.writePendingMaintenance(connection, now: now)
            try self.evictIfNeeded(connection)
        }
        if refused > 0 { self.noteRefusedUploads(refused) }
        // A replicated store is written twice: its entry and its outbox record.
        self.bytesSinceCheckpoint += writes.reduce(0) { $0 + ($1.replicate ? 2 : 1) * $1.byteCount }
        self.truncateIfDue(connection)
    }

    /// Runs `body` in a write transaction, then schedules a checkpoint for when the writer is idle.
    func writeTransaction<Result>(_ connection: SQLiteConnection, _ body: () throws -> Result) throws
        -> Result
    {
        let result = try connection.writeTransaction {
            try self.checkSchemaIsKnown(connection)
            return try body()
        }
        self.writeGeneration &+= 1
        self.startIdleCheckpointTimer()
        return result
    }

    /// The schema version a newer Panza migrated the file to while this tier had it open (0: none).
    /// The tier then stops using the file: every write and lookup throws
    /// ``PanzaError/Code/unsupportedSchemaVersion``, which write-behind counts as permanent.
    let newerSchemaVersion = Atomic<Int64>(0)

    /// Throws, logging once, when the file's schema is newer than this Panza knows: a newer
    /// process migrated it after this one opened it, and its rows may no longer mean what this
    /// version would read or write. Runs at the start of every write transaction (reading the
    /// header's `user_version` costs no I/O), and so with every background pass.
    func checkSchemaIsKnown(_ connection: SQLiteConnection) throws {
        let statement = try connection.statement("PRAGMA user_version")
        let version = try statement.step() ? statement.int64(at: 0) : 0
        statement.reset()
        guard version > SQLiteSchema.currentVersion else { return }
        let error = Self.newerSchemaError(version, path: self.configuration.path)
        if self.newerSchemaVersion.exchange(version, ordering: .relaxed) == 0 {
            self.logger.error(
                "panza: \(error.message)", metadata: ["path": "\(self.configuration.path)", "version": "\(version)"])
        }
        throw error
    }

    static func newerSchemaError(_ version: Int64, path: String) -> PanzaError {
        PanzaError(
            code: .unsupportedSchemaVersion,
            message: "a newer Panza migrated the file to schema version \(version) while it was open; "
                + "this Panza reads up to \(SQLiteSchema.currentVersion) and stopped using it (neither reads nor "
                + "writes). Upgrade every process that shares the file",
            path: path)
    }

    /// Counts write transactions, so that a scheduled idle checkpoint knows whether one came since.
    var writeGeneration = 0
    var idleCheckpointScheduled = false
    let idleCheckpoints = Atomic<Int>(0)
    /// Callers of ``waitForIdleCheckpoint(after:)``, with the count each waits to see passed.
    var idleCheckpointWaiters: [(after: Int, continuation: CheckedContinuation<Void, Never>)] = []

    /// How many idle checkpoints ran (for tests).
    nonisolated var idleCheckpointCount: Int { self.idleCheckpoints.load(ordering: .relaxed) }

    func close() {
        guard !self.isClosed else { return }
        if let connection = self.connection {
            do {
                try connection.writeTransaction {
                    try self.writePendingMaintenance(connection, now: self.clock.nowMilliseconds())
                }
            } catch {
                self.logger.debug("panza: could not record access times on close", metadata: ["error": "\(error)"])
            }
            connection.close()
        }
        self.connection = nil
        self.isClosed = true
        self.resumeIdleCheckpointWaiters(all: true)
    }

    /// Whether the row of `key` holds a value made at or after `createdAt` (a refresh's start:
    /// the stale value it replaces was made before it, by at least its time to live).
    static func holdsNewerValue(_ key: CacheKey, than createdAt: Int64, in connection: SQLiteConnection) throws
        -> Bool
    {
        let statement = try connection.statement(
            "SELECT EXISTS (SELECT 1 FROM entry WHERE key = ?1 AND created_at >= ?2)")
        defer { statement.reset() }
        try statement.bind(key.rawValue, at: 1)
        try statement.bind(createdAt, at: 2)
        return try statement.step() && statement.int64(at: 0) == 1
    }

    // MARK: Internals

    /// The bytes an entry counts against ``Configuration/maxBytes``.
    static func size(key: String, blob: [UInt8]) -> Int { blob.count + key.utf8.count }

    func openConnectionOrThrow() throws -> SQLiteConnection {
        guard let connection = self.connection else {
            throw PanzaError(code: .closed, message: "the SQLite tier is closed", path: self.configuration.path)
        }
        return connection
    }

    func openConnection() throws {
        do {
            self.connection = try self.makeConnection()
        } catch let error as PanzaError where error.code == .corruptDatabase && self.configuration.rebuildIfUnreadable {
            let movedTo = try Self.moveAside(self.configuration.path)
            self.logger.warning(
                "panza: SQLite file was unreadable; moved it aside and started a new one",
                metadata: ["path": "\(self.configuration.path)", "movedTo": "\(movedTo)", "error": "\(error)"]
            )
            self.connection = try self.makeConnection()
        }
        // Nothing proportional to the file's size happens here: expired entries are reclaimed,
        // and a lowered maxBytes enforced, by the tier's background pass (reclaimExpired, evictIfOverLimit).
    }

    func makeConnection() throws -> SQLiteConnection {
        let timeout = Int32(clamping: self.configuration.busyTimeout.wholeMilliseconds)
        let connection = try SQLiteConnection(path: self.configuration.path, busyTimeoutMilliseconds: timeout)
        do {
            // Refuse a foreign or newer file before anything writes to it.
            try SQLiteSchema.checkOwnershipInSnapshot(connection)
            try connection.execute("PRAGMA journal_mode = WAL")
            // A small file keeps a small WAL beside it (the disk budget counts both).
            let journalLimit = min(Self.journalSizeLimit, self.walScaleBytes)
            try connection.execute("PRAGMA journal_size_limit = \(journalLimit)")
            try connection.execute("PRAGMA synchronous = \(self.configuration.synchronous.rawValue)")
            // Builds with SECURE_DELETE (Debian's, Ubuntu's) zero every freed page and write it to
            // the WAL: deleting 10 MiB of blobs wrote 10.6 MB, and every upload's outbox row passed
            // through the WAL twice more. FAST zeroes only what costs no extra I/O.
            try connection.execute("PRAGMA secure_delete = FAST")
            try SQLiteSchema.prepare(connection)
            return connection
        } catch {
            connection.close()
            throw error
        }
    }

    static func moveAside(_ path: String) throws -> String {
        let destination = "\(path).unreadable-\(WallClock.nowMilliseconds())"
        let fileManager = FileManager.default
        do {
            try fileManager.moveItem(atPath: path, toPath: destination)
            for suffix in ["-wal", "-shm"] where fileManager.fileExists(atPath: path + suffix) {
                try fileManager.moveItem(atPath: path + suffix, toPath: destination + suffix)
            }
        } catch {
            throw PanzaError(
                code: .databaseFailure,
                message: "could not move the unreadable file aside",
                path: path,
                underlying: error
            )
        }
        return destination
    }
}
