/// Leases that let one process at a time refresh a key in the background, among the processes
/// that share a SQLite file (see ``Freshness``).
///
/// A lease is a row of `refresh_lease` (created on first use, so files stay readable by releases
/// that do not know it): the key, its holder and when it lapses. Taking one is one write
/// transaction that also reads the key's write stamp, which the refresh's store then checks: a
/// refresh does not land over a removal made while it loaded.
enum RefreshLease {
    static let createTable = """
        CREATE TABLE IF NOT EXISTS refresh_lease (
            key TEXT NOT NULL PRIMARY KEY,
            holder TEXT NOT NULL,
            until INTEGER NOT NULL
        ) WITHOUT ROWID
        """

    /// Takes the lease of `key` for `holder` until `until`, unless another holder's lease has not
    /// lapsed at `now`.
    ///
    /// - Returns: the key's write stamp when the lease was taken, `nil` when another holds it.
    static func acquire(
        key: CacheKey, holder: String, now: Int64, until: Int64, in connection: SQLiteConnection
    ) throws -> Int64? {
        try connection.execute(self.createTable)
        let statement = try connection.statement(
            """
            INSERT INTO refresh_lease (key, holder, until) VALUES (?1, ?2, ?3)
            ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, until = excluded.until
            WHERE refresh_lease.until <= ?4 OR refresh_lease.holder = excluded.holder
            """
        )
        try statement.bind(key.rawValue, at: 1)
        try statement.bind(holder, at: 2)
        try statement.bind(until, at: 3)
        try statement.bind(now, at: 4)
        try statement.run()
        guard connection.changes > 0 else { return nil }
        // Lapsed leases of other keys go too, so the table holds only refreshes in progress.
        let sweep = try connection.statement("DELETE FROM refresh_lease WHERE until <= ?1")
        try sweep.bind(now, at: 1)
        try sweep.run()
        return try WriteStamp.read(for: key, in: connection)
    }

    /// Gives back `holder`'s lease of `key`.
    static func release(key: CacheKey, holder: String, in connection: SQLiteConnection) throws {
        try connection.execute(self.createTable)
        let statement = try connection.statement("DELETE FROM refresh_lease WHERE key = ?1 AND holder = ?2")
        try statement.bind(key.rawValue, at: 1)
        try statement.bind(holder, at: 2)
        try statement.run()
    }
}
