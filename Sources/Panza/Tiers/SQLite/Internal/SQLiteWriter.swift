import Foundation
import Logging
import Synchronization

/// The one connection that writes: write-behind batches, maintenance, eviction and administration.
///
/// It runs on its own serial dispatch queue. Readers (``SQLiteReader``) never write; they leave
/// access times and expired keys in the shared ``AccessLog``, which the writer applies in its
/// transactions.
actor SQLiteWriter {
    typealias Configuration = SQLiteTier.Configuration
    typealias Usage = SQLiteTier.Usage
    typealias EntryInfo = SQLiteTier.EntryInfo
    typealias NamespaceSummary = SQLiteTier.NamespaceSummary
    typealias VerificationReport = SQLiteTier.VerificationReport

    nonisolated let configuration: Configuration
    /// The time by which entries expire and accesses are dated (the cache's clock); outbox leases,
    /// which other processes judge, use the wall clock.
    private nonisolated let clock: any CacheClock
    private nonisolated let executor: DispatchQueueExecutor
    private let logger: Logger
    let accessLog = AccessLog()
    private var connection: SQLiteConnection?
    private var isClosed = false
    private var bytesSinceCheckpoint = 0
    private let evictions = Atomic<Int>(0)

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
    func apply(_ writes: [SQLiteWrite]) throws {
        let connection = try self.openConnectionOrThrow()
        try self.writeTransaction(connection) {
            let now = self.clock.nowMilliseconds()
            for write in writes {
                let operation = write.operation
                if let stamp = write.fillStamp {
                    // A fill lands only where nothing was removed since its lookup missed (the
                    // stamp) and nothing was stored since (the row is still absent).
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
                    try BlobChunks.writeEncoding(
                        pending, key: key, expiresAtMilliseconds: expiresAt, replicate: write.replicate,
                        onlyIfAbsent: write.fillStamp != nil, in: connection, now: now)
                    self.accessLog.forget(key.rawValue)
                    continue
                }
                if write.replicate {
                    try OutboxRecord.insert(operation, into: connection, now: write.madeAtMilliseconds ?? now)
                }
                switch operation {
                case .store(let key, let blob, let expiresAt):
                    let statement = try connection.statement(
                        write.fillStamp != nil
                            ? """
                            INSERT INTO entry (key, namespace, blob, size, created_at, expires_at, accessed_at, chunks)
                            VALUES (?1, ?2, ?3, ?4, ?8, ?6, ?5, ?7)
                            ON CONFLICT (key) DO NOTHING
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
                    if write.isRepair, connection.changes > 0 { try WriteStamp.bumpMaintenance(in: connection) }
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
        self.bytesSinceCheckpoint += writes.reduce(0) { total, item in
            if let pending = item.pending { return total + pending.payloadCount }
            if case .store(_, let blob, _) = item.operation { return total + blob.count }
            return total
        }
        if self.bytesSinceCheckpoint >= Self.checkpointAfterBytes {
            self.bytesSinceCheckpoint = 0
            self.checkpoint(connection, mode: "TRUNCATE")
        }
    }

    /// Runs `body` in a write transaction, then schedules a checkpoint for when the writer is idle.
    private func writeTransaction<Result>(_ connection: SQLiteConnection, _ body: () throws -> Result) throws
        -> Result
    {
        let result = try connection.writeTransaction(body)
        self.writeGeneration &+= 1
        self.startIdleCheckpointTimer()
        return result
    }

    /// How long the writer must have written nothing before it checkpoints the WAL.
    static let idleCheckpointDelay = Duration.milliseconds(100)
    /// Counts write transactions, so that a scheduled idle checkpoint knows whether one came since.
    private var writeGeneration = 0
    private var idleCheckpointScheduled = false
    private let idleCheckpoints = Atomic<Int>(0)
    /// Callers of ``waitForIdleCheckpoint(after:)``, with the count each waits to see passed.
    private var idleCheckpointWaiters: [(after: Int, continuation: CheckedContinuation<Void, Never>)] = []

    /// How many idle checkpoints ran (for tests).
    nonisolated var idleCheckpointCount: Int { self.idleCheckpoints.load(ordering: .relaxed) }

    /// Returns once more than `count` idle checkpoints ran, or the writer closed (for tests).
    func waitForIdleCheckpoint(after count: Int) async {
        guard self.idleCheckpointCount <= count, !self.isClosed else { return }
        await withCheckedContinuation { self.idleCheckpointWaiters.append((count, $0)) }
    }

    /// Resumes the waiters whose count was passed; every waiter when `all` (the writer closed).
    private func resumeIdleCheckpointWaiters(all: Bool = false) {
        let count = self.idleCheckpointCount
        self.idleCheckpointWaiters.removeAll { waiter in
            guard all || count > waiter.after else { return false }
            waiter.continuation.resume()
            return true
        }
    }

    /// Copies the WAL into the database file once no write came for ``idleCheckpointDelay``.
    ///
    /// A reader whose snapshot is wholly in the database file skips the WAL: its pages come from
    /// the memory-mapped file, without a search of the WAL index and a `pread` for each page the
    /// WAL holds. A `PASSIVE` checkpoint waits for no reader or writer.
    private func startIdleCheckpointTimer() {
        guard !self.idleCheckpointScheduled else { return }
        self.idleCheckpointScheduled = true
        let generation = self.writeGeneration
        Task {
            try? await Task.sleep(for: Self.idleCheckpointDelay)
            self.idleCheckpoint(ifStill: generation)
        }
    }

    private func idleCheckpoint(ifStill generation: Int) {
        self.idleCheckpointScheduled = false
        guard let connection = self.connection, !self.isClosed else { return }
        guard generation == self.writeGeneration else {
            // Written since: wait for the writer to be idle again.
            self.startIdleCheckpointTimer()
            return
        }
        if self.checkpoint(connection, mode: "PASSIVE") {
            self.idleCheckpoints.add(1, ordering: .relaxed)
            self.resumeIdleCheckpointWaiters()
        }
    }

    /// The WAL is truncated to at most this after a checkpoint (`PRAGMA journal_size_limit`).
    static let journalSizeLimit = 64 << 20
    /// A `TRUNCATE` checkpoint runs after this many bytes were written, so that large batches do
    /// not leave a large WAL behind.
    static let checkpointAfterBytes = 32 << 20

    /// Runs a checkpoint of `mode` (`TRUNCATE` or `PASSIVE`); a failure is logged and the
    /// checkpoint left for later. Returns whether it ran.
    @discardableResult
    private func checkpoint(_ connection: SQLiteConnection, mode: StaticString) -> Bool {
        do {
            try connection.execute("PRAGMA wal_checkpoint(\(mode))")
            return true
        } catch {
            self.logger.debug("panza: WAL checkpoint deferred", metadata: ["mode": "\(mode)", "error": "\(error)"])
            return false
        }
    }

    /// Deletes up to `limit` expired entries. Returns how many; run by the tier in the background.
    @discardableResult
    func reclaimExpired(limit: Int) throws -> Int {
        let connection = try self.openConnectionOrThrow()
        return try self.writeTransaction(connection) {
            let statement = try connection.statement(
                "DELETE FROM entry WHERE key IN (SELECT key FROM entry WHERE expires_at <= ?1 LIMIT ?2)"
            )
            try statement.bind(self.clock.nowMilliseconds(), at: 1)
            try statement.bind(Int64(limit), at: 2)
            try statement.run()
            let deleted = connection.changes
            if deleted > 0 { try WriteStamp.bumpMaintenance(in: connection) }
            return deleted
        }
    }

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

    // MARK: Outbox

    /// Claims the oldest outbox records that no other live process holds; records of a kind this
    /// version cannot read go straight to the dead letters.
    func claimOutbox(limit: Int, owner: String, lease: Duration) throws -> [QueuedWrite] {
        let connection = try self.openConnectionOrThrow()
        let now = WallClock.nowMilliseconds()
        let (claimed, unreadable) = try OutboxRecord.claim(
            in: connection,
            limit: limit,
            owner: owner,
            leaseMilliseconds: lease.wholeMilliseconds,
            now: now,
            ownerIsAlive: OutboxLeaseOwner.isAlive
        )
        for (id, error) in unreadable {
            self.logger.error(
                "panza: outbox record unreadable; moved to the dead letters",
                metadata: ["id": "\(id)", "error": "\(error)"]
            )
            try OutboxRecord.deadLetter(id: id, error: error.message, in: connection, now: now)
        }
        if claimed.isEmpty, !unreadable.isEmpty {
            return try self.claimOutbox(limit: limit, owner: owner, lease: lease)
        }
        return claimed
    }

    /// Deletes outbox records once the remote tier applied them.
    func completeOutbox(_ batch: [QueuedWrite]) throws {
        try OutboxRecord.complete(batch, in: try self.openConnectionOrThrow())
    }

    func recordOutboxFailure(_ batch: [QueuedWrite], owner: String) throws {
        try OutboxRecord.recordFailure(batch, owner: owner, in: try self.openConnectionOrThrow())
    }

    func renewOutboxLease(ids: ClosedRange<Int64>, owner: String, lease: Duration) throws {
        try OutboxRecord.renewLease(
            ids: ids, owner: owner, leaseMilliseconds: lease.wholeMilliseconds, now: WallClock.nowMilliseconds(),
            in: try self.openConnectionOrThrow())
    }

    /// Whether the row of `key` holds a value made at or after `createdAt` (a refresh's start:
    /// the stale value it replaces was made before it, by at least its time to live).
    private static func holdsNewerValue(_ key: CacheKey, than createdAt: Int64, in connection: SQLiteConnection) throws
        -> Bool
    {
        let statement = try connection.statement(
            "SELECT EXISTS (SELECT 1 FROM entry WHERE key = ?1 AND created_at >= ?2)")
        defer { statement.reset() }
        try statement.bind(key.rawValue, at: 1)
        try statement.bind(createdAt, at: 2)
        return try statement.step() && statement.int64(at: 0) == 1
    }

    func acquireRefreshLease(key: CacheKey, holder: String, now: Int64, until: Int64) throws -> Int64? {
        let connection = try self.openConnectionOrThrow()
        return try self.writeTransaction(connection) {
            try RefreshLease.acquire(key: key, holder: holder, now: now, until: until, in: connection)
        }
    }

    func releaseRefreshLease(key: CacheKey, holder: String) throws {
        try RefreshLease.release(key: key, holder: holder, in: try self.openConnectionOrThrow())
    }

    func outboxPiece(id: Int64, index: Int) throws -> [UInt8] {
        try OutboxRecord.piece(id: id, index: index, in: try self.openConnectionOrThrow())
    }

    func releaseOutboxLeases(owner: String) throws {
        try OutboxRecord.releaseLeases(owner: owner, in: try self.openConnectionOrThrow())
    }

    func deadLetterOutbox(id: Int64, error: String) throws {
        try OutboxRecord.deadLetter(
            id: id, error: error, in: try self.openConnectionOrThrow(), now: WallClock.nowMilliseconds())
    }

    func outboxWatermark() throws -> (watermark: UInt64, last: UInt64) {
        try OutboxRecord.watermark(in: try self.openConnectionOrThrow())
    }

    /// How many records wait in the outbox.
    func outboxCount() throws -> Int {
        let statement = try self.openConnectionOrThrow().statement("SELECT count(*) FROM outbox")
        defer { statement.reset() }
        return try statement.step() ? Int(statement.int64(at: 0)) : 0
    }

    /// The dead letters, oldest first.
    func deadLetters(limit: Int?) throws -> [DeadLetter] {
        let statement = try self.openConnectionOrThrow().statement(
            """
            SELECT id, kind, key, namespace, length(blob), expires_at, attempts, error, failed_at,
                (SELECT coalesce(sum(length(bytes)), 0) FROM blob_chunk WHERE owner = 'dead_letter:' || id)
            FROM dead_letter ORDER BY id LIMIT ?
            """
        )
        defer { statement.reset() }
        try statement.bind(Int64(limit ?? -1), at: 1)
        var result: [DeadLetter] = []
        while try statement.step() {
            let kind = OutboxRecord.Kind(rawValue: statement.int64(at: 1))
            result.append(
                DeadLetter(
                    id: statement.int64(at: 0),
                    operation: kind.map { "\($0)" } ?? "unknown(\(statement.int64(at: 1)))",
                    key: statement.optionalText(at: 2),
                    namespace: statement.optionalText(at: 3),
                    bytes: Int(statement.int64(at: 4) + statement.int64(at: 9)),
                    attempts: Int(statement.int64(at: 6)),
                    error: statement.text(at: 7),
                    failedAtMilliseconds: statement.int64(at: 8)
                )
            )
        }
        return result
    }

    func deadLetterCount() throws -> Int {
        let statement = try self.openConnectionOrThrow().statement("SELECT count(*) FROM dead_letter")
        defer { statement.reset() }
        return try statement.step() ? Int(statement.int64(at: 0)) : 0
    }

    /// Puts the dead letters back in the outbox, as the local file now sees them: a key is uploaded
    /// with its current local entry (or removed when there is none), so that a retried old write
    /// never overwrites a newer one; a removal of a namespace or of everything is sent again,
    /// followed by the current local entries it covers. Returns how many dead letters were retried.
    func retryDeadLetters() throws -> Int {
        let connection = try self.openConnectionOrThrow()
        return try self.writeTransaction(connection) {
            let select = try connection.statement("SELECT id, kind, key, namespace FROM dead_letter ORDER BY id")
            var letters: [(kind: Int64, key: String?, namespace: String?)] = []
            while try select.step() {
                letters.append((select.int64(at: 1), select.optionalText(at: 2), select.optionalText(at: 3)))
            }
            select.reset()
            let now = self.clock.nowMilliseconds()
            let current = try connection.statement(
                "SELECT key, namespace, blob, expires_at, chunks FROM entry WHERE key = ?")
            let scope = try connection.statement(
                """
                SELECT key, namespace, blob, expires_at, chunks FROM entry WHERE ?1 IS NULL OR namespace = ?1
                ORDER BY key
                """
            )
            func storeCurrent(_ statement: SQLiteStatement) throws {
                try OutboxRecord.insert(
                    .store(
                        key: CacheKey(namespace: statement.text(at: 1), rawValue: statement.text(at: 0)),
                        blob: try BlobChunks.assemble(
                            head: statement, column: 2, chunks: statement.int64(at: 4),
                            owner: BlobChunks.owner(entry: statement.text(at: 0)), in: connection),
                        expiresAtMilliseconds: statement.optionalInt64(at: 3)
                    ),
                    into: connection,
                    now: now
                )
            }
            for letter in letters {
                switch OutboxRecord.Kind(rawValue: letter.kind) {
                case .store, .remove:
                    guard let key = letter.key else { continue }
                    current.reset()
                    try current.bind(key, at: 1)
                    if try current.step() {
                        try storeCurrent(current)
                    } else {
                        try OutboxRecord.insert(
                            .remove(CacheKey(namespace: letter.namespace ?? "", rawValue: key)), into: connection,
                            now: now)
                    }
                    current.reset()
                case .removeNamespace, .removeAll:
                    let namespace = letter.kind == OutboxRecord.Kind.removeAll.rawValue ? nil : letter.namespace
                    try OutboxRecord.insert(
                        namespace.map { .removeNamespace($0) } ?? .removeAll, into: connection, now: now)
                    scope.reset()
                    if let namespace { try scope.bind(namespace, at: 1) }
                    while try scope.step() { try storeCurrent(scope) }
                    scope.reset()
                case nil:
                    continue  // a newer Panza's record: left for it
                }
            }
            let delete = try connection.statement("DELETE FROM dead_letter WHERE kind IN (0, 1, 2, 3)")
            try delete.run()
            return connection.changes
        }
    }

    /// Deletes the dead letters. Returns how many.
    func discardDeadLetters() throws -> Int {
        let connection = try self.openConnectionOrThrow()
        return try self.writeTransaction(connection) {
            try connection.statement("DELETE FROM dead_letter").run()
            return connection.changes
        }
    }

    // MARK: Administration

    /// How full the tier is.
    func usage() throws -> Usage {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement("SELECT bytes, entries FROM usage WHERE id = 0")
        defer { statement.reset() }
        guard try statement.step() else { return Usage(bytes: 0, entries: 0, fileBytes: 0) }
        let bytes = Int(statement.int64(at: 0))
        let entries = Int(statement.int64(at: 1))
        statement.reset()
        let pages = try connection.statement(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
        defer { pages.reset() }
        let fileBytes = try pages.step() ? Int(pages.int64(at: 0)) : 0
        return Usage(bytes: bytes, entries: entries, fileBytes: fileBytes)
    }

    /// Entries and bytes per namespace, largest first.
    func namespaceSummaries() throws -> [NamespaceSummary] {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement(
            "SELECT namespace, count(*), sum(size) FROM entry GROUP BY namespace ORDER BY sum(size) DESC, namespace"
        )
        defer { statement.reset() }
        var result: [NamespaceSummary] = []
        while try statement.step() {
            result.append(
                NamespaceSummary(
                    namespace: statement.text(at: 0),
                    entries: Int(statement.int64(at: 1)),
                    bytes: Int(statement.int64(at: 2))
                )
            )
        }
        return result
    }

    /// Rebuilds the file to return free pages to the file system (`VACUUM`).
    func compact() throws {
        try self.openConnectionOrThrow().execute("VACUUM")
    }

    /// Lists entries, most recently used first.
    ///
    /// - Parameters:
    ///   - namespace: only the entries of this memoize id (`""` for plain keys); `nil` for all.
    ///   - limit: at most this many; `nil` for all.
    func entries(namespace: String? = nil, limit: Int? = nil) throws -> [EntryInfo] {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement(
            """
            SELECT key, namespace, size, created_at, expires_at, accessed_at, substr(blob, 1, 40) FROM entry
            WHERE ?1 IS NULL OR namespace = ?1 ORDER BY accessed_at DESC, key LIMIT ?2
            """
        )
        defer { statement.reset() }
        if let namespace { try statement.bind(namespace, at: 1) }
        try statement.bind(Int64(limit ?? -1), at: 2)
        var result: [EntryInfo] = []
        while try statement.step() {
            // The row's expires_at is when the entry may go (the end of its stale period); when
            // it turns stale is in the envelope's header.
            let times = BlobEnvelope.times(ofStored: statement.bytes(at: 6))
            result.append(
                EntryInfo(
                    key: statement.text(at: 0),
                    namespace: statement.text(at: 1),
                    size: Int(statement.int64(at: 2)),
                    createdAtMilliseconds: statement.int64(at: 3),
                    expiresAtMilliseconds: times.map(\.freshUntil) ?? statement.optionalInt64(at: 4),
                    staleUntilMilliseconds: times == nil ? nil : statement.optionalInt64(at: 4),
                    accessedAtMilliseconds: statement.int64(at: 5)
                )
            )
        }
        return result
    }

    /// The stored bytes of `key`, expired or not, without recording an access.
    func storedBlob(forKey key: String) throws -> [UInt8]? {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement("SELECT blob, chunks FROM entry WHERE key = ?")
        defer { statement.reset() }
        try statement.bind(key, at: 1)
        guard try statement.step() else { return nil }
        return try BlobChunks.assemble(
            head: statement, column: 0, chunks: statement.int64(at: 1), owner: BlobChunks.owner(entry: key),
            in: connection)
    }

    /// Checks the envelope of every entry.
    ///
    /// - Parameter removeCorrupt: delete the entries that fail.
    func verify(removeCorrupt: Bool) throws -> VerificationReport {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement("SELECT key, blob, chunks FROM entry ORDER BY key")
        var checked = 0
        var corrupt: [String] = []
        do {
            defer { statement.reset() }
            while try statement.step() {
                checked += 1
                do {
                    _ = try BlobEnvelope.decode(
                        try BlobChunks.assemble(
                            head: statement, column: 1, chunks: statement.int64(at: 2),
                            owner: BlobChunks.owner(entry: statement.text(at: 0)), in: connection))
                } catch {
                    corrupt.append(statement.text(at: 0))
                }
            }
        }
        if removeCorrupt, !corrupt.isEmpty {
            try self.apply(corrupt.map { .remove(CacheKey(rawValue: $0)) })
        }
        return VerificationReport(checked: checked, corruptKeys: corrupt, removed: removeCorrupt && !corrupt.isEmpty)
    }

    /// Deletes every expired entry now. Returns how many were deleted.
    @discardableResult
    func removeExpired() throws -> Int {
        let connection = try self.openConnectionOrThrow()
        return try self.writeTransaction(connection) {
            let statement = try connection.statement("DELETE FROM entry WHERE expires_at <= ?")
            try statement.bind(self.clock.nowMilliseconds(), at: 1)
            try statement.run()
            let deleted = connection.changes
            if deleted > 0 { try WriteStamp.bumpMaintenance(in: connection) }
            return deleted
        }
    }

    /// Moves an unreadable database file (and its `-wal` and `-shm` files) aside, so that the next
    /// open starts a new one. Returns the new path of the old file.
    ///
    /// Refuses a database of another application and a readable Panza file: it exists to recover from
    /// ``PanzaError/Code/corruptDatabase``. To empty a readable cache, apply ``CacheTierOperation/removeAll``.
    static func moveAsideUnreadableFile(atPath path: String) throws -> String {
        do {
            let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 1000)
            defer { connection.close() }
            try SQLiteSchema.checkReadable(connection)
        } catch let error as PanzaError where error.code == .corruptDatabase {
            return try moveAside(path)
        }
        throw PanzaError(
            code: .invalidConfiguration,
            message: "the file is a readable database; it is not moved aside",
            path: path
        )
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

    private func openConnection() throws {
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

    /// Evicts least recently used entries until the file is within ``Configuration/maxBytes``
    /// (after an open with a lower limit; writes evict as they go).
    ///
    /// - Returns: the entries evicted.
    func evictIfOverLimit() throws -> Int {
        let connection = try self.openConnectionOrThrow()
        let before = self.evictionCount
        try self.writeTransaction(connection) { try self.evictIfNeeded(connection) }
        return self.evictionCount - before
    }

    /// The writer connection's `secure_delete` mode (0 off, 1 on, 2 fast), for tests.
    func secureDeleteMode() throws -> Int64 {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement("PRAGMA secure_delete")
        defer { statement.reset() }
        guard try statement.step() else { return -1 }
        return statement.int64(at: 0)
    }

    private func makeConnection() throws -> SQLiteConnection {
        let timeout = Int32(clamping: self.configuration.busyTimeout.wholeMilliseconds)
        let connection = try SQLiteConnection(path: self.configuration.path, busyTimeoutMilliseconds: timeout)
        do {
            // Refuse a foreign or newer file before anything writes to it.
            try SQLiteSchema.checkOwnershipInSnapshot(connection)
            try connection.execute("PRAGMA journal_mode = WAL")
            try connection.execute("PRAGMA journal_size_limit = \(Self.journalSizeLimit)")
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

    private static func moveAside(_ path: String) throws -> String {
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

    /// Writes what readers noted, after a short delay that lets notes accumulate into one transaction.
    nonisolated func scheduleMaintenance() {
        let delay = max(self.configuration.accessTimeResolution, .milliseconds(100))
        Task {
            try? await Task.sleep(for: delay)
            await self.runMaintenance()
        }
    }

    private func runMaintenance() {
        guard let connection = self.connection, !self.accessLog.isEmpty else { return }
        do {
            try self.writeTransaction(connection) {
                try self.writePendingMaintenance(connection, now: self.clock.nowMilliseconds())
            }
        } catch {
            self.logger.debug("panza: SQLite maintenance deferred", metadata: ["error": "\(error)"])
            self.scheduleMaintenance()
        }
    }

    /// Writes the noted access times and deletes the entries found expired, inside a transaction.
    /// When the transaction fails, the notes are put back.
    private func writePendingMaintenance(_ connection: SQLiteConnection, now: Int64) throws {
        let (touches, expired) = self.accessLog.drain()
        do {
            if !touches.isEmpty {
                let statement = try connection.statement(
                    "UPDATE entry SET accessed_at = ?1 WHERE key = ?2 AND accessed_at < ?1")
                for (key, time) in touches {
                    statement.reset()
                    try statement.bind(time, at: 1)
                    try statement.bind(key, at: 2)
                    try statement.run()
                }
            }
            if !expired.isEmpty {
                let statement = try connection.statement("DELETE FROM entry WHERE key = ?1 AND expires_at <= ?2")
                var deleted = 0
                for key in expired {
                    statement.reset()
                    try statement.bind(key, at: 1)
                    try statement.bind(now, at: 2)
                    try statement.run()
                    deleted += connection.changes
                }
                if deleted > 0 { try WriteStamp.bumpMaintenance(in: connection) }
            }
        } catch {
            self.accessLog.restore(touches: touches, expired: expired)
            throw error
        }
    }

    /// Deletes least recently used entries until the stored bytes are at most 95% of the bound.
    private func evictIfNeeded(_ connection: SQLiteConnection) throws {
        let usage = try connection.statement("SELECT bytes FROM usage WHERE id = 0")
        var bytes = try usage.step() ? Int(usage.int64(at: 0)) : 0
        usage.reset()
        guard bytes > self.configuration.maxBytes else { return }
        let target = self.configuration.maxBytes - self.configuration.maxBytes / 20
        let oldest = try connection.statement("SELECT key, size FROM entry ORDER BY accessed_at, key LIMIT 256")
        let delete = try connection.statement("DELETE FROM entry WHERE key = ?")
        var evicted = 0
        while bytes > target {
            oldest.reset()
            var victims: [(String, Int)] = []
            while try oldest.step() {
                victims.append((oldest.text(at: 0), Int(oldest.int64(at: 1))))
            }
            oldest.reset()
            guard !victims.isEmpty else { break }
            for (key, size) in victims where bytes > target {
                delete.reset()
                try delete.bind(key, at: 1)
                try delete.run()
                bytes -= size
                evicted += 1
                self.accessLog.forget(key)
            }
        }
        if evicted > 0 { try WriteStamp.bumpMaintenance(in: connection) }
        self.evictions.add(evicted, ordering: .relaxed)
        self.logger.debug("panza: evicted SQLite entries", metadata: ["count": "\(evicted)"])
    }
}
