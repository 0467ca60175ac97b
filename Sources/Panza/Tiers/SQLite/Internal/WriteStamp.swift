/// Change counters in the SQLite file that let a fill from a lower tier check, in its write
/// transaction, that no process removed the key since the lookup that missed it.
///
/// A removal of a key bumps the counter of the key's bucket (one of 1,024, by FNV-1a of the key),
/// a removal of a namespace bumps that namespace's counter, and a removal of everything one more
/// (`*`); an eviction or a deletion of expired entries bumps the maintenance counter of each
/// deleted key's bucket (`m:<bucket>`), so that an expiry pass refuses only the fills of the keys
/// it may have deleted, not every fill of every process. A lookup that misses reads, in the same
/// snapshot, the stamp of its key: the sum of the three removal counters that concern it and its
/// bucket's maintenance counter, packed in one `Int64`.
///
/// Maintenance also bumps the file-wide counter `~`, which Panza versions before schema 5 read
/// instead of the buckets: a process of the previous version still running beside this one stays
/// safe (its fills are refused by every pass, as before).
///
/// - A *fill* (a copy from a lower tier) is written only if the whole stamp is unchanged and the
///   key has no row: a store since the miss left one, and a store since that was evicted or
///   expired bumped the maintenance counter, so an older copy never takes a newer one's place.
/// - A *load's* store (``SQLiteWrite/refreshStamp``) is refused only by removals
///   (``sameRemovals(_:_:)``): its value is newer than anything evicted or expired meanwhile, and
///   an eviction pass anywhere in the file must not throw away a call just paid for.
///
/// Stores, the hot path, touch no counter. The table stays small: 1,024 buckets, one row per
/// namespace ever removed, and two.
enum WriteStamp {
    static let bucketCount: UInt64 = 1024

    static func scopes(of key: CacheKey) -> (key: String, namespace: String, all: String) {
        ("k:\(self.bucket(of: key.rawValue))", self.namespaceScope(key.namespace), "*")
    }

    static func namespaceScope(_ namespace: String) -> String { "n:" + namespace }

    /// Bumps the counters that `operation` changes.
    static func bump(for operation: CacheTierOperation, in connection: SQLiteConnection) throws {
        let scope: String
        switch operation {
        case .store(let key, _, _), .remove(let key): scope = self.scopes(of: key).key
        case .removeNamespace(let namespace): scope = self.namespaceScope(namespace)
        case .removeAll: scope = "*"
        }
        let statement = try connection.statement(
            "INSERT INTO write_stamp (scope, stamp) VALUES (?, 1) ON CONFLICT (scope) DO UPDATE SET stamp = stamp + 1"
        )
        try statement.bind(scope, at: 1)
        try statement.run()
    }

    /// The scope of the file-wide maintenance counter of versions before schema 5.
    static let legacyMaintenanceScope = "~"

    /// The scope of the maintenance counter of `key`'s bucket.
    static func maintenanceScope(of key: String) -> String { "m:\(self.bucket(of: key))" }

    /// The bucket of `key` (FNV-1a).
    static func bucket(of key: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return hash % self.bucketCount
    }

    /// Bumps the maintenance counters of the buckets of `keys` (deleted by an eviction, an expiry
    /// pass or a repair), and the legacy file-wide one; nothing when `keys` is empty.
    static func bumpMaintenance(forKeys keys: some Sequence<String>, in connection: SQLiteConnection) throws {
        var scopes = Set(keys.map { self.maintenanceScope(of: $0) })
        guard !scopes.isEmpty else { return }
        scopes.insert(self.legacyMaintenanceScope)
        let statement = try connection.statement(
            "INSERT INTO write_stamp (scope, stamp) VALUES (?, 1) ON CONFLICT (scope) DO UPDATE SET stamp = stamp + 1"
        )
        for scope in scopes {
            statement.reset()
            try statement.bind(scope, at: 1)
            try statement.run()
        }
    }

    /// The stamp of `key`: the sum of the removal counters that concern it (the high 32 bits) and
    /// its bucket's maintenance counter (the low 32 bits), each wrapping. Stamps are only ever compared
    /// for equality, between a read and a write a few seconds apart.
    static func read(for key: CacheKey, in connection: SQLiteConnection) throws -> Int64 {
        let scopes = self.scopes(of: key)
        let statement = try connection.statement(
            """
            SELECT coalesce(sum(CASE WHEN scope = ?4 THEN 0 ELSE stamp END), 0),
                   coalesce(sum(CASE WHEN scope = ?4 THEN stamp ELSE 0 END), 0)
            FROM write_stamp WHERE scope IN (?1, ?2, ?3, ?4)
            """
        )
        defer { statement.reset() }
        try statement.bind(scopes.key, at: 1)
        try statement.bind(scopes.namespace, at: 2)
        try statement.bind(scopes.all, at: 3)
        try statement.bind(self.maintenanceScope(of: key.rawValue), at: 4)
        guard try statement.step() else { return 0 }
        return self.pack(removals: statement.int64(at: 0), maintenance: statement.int64(at: 1))
    }

    static func pack(removals: Int64, maintenance: Int64) -> Int64 {
        Int64(
            bitPattern: (UInt64(truncatingIfNeeded: removals) &<< 32)
                | (UInt64(truncatingIfNeeded: maintenance) & 0xFFFF_FFFF))
    }

    /// Whether two stamps of one key saw the same removals (maintenance aside).
    static func sameRemovals(_ a: Int64, _ b: Int64) -> Bool {
        UInt64(bitPattern: a) >> 32 == UInt64(bitPattern: b) >> 32
    }
}

/// One write of a write-behind batch to SQLite.
struct SQLiteWrite: Sendable {
    var operation: CacheTierOperation
    /// Also record the operation in the outbox, for the remote tier.
    var replicate = false
    /// For a fill (a copy from a lower tier): the stamp its lookup read when SQLite missed; the
    /// fill is applied only if the stamp is unchanged. `nil` for a write of the cache's own.
    var fillStamp: Int64? = nil
    /// For a store of a large value: the value, encoded frame by frame into chunk rows as it is
    /// written (the operation's blob is then empty).
    var pending: PendingEnvelope? = nil
    /// For a removal: only entries whose values were made before this time (milliseconds since
    /// 1970) go; `nil` for all of them. Invalidations from other machines are applied this way.
    var createdBefore: Int64? = nil
    /// When the operation was made; the outbox records it (see ``QueuedWrite/madeAtMilliseconds``).
    var madeAtMilliseconds: Int64? = nil
    /// For the store of a background refresh: the key's write stamp when it took its lease. The
    /// store lands only if the stamp is unchanged (no removal since) and no row of the key holds a
    /// value made after the refreshed one (no newer store since).
    var refreshStamp: Int64? = nil
    /// For a removal: a repair, which deletes a copy a lookup found expired or damaged (with
    /// ``createdBefore``, only that copy or an older one) and invalidates nothing. It is
    /// maintenance, not a removal: it bumps the maintenance counter, not the key's, so that a load
    /// that started before it still stores its value.
    var isRepair = false

    /// The bytes of value the write stores (0 for a removal).
    var byteCount: Int {
        if let pending = self.pending { return pending.payloadCount }
        if case .store(_, let blob, _) = self.operation { return blob.count }
        return 0
    }
}
