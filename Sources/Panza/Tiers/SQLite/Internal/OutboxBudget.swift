/// The disk budget of the outbox and the dead letters: what an outage of the remote tier may cost
/// the local disk.
///
/// Uploads wait in the file until the remote tier applies them; during an outage, or with a
/// bucket that refuses them for good, they would otherwise grow until the disk is full and the
/// *local* cache fails because the remote one is down. Three rules bound them, all applied in the
/// write transaction that queues an upload:
///
/// 1. **A newer write of a key supersedes its queued ones.** A queued store of the key, and for a
///    removal a queued removal of it too, is deleted when no uploader holds it (a leased one is
///    on the wire; its uploader completes it). The newest record of a key still decides what a
///    lookup sees of the remote tier (``OutboxRecord/shadow(in:key:)``), so nothing changes for
///    readers; the remote tier just receives the last write instead of every one.
/// 2. **A store that does not fit is refused.** When the outbox and the dead letters together
///    would pass ``SQLiteTier/Configuration/outboxByteLimit``, the store's entry is written as
///    usual but its upload is replaced by a removal of the key: the remote tier's copy, older
///    than the local one, must not be served in its place by this machine (once the local entry
///    is evicted) or by another. The refusal is counted in the file (`usage.refused_uploads`).
/// 3. **Removals are never refused** (they are a few bytes, and dropping one would let a busted
///    copy be served), and dead-lettered stores expire by age (``expireDeadLetters(olderThan:in:)``).
enum OutboxBudget {
    /// What happened to an upload offered to the outbox.
    enum Admission: Equatable {
        /// Queued for the remote tier.
        case queued
        /// Refused for want of room: a removal of the key was queued in its place.
        case refused
    }

    /// The bytes `operation` counts against the budget: its blob and its key (or namespace).
    static func byteCount(of operation: CacheTierOperation) -> Int {
        switch operation {
        case .store(let key, let blob, _): blob.count + key.rawValue.utf8.count
        case .remove(let key): key.rawValue.utf8.count
        case .removeNamespace(let namespace): namespace.utf8.count
        case .removeAll: 0
        }
    }

    /// Queues `operation` for the remote tier within the budget of `limit` bytes, after deleting
    /// the queued records it supersedes.
    static func enqueue(
        _ operation: CacheTierOperation, limit: Int, into connection: SQLiteConnection, now: Int64
    ) throws -> Admission {
        if case .store(let key, _, _) = operation {
            guard
                try self.admitStore(
                    of: key, byteCount: self.byteCount(of: operation), limit: limit, in: connection, now: now)
            else {
                return .refused
            }
        } else if case .remove(let key) = operation {
            try self.supersede(key, byRemoval: true, in: connection)
        }
        try OutboxRecord.insert(operation, into: connection, now: now)
        return .queued
    }

    /// Decides whether a store of `key` of about `byteCount` bytes may be queued, after deleting
    /// the queued records of the key it supersedes. When it may not, queues a removal of the key
    /// instead, counts the refusal and returns `false`.
    ///
    /// A large value streamed into chunk rows asks this before its record is written, with its
    /// payload's size (compression only makes it smaller).
    static func admitStore(
        of key: CacheKey, byteCount: Int, limit: Int, in connection: SQLiteConnection, now: Int64
    ) throws -> Bool {
        try self.supersede(key, byRemoval: false, in: connection)
        let used = try connection.statement("SELECT outbox_bytes + dead_letter_bytes FROM usage WHERE id = 0")
        let bytes = try used.step() ? Int(used.int64(at: 0)) : 0
        used.reset()
        guard bytes + byteCount > limit else { return true }
        try self.supersede(key, byRemoval: true, in: connection)
        try OutboxRecord.insert(.remove(key), into: connection, now: now)
        try connection.statement("UPDATE usage SET refused_uploads = refused_uploads + 1 WHERE id = 0").run()
        return false
    }

    /// Deletes the queued stores of `key` (and with `byRemoval` its queued removals) that no
    /// uploader holds.
    private static func supersede(_ key: CacheKey, byRemoval: Bool, in connection: SQLiteConnection) throws {
        let statement = try connection.statement(
            "DELETE FROM outbox WHERE key = ?1 AND kind IN (0, ?2) AND lease_owner IS NULL")
        try statement.bind(key.rawValue, at: 1)
        try statement.bind(byRemoval ? OutboxRecord.Kind.remove.rawValue : OutboxRecord.Kind.store.rawValue, at: 2)
        try statement.run()
    }

    /// Deletes the dead-lettered stores that failed before `cutoff` (milliseconds since 1970).
    /// Dead-lettered removals stay: each hides a remote copy that should be gone.
    ///
    /// - Returns: how many were deleted.
    static func expireDeadLetters(olderThan cutoff: Int64, in connection: SQLiteConnection) throws -> Int {
        let statement = try connection.statement("DELETE FROM dead_letter WHERE kind = 0 AND failed_at < ?1")
        try statement.bind(cutoff, at: 1)
        try statement.run()
        return connection.changes
    }
}
