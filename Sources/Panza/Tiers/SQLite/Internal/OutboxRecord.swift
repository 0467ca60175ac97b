/// The SQLite outbox: operations waiting for the remote tier, written in the same transaction as
/// the local entry, and deleted only once the remote tier applied them.
///
/// Several processes may share the file. An uploader *claims* the head of the outbox with a lease
/// (owner, expiry) in a write transaction, and only a prefix whose records are free or whose lease
/// expired: so one process at a time uploads, in id order, and no older write of a key can land
/// after a newer one. A record whose process died is taken over when its lease expires, or at once
/// when the owner was a process of this machine that no longer runs.
///
/// Leases are fenced: each claim writes a token of its own (`owner#n`) on its rows, and renewing,
/// completing or failing the batch requires that every row still carries it. An uploader that
/// stalled past its lease (a paused process) and lost its rows to another one changes nothing.
enum OutboxRecord {
    /// The owner part of a claim's lease token (`owner#n`); a token of an older version is all owner.
    static func owner(ofToken token: String) -> Substring {
        guard let hash = token.lastIndex(of: "#") else { return Substring(token) }
        return token[..<hash]
    }

    /// The rows of `batch` still carry its lease token: throws ``PanzaError/Code/leaseLost``
    /// otherwise. Run inside the write transaction of the step it guards.
    private static func checkHeld(_ batch: [QueuedWrite], in connection: SQLiteConnection) throws {
        guard let first = batch.first, let last = batch.last, let token = first.leaseToken else { return }
        let statement = try connection.statement(
            "SELECT count(*) FROM outbox WHERE id BETWEEN ?1 AND ?2 AND lease_owner = ?3")
        defer { statement.reset() }
        try statement.bind(Int64(first.sequence), at: 1)
        try statement.bind(Int64(last.sequence), at: 2)
        try statement.bind(token, at: 3)
        let held = try statement.step() ? Int(statement.int64(at: 0)) : 0
        guard held == batch.count else {
            throw PanzaError(
                code: .leaseLost,
                message: "\(batch.count - held) of \(batch.count) outbox records of this upload were taken over "
                    + "by another uploader (this one stalled past its lease)",
                path: connection.path)
        }
    }

    enum Kind: Int64 {
        case store = 0
        case remove = 1
        case removeNamespace = 2
        case removeAll = 3
    }

    static func insert(_ operation: CacheTierOperation, into connection: SQLiteConnection, now: Int64) throws {
        let statement = try connection.statement(
            """
            INSERT INTO outbox (kind, key, namespace, blob, expires_at, created_at, chunks, size)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """
        )
        var tail: [UInt8]?
        try statement.bind(Int64(0), at: 7)
        try statement.bind(Int64(OutboxBudget.byteCount(of: operation)), at: 8)
        switch operation {
        case .store(let key, let blob, let expiresAt):
            try statement.bind(Kind.store.rawValue, at: 1)
            try statement.bind(key.rawValue, at: 2)
            try statement.bind(key.namespace, at: 3)
            try BlobChunks.bindHead(of: blob, to: statement, at: 4)
            try statement.bind(expiresAt, at: 5)
            try statement.bind(Int64(BlobChunks.chunkCount(of: blob)), at: 7)
            tail = blob
        case .remove(let key):
            try statement.bind(Kind.remove.rawValue, at: 1)
            try statement.bind(key.rawValue, at: 2)
            try statement.bind(key.namespace, at: 3)
        case .removeNamespace(let namespace):
            try statement.bind(Kind.removeNamespace.rawValue, at: 1)
            try statement.bind(namespace, at: 3)
        case .removeAll:
            try statement.bind(Kind.removeAll.rawValue, at: 1)
        }
        try statement.bind(now, at: 6)
        try statement.run()
        if let tail, tail.count > BlobChunks.chunkSize {
            try BlobChunks.writeTail(
                of: tail, owner: BlobChunks.owner(outbox: connection.lastInsertRowID), in: connection)
        }
    }

