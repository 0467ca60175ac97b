/// One read-only use of the database file: its own connection on its own serial queue.
///
/// WAL lets readers run beside the writer and beside each other, so ``SQLiteTier`` keeps several
/// and spreads lookups across them; a long write transaction never delays a read.
actor SQLiteReader {
    private nonisolated let executor: DispatchQueueExecutor
    private let connection: SQLiteConnection
    private let accessTimeResolution: Int64
    private let path: String
    private var isClosed = false

    nonisolated var unownedExecutor: UnownedSerialExecutor { self.executor.asUnownedSerialExecutor() }

    private init(executor: DispatchQueueExecutor, connection: SQLiteConnection, accessTimeResolution: Int64, path: String) {
        self.path = path
        self.executor = executor
        self.connection = connection
        self.accessTimeResolution = accessTimeResolution
    }

    /// Opens a reader; the connection is opened on the reader's own queue.
    static func open(
        path: String,
        busyTimeoutMilliseconds: Int32,
        memoryMapBytes: Int,
        accessTimeResolution: Int64,
        label: String
    ) async throws -> SQLiteReader {
        let executor = DispatchQueueExecutor(label: label)
        let connection = try await executor.run {
            let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
            try connection.execute("PRAGMA mmap_size = \(memoryMapBytes)")
            return connection
        }
        return SQLiteReader(executor: executor, connection: connection.value, accessTimeResolution: accessTimeResolution, path: path)
    }

    /// The stored blob of `key`, or `nil` when it is missing or expired. Notes accesses and expiries in `log`.
    ///
    /// - Returns: the blob, and whether the writer should be asked for maintenance.
    /// - Returns: the blob; on a miss, the write stamp of the key (see ``WriteStamp``), read by the
    ///   same statement, so in the same snapshot; and whether the writer should be asked for
    ///   maintenance.
    func blob(
        forKey key: CacheKey,
        log: AccessLog
    ) throws -> (blob: [UInt8]?, missStamp: Int64?, requestMaintenance: Bool) {
        try self.checkOpen()
        // One statement, so one snapshot; the stamp subquery runs on a miss only (CASE is lazy).
        let statement = try self.connection.statement(
            """
            SELECT entry.blob, entry.expires_at, entry.accessed_at,
                CASE WHEN entry.key IS NULL OR entry.expires_at <= ?5 THEN
                    (SELECT coalesce(sum(stamp), 0) FROM write_stamp WHERE scope IN (?2, ?3, ?4))
                END
            FROM (SELECT 1) LEFT JOIN entry ON entry.key = ?1
            """
        )
        defer { statement.reset() }
        let scopes = WriteStamp.scopes(of: key)
        let now = WallClock.nowMilliseconds()
        try statement.bind(key.rawValue, at: 1)
        try statement.bind(scopes.key, at: 2)
        try statement.bind(scopes.namespace, at: 3)
        try statement.bind(scopes.all, at: 4)
        try statement.bind(now, at: 5)
        guard try statement.step() else { return (nil, nil, false) }
        if let stamp = statement.optionalInt64(at: 3) {
            let expired = statement.optionalInt64(at: 1) != nil
            return (nil, stamp, expired ? log.recordExpired(key.rawValue) : false)
        }
        var request = false
        if now - statement.int64(at: 2) >= self.accessTimeResolution {
            request = log.recordAccess(key.rawValue, at: now)
        }
        return (statement.bytes(at: 0), nil, request)
    }

    /// What the outbox holds for `key`.
    ///
    /// The queries run in one read transaction: an uploader deleting records between two of them
    /// could otherwise hide a removal and reveal the store it removed (found by the model-checked
    /// test).
    func outboxShadow(forKey key: CacheKey) throws -> WriteShadow {
        try self.checkOpen()
        try self.connection.execute("BEGIN")
        do {
            let shadow = try OutboxRecord.shadow(in: self.connection, key: key)
            try self.connection.execute("COMMIT")
            return shadow
        } catch {
            try? self.connection.execute("ROLLBACK")
            throw error
        }
    }

    func close() {
        self.isClosed = true
        self.connection.close()
    }

    /// A lookup that reached the reader after the tier closed fails instead of touching a closed
    /// connection.
    private func checkOpen() throws {
        if self.isClosed {
            throw PanzaError(code: .closed, message: "the SQLite tier is closed", path: self.path)
        }
    }
}

/// Carries a value that is not `Sendable` out of a queue that created it and hands it to the
/// actor that will own it; nothing else touches it in between.
struct Handoff<Value>: @unchecked Sendable {
    let value: Value
}

extension DispatchQueueExecutor {
    /// Runs `body` on this executor's queue (for work before the owning actor exists).
    func run<Value>(_ body: @escaping @Sendable () throws -> Value) async throws -> Handoff<Value> {
        try await withCheckedThrowingContinuation { continuation in
            self.enqueueBlock {
                continuation.resume(with: Result { Handoff(value: try body()) })
            }
        }
    }
}
