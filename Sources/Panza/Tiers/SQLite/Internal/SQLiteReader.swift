/// One read-only use of the database file: its own connection on its own serial queue.
///
/// WAL lets readers run beside the writer and beside each other, so ``SQLiteTier`` keeps several
/// and spreads lookups across them; a long write transaction never delays a read.
actor SQLiteReader {
    private nonisolated let executor: DispatchQueueExecutor
    private let connection: SQLiteConnection
    private let accessTimeResolution: Int64
    private let clock: any CacheClock
    private let path: String
    private var isClosed = false

    nonisolated var unownedExecutor: UnownedSerialExecutor { self.executor.asUnownedSerialExecutor() }

    private init(
        executor: DispatchQueueExecutor, connection: SQLiteConnection, accessTimeResolution: Int64,
        clock: any CacheClock, path: String
    ) {
        self.path = path
        self.clock = clock
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
        clock: any CacheClock,
        label: String
    ) async throws -> SQLiteReader {
        let executor = DispatchQueueExecutor(label: label)
        let connection = try await executor.run {
            let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
            try connection.execute("PRAGMA mmap_size = \(memoryMapBytes)")
            return connection
        }
        return SQLiteReader(
            executor: executor, connection: connection.value, accessTimeResolution: accessTimeResolution,
            clock: clock, path: path)
    }

    typealias Found = TierFound

    /// The stored entry of `key`, or `nil` when it is missing or expired. Notes accesses and
    /// expiries in `log`.
    ///
    /// - Parameter decodingUpTo: when set, the entry is decoded here as it is read, straight from
    ///   SQLite's buffers (one stored in chunks, chunk by chunk), into its payload (the limit is the
    ///   largest payload accepted), instead of being copied out as one blob first.
    /// - Returns: the entry; on a miss, the write stamp of the key (see ``WriteStamp``), read in
    ///   the same snapshot as the miss; and whether the writer should be asked for maintenance.
    func lookup(
        forKey key: CacheKey,
        log: AccessLog,
        decodingUpTo maxPayloadBytes: Int? = nil
    ) throws -> (found: Found?, missStamp: Int64?, requestMaintenance: Bool) {
        try self.checkOpen()
        let lookup = SQLiteEntryLookup(
            connection: self.connection, accessTimeResolution: self.accessTimeResolution, clock: self.clock)
        // Never nil: a reader on its own queue reads chunked entries too.
        return try lookup.lookup(key, log: log, decodingUpTo: maxPayloadBytes, headOnly: false)!
    }

    /// The key's write stamp now (see ``WriteStamp``).
    func writeStamp(for key: CacheKey) throws -> Int64 {
        try self.checkOpen()
        return try WriteStamp.read(for: key, in: self.connection)
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
