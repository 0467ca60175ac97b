/// One operation waiting in the SQLite outbox for a remote tier.
///
/// The outbox makes write-behind to a remote tier durable: the record is written in the same
/// transaction as the local entry, and deleted only once the remote tier applied it.
struct OutboxRecord: Sendable {
    var id: Int64
    var operation: CacheTierOperation

    private enum Kind: Int64 {
        case store = 0
        case remove = 1
        case removeNamespace = 2
        case removeAll = 3
    }

    static func insert(_ operation: CacheTierOperation, into connection: SQLiteConnection, now: Int64) throws {
        let statement = try connection.statement(
            "INSERT INTO outbox (kind, key, namespace, blob, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)"
        )
        switch operation {
        case .store(let key, let blob, let expiresAt):
            try statement.bind(Kind.store.rawValue, at: 1)
            try statement.bind(key.rawValue, at: 2)
            try statement.bind(key.namespace, at: 3)
            try statement.bind(blob, at: 4)
            try statement.bind(expiresAt, at: 5)
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
    }

    static func pending(in connection: SQLiteConnection, limit: Int) throws -> [OutboxRecord] {
        let statement = try connection.statement(
            "SELECT id, kind, key, namespace, blob, expires_at FROM outbox ORDER BY id LIMIT ?"
        )
        defer { statement.reset() }
        try statement.bind(Int64(limit), at: 1)
        var records: [OutboxRecord] = []
        while try statement.step() {
            let key = CacheKey(namespace: statement.text(at: 3), rawValue: statement.text(at: 2))
            let operation: CacheTierOperation
            switch Kind(rawValue: statement.int64(at: 1)) {
            case .store: operation = .store(key: key, blob: statement.bytes(at: 4), expiresAtMilliseconds: statement.optionalInt64(at: 5))
            case .remove: operation = .remove(key)
            case .removeNamespace: operation = .removeNamespace(statement.text(at: 3))
            case .removeAll, nil: operation = .removeAll
            }
            records.append(OutboxRecord(id: statement.int64(at: 0), operation: operation))
        }
        return records
    }

    /// What the outbox says about `key` before the remote tier is asked: the newest record that
    /// affects it decides.
    static func shadow(in connection: SQLiteConnection, key: CacheKey) throws -> WriteBehindLane.Shadow {
        let statement = try connection.statement(
            """
            SELECT kind, blob FROM outbox
            WHERE key = ?1 OR (kind = 2 AND namespace = ?2) OR kind = 3
            ORDER BY id DESC LIMIT 1
            """
        )
        defer { statement.reset() }
        try statement.bind(key.rawValue, at: 1)
        try statement.bind(key.namespace, at: 2)
        guard try statement.step() else { return .none }
        return statement.int64(at: 0) == Kind.store.rawValue ? .stored(statement.bytes(at: 1)) : .removed
    }
}
