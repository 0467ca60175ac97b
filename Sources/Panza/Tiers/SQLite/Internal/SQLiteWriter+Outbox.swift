import Foundation
import Logging
import Synchronization

// The outbox of the writer: uploads for the remote tier, their leases, the dead letters, and the
// refresh leases.
extension SQLiteWriter {
    /// Claims the oldest outbox records that no other live process holds; records of a kind this
    /// version cannot read go straight to the dead letters.
    func claimOutbox(limit: Int, owner: String, lease: Duration) throws -> [QueuedWrite] {
        let connection = try self.openConnectionOrThrow()
        let now = WallClock.nowMilliseconds()
        // Every claim has a token of its own, which fences the batch's later steps.
        self.claimCount += 1
        let (claimed, unreadable) = try OutboxRecord.claim(
            in: connection,
            limit: limit,
            owner: owner,
            token: "\(owner)#\(self.claimCount)",
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

    /// Uploads this process refused for want of room in the outbox (see ``OutboxBudget``).
    nonisolated var refusedUploadCount: Int { self.refusedUploads.load(ordering: .relaxed) }

    /// Counts refused uploads and warns: at the first, then at most once a minute with the count.
    func noteRefusedUploads(_ count: Int) {
        self.refusedUploads.add(count, ordering: .relaxed)
        self.refusalsSinceWarning += count
        let now = self.clock.nowMilliseconds()
        guard self.lastRefusalWarning == .min || now - self.lastRefusalWarning >= 60_000 else { return }
        self.logger.warning(
            """
            panza: the outbox is full; uploads to the remote tier are refused (their keys are removed there \
            instead) until it drains. Local entries are stored as usual
            """,
            metadata: [
                "refused": "\(self.refusalsSinceWarning)",
                "limitBytes": "\(self.configuration.outboxByteLimit)",
                "path": "\(self.configuration.path)",
            ]
        )
        self.lastRefusalWarning = now
        self.refusalsSinceWarning = 0
    }

    /// Deletes the dead-lettered stores older than ``Configuration/deadLetterTimeToLive`` at
    /// `now` (the wall clock's time by default: dead letters are dated by it, since other
    /// processes read them). Returns how many; run with the expiry pass.
    @discardableResult
    func expireDeadLetters(now: Int64 = WallClock.nowMilliseconds()) throws -> Int {
        guard let timeToLive = self.configuration.deadLetterTimeToLive else { return 0 }
        let connection = try self.openConnectionOrThrow()
        let cutoff = now - timeToLive.wholeMilliseconds
        return try self.writeTransaction(connection) {
            try OutboxBudget.expireDeadLetters(olderThan: cutoff, in: connection)
        }
    }

    /// Deletes outbox records once the remote tier applied them.
    func completeOutbox(_ batch: [QueuedWrite]) throws {
        try OutboxRecord.complete(batch, in: try self.openConnectionOrThrow())
    }

    func recordOutboxFailure(_ batch: [QueuedWrite]) throws {
        try OutboxRecord.recordFailure(batch, in: try self.openConnectionOrThrow())
    }

    func renewOutboxLease(_ batch: [QueuedWrite], lease: Duration) throws {
        try OutboxRecord.renewLease(
            batch, leaseMilliseconds: lease.wholeMilliseconds, now: WallClock.nowMilliseconds(),
            in: try self.openConnectionOrThrow())
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

    func deadLetterOutbox(id: Int64, error: String, token: String?) throws {
        try OutboxRecord.deadLetter(
            id: id, error: error, token: token, in: try self.openConnectionOrThrow(), now: WallClock.nowMilliseconds())
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
}