    /// Reads the operation of the current row of a `SELECT id, kind, key, namespace, blob, expires_at`
    /// whose column 9 is `chunks`, in the snapshot that read the row.
    ///
    /// - Throws: ``PanzaError/Code/unsupportedFormat`` for a kind this version does not know (a
    ///   newer Panza wrote it): it is never guessed.
    ///
    /// - Parameter assemblesChunks: `false` to leave a store kept in chunks unread: its operation
    ///   then has an empty blob, and the caller reads the chunks when it needs them.
    static func operation(
        of statement: SQLiteStatement, in connection: SQLiteConnection, assemblesChunks: Bool = true
    ) throws -> CacheTierOperation {
        let kind = statement.int64(at: 1)
        switch Kind(rawValue: kind) {
        case .store:
            let chunks = statement.int64(at: 9)
            return .store(
                key: CacheKey(namespace: statement.text(at: 3), rawValue: statement.text(at: 2)),
                blob: chunks > 0 && !assemblesChunks
                    ? []
                    : try BlobChunks.assemble(
                        head: statement, column: 4, chunks: chunks,
                        owner: BlobChunks.owner(outbox: statement.int64(at: 0)), in: connection),
                expiresAtMilliseconds: statement.optionalInt64(at: 5)
            )
        case .remove:
            return .remove(CacheKey(namespace: statement.text(at: 3), rawValue: statement.text(at: 2)))
        case .removeNamespace:
            return .removeNamespace(statement.text(at: 3))
        case .removeAll:
            return .removeAll
        case nil:
            throw PanzaError(
                code: .unsupportedFormat,
                message: "outbox record \(statement.int64(at: 0)) has kind \(kind), unknown to this Panza",
                path: connection.path
            )
        }
    }

    /// Claims the oldest records, at most `limit`, that no other live uploader holds.
    static func claim(
        in connection: SQLiteConnection,
        limit: Int,
        owner: String,
        token: String,
        leaseMilliseconds: Int64,
        now: Int64,
        ownerIsAlive: (String) -> Bool
    ) throws -> (claimed: [QueuedWrite], unreadable: [(id: Int64, error: PanzaError)]) {
        // An idle uploader polls: an empty outbox must not cost a write lock.
        let any = try connection.statement("SELECT EXISTS (SELECT 1 FROM outbox)")
        let hasRecords = try any.step() && any.int64(at: 0) == 1
        any.reset()
        guard hasRecords else { return ([], []) }
        return try connection.writeTransaction {
            let select = try connection.statement(
                """
                SELECT id, kind, key, namespace, blob, expires_at, attempts, lease_owner, lease_expires_at, chunks,
                    created_at
                FROM outbox ORDER BY id LIMIT ?
                """
            )
            try select.bind(Int64(limit), at: 1)
            var claimed: [QueuedWrite] = []
            var unreadable: [(id: Int64, error: PanzaError)] = []
            while try select.step() {
                if let leaseOwner = select.optionalText(at: 7).map({ String(Self.owner(ofToken: $0)) }),
                    leaseOwner != owner, let expiresAt = select.optionalInt64(at: 8), expiresAt > now,
                    ownerIsAlive(leaseOwner)
                {
                    break  // another process is uploading the head; keep the order
                }
                let id = select.int64(at: 0)
                do {
                    // A large upload is not read here: the uploader reads its chunks one at a time.
                    let operation = try self.operation(of: select, in: connection, assemblesChunks: false)
                    var write = QueuedWrite(
                        sequence: UInt64(id),
                        operation: operation,
                        replicate: false,
                        attempts: Int(select.int64(at: 6))
                    )
                    write.madeAtMilliseconds = select.int64(at: 10)
                    write.leaseToken = token
                    let chunks = select.int64(at: 9)
                    if case .store = operation, chunks > 0 {
                        write.outboxUpload = OutboxUpload(
                            id: id, chunks: Int(chunks),
                            byteCount: select.byteCount(at: 4)
                                + (try BlobChunks.tailByteCount(owner: BlobChunks.owner(outbox: id), in: connection)))
                    }
                    claimed.append(write)
                } catch let error as PanzaError {
                    unreadable.append((id, error))
                    break
                }
            }
            select.reset()
            if let first = claimed.first, let last = claimed.last {
                let lease = try connection.statement(
                    "UPDATE outbox SET lease_owner = ?1, lease_expires_at = ?2 WHERE id BETWEEN ?3 AND ?4"
                )
                try lease.bind(token, at: 1)
                try lease.bind(now + leaseMilliseconds, at: 2)
                try lease.bind(Int64(first.sequence), at: 3)
                try lease.bind(Int64(last.sequence), at: 4)
                try lease.run()
            }
            return (claimed, unreadable)
        }
    }

    /// Deletes uploaded records, and the dead-lettered removals of their keys that they supersede.
    ///
    /// - Throws: ``PanzaError/Code/leaseLost`` (deleting nothing) when another uploader took any
    ///   record of the batch over.
    static func complete(_ batch: [QueuedWrite], in connection: SQLiteConnection) throws {
        guard let first = batch.first, let last = batch.last else { return }
        try connection.writeTransaction {
            try self.checkHeld(batch, in: connection)
            let delete = try connection.statement("DELETE FROM outbox WHERE id BETWEEN ? AND ?")
            try delete.bind(Int64(first.sequence), at: 1)
            try delete.bind(Int64(last.sequence), at: 2)
            try delete.run()
            let anyDead = try connection.statement("SELECT EXISTS (SELECT 1 FROM dead_letter WHERE kind = 1)")
            let hasDeadRemovals = try anyDead.step() && anyDead.int64(at: 0) == 1
            anyDead.reset()
            guard hasDeadRemovals else { return }
            let superseded = try connection.statement("DELETE FROM dead_letter WHERE kind = 1 AND key = ? AND id < ?")
            for write in batch {
                guard case .store(let key, _, _) = write.operation else { continue }
                superseded.reset()
                try superseded.bind(key.rawValue, at: 1)
                try superseded.bind(Int64(write.sequence), at: 2)
                try superseded.run()
            }
        }
    }

    /// Counts a failed attempt of every record of `batch` and gives the lease back, on the records
    /// that still carry the batch's lease token only.
    static func recordFailure(_ batch: [QueuedWrite], in connection: SQLiteConnection) throws {
        guard let first = batch.first, let last = batch.last, let token = first.leaseToken else { return }
        try connection.writeTransaction {
            let statement = try connection.statement(
                """
                UPDATE outbox SET attempts = attempts + 1, lease_owner = NULL, lease_expires_at = NULL
                WHERE id BETWEEN ?1 AND ?2 AND lease_owner = ?3
                """
            )
            try statement.bind(Int64(first.sequence), at: 1)
            try statement.bind(Int64(last.sequence), at: 2)
            try statement.bind(token, at: 3)
            try statement.run()
        }
    }

    /// Extends the lease of `batch` (whose upload is making progress).
    ///
    /// - Throws: ``PanzaError/Code/leaseLost`` (renewing nothing) when another uploader took any
    ///   record of the batch over.
    static func renewLease(
        _ batch: [QueuedWrite], leaseMilliseconds: Int64, now: Int64, in connection: SQLiteConnection
    ) throws {
        guard let first = batch.first, let last = batch.last, let token = first.leaseToken else { return }
        try connection.writeTransaction {
            try self.checkHeld(batch, in: connection)
            let statement = try connection.statement(
                "UPDATE outbox SET lease_expires_at = ?1 WHERE id BETWEEN ?2 AND ?3 AND lease_owner = ?4")
            try statement.bind(now + leaseMilliseconds, at: 1)
            try statement.bind(Int64(first.sequence), at: 2)
            try statement.bind(Int64(last.sequence), at: 3)
            try statement.bind(token, at: 4)
            try statement.run()
        }
    }

    /// Piece `index` of the large outbox record `id`: its head (0), then its chunk rows.
    static func piece(id: Int64, index: Int, in connection: SQLiteConnection) throws -> [UInt8] {
        let statement = try connection.statement(
            index == 0
                ? "SELECT blob FROM outbox WHERE id = ?1"
                : "SELECT bytes FROM blob_chunk WHERE owner = 'outbox:' || ?1 AND seq = ?2")
        defer { statement.reset() }
        try statement.bind(id, at: 1)
        if index > 0 { try statement.bind(Int64(index), at: 2) }
        guard try statement.step() else {
            throw PanzaError(
                code: .corruptDatabase, message: "outbox record \(id) has no piece \(index)", path: connection.path)
        }
        return statement.bytes(at: 0)
    }

    /// Gives back every lease of `owner` (its cache is closing).
    static func releaseLeases(owner: String, in connection: SQLiteConnection) throws {
        try connection.writeTransaction {
            // The owner's own tokens (`owner#n`), and a lease of an older version (`owner`).
            let statement = try connection.statement(
                """
                UPDATE outbox SET lease_owner = NULL, lease_expires_at = NULL
                WHERE lease_owner = ?1 OR substr(lease_owner, 1, length(?1) + 1) = ?1 || '#'
                """
            )
            try statement.bind(owner, at: 1)
            try statement.run()
        }
    }

    /// Moves record `id` to the dead letters, with the error that put it there.
    ///
    /// - Parameters:
    ///   - token: the lease token of the claim that failed it; `nil` inside the claim itself (an
    ///     unreadable record).
    /// - Throws: ``PanzaError/Code/leaseLost`` (moving nothing) when another claim holds the
    ///   record (it carries neither `token` nor, given back by the failure, no lease).
    static func deadLetter(
        id: Int64, error: String, token: String? = nil, in connection: SQLiteConnection, now: Int64
    ) throws {
        try connection.writeTransaction {
            if let token {
                let held = try connection.statement(
                    "SELECT EXISTS (SELECT 1 FROM outbox WHERE id = ?1 AND (lease_owner = ?2 OR lease_owner IS NULL))")
                defer { held.reset() }
                try held.bind(id, at: 1)
                try held.bind(token, at: 2)
                guard try held.step(), held.int64(at: 0) == 1 else {
                    throw PanzaError(
                        code: .leaseLost,
                        message: "outbox record \(id) was taken over by another uploader; it is not dead-lettered",
                        path: connection.path)
                }
            }
            // A dead letter of the same operation on the same key (or scope) is older and
            // superseded; the totals' triggers see deletions, not REPLACE's implicit ones.
            let superseded = try connection.statement(
                """
                DELETE FROM dead_letter WHERE id IN (
                    SELECT dead.id FROM dead_letter AS dead, outbox AS record
                    WHERE record.id = ?1 AND dead.kind = record.kind AND dead.id <= record.id
                        AND dead.key IS record.key AND dead.namespace IS record.namespace)
                """
            )
            try superseded.bind(id, at: 1)
            try superseded.run()
            let move = try connection.statement(
                """
                INSERT INTO dead_letter
                    (id, kind, key, namespace, blob, expires_at, created_at, attempts, error, failed_at, chunks, size)
                SELECT id, kind, key, namespace, blob, expires_at, created_at, attempts + 1, ?2, ?3, chunks, size
                FROM outbox WHERE id = ?1
                """
            )
            try move.bind(id, at: 1)
            try move.bind(error, at: 2)
            try move.bind(now, at: 3)
            try move.run()
            // The chunks change owner before the outbox row goes (its trigger would delete them).
            let chunks = try connection.statement("UPDATE blob_chunk SET owner = ?2 WHERE owner = ?1")
            try chunks.bind(BlobChunks.owner(outbox: id), at: 1)
            try chunks.bind(BlobChunks.owner(deadLetter: id), at: 2)
            try chunks.run()
            let delete = try connection.statement("DELETE FROM outbox WHERE id = ?")
            try delete.bind(id, at: 1)
            try delete.run()
        }
    }

    /// The highest id below which no record is pending, and the newest id ever given.
    static func watermark(in connection: SQLiteConnection) throws -> (watermark: UInt64, last: UInt64) {
        let statement = try connection.statement(
            """
            SELECT (SELECT min(id) FROM outbox),
                   coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)
            """
        )
        defer { statement.reset() }
        guard try statement.step() else { return (0, 0) }
        let last = UInt64(max(0, statement.int64(at: 1)))
        guard let oldest = statement.optionalInt64(at: 0) else { return (last, last) }
        return (UInt64(max(0, oldest - 1)), last)
    }

    /// What the outbox and the dead letters say about `key` before the remote tier is asked: the
    /// newest record that concerns it decides, and a removal that failed for good keeps hiding the
    /// remote copy. Every query is an index probe, however long the outbox.
    static func shadow(in connection: SQLiteConnection, key: CacheKey) throws -> WriteShadow {
        var newest: (id: Int64, blob: [UInt8]?)?
        func consider(_ sql: StaticString, bind: (SQLiteStatement) throws -> Void, hasBlob: Bool) throws {
            let statement = try connection.statement(sql)
            defer { statement.reset() }
            try bind(statement)
            guard try statement.step(), let id = statement.optionalInt64(at: 0) else { return }
            if id > newest?.id ?? 0 {
                let isStore = hasBlob && statement.int64(at: 1) == Kind.store.rawValue
                newest = (
                    id,
                    isStore
                        ? try BlobChunks.assemble(
                            head: statement, column: 2, chunks: statement.int64(at: 3),
                            owner: BlobChunks.owner(outbox: id), in: connection) : nil
                )
            }
        }
        try consider(
            "SELECT id, kind, blob, chunks FROM outbox WHERE key = ?1 ORDER BY id DESC LIMIT 1",
            bind: { try $0.bind(key.rawValue, at: 1) },
            hasBlob: true
        )
        try consider(
            "SELECT max(id) FROM outbox WHERE kind = 2 AND namespace = ?1",
            bind: { try $0.bind(key.namespace, at: 1) },
            hasBlob: false
        )
        try consider("SELECT max(id) FROM outbox WHERE kind = 3", bind: { _ in }, hasBlob: false)
        try consider(
            "SELECT max(id) FROM dead_letter WHERE kind = 1 AND key = ?1",
            bind: { try $0.bind(key.rawValue, at: 1) },
            hasBlob: false
        )
        try consider(
            "SELECT max(id) FROM dead_letter WHERE kind = 2 AND namespace = ?1",
            bind: { try $0.bind(key.namespace, at: 1) },
            hasBlob: false
        )
        try consider("SELECT max(id) FROM dead_letter WHERE kind = 3", bind: { _ in }, hasBlob: false)
        guard let newest else { return .none }
        return newest.blob.map { .stored($0) } ?? .removed
    }
}
