/// Blobs longer than one SQLite row should hold, stored as a head in their own row plus numbered
/// chunk rows in `blob_chunk`.
///
/// SQLite keeps a value whole in memory while it reads or writes it and refuses values over
/// `SQLITE_MAX_LENGTH` (10⁹ bytes by default), so an entry, an outbox record or a dead letter keeps
/// at most ``chunkSize`` bytes in its own `blob` column and the rest in chunk rows owned by it
/// (`owner` is `entry:<key>`, `outbox:<id>` or `dead_letter:<id>`; `seq` counts from 1). The owning
/// row's `chunks` column says how many there are. Chunks are written in the owner's transaction,
/// read back in `seq` order in the owner's snapshot, and deleted with the owner by triggers (see
/// schema version 4), so an entry is evicted whole and counted once in the usage totals.
enum BlobChunks {
    /// The most bytes of a blob in one row: 1 MiB.
    static let chunkSize = 1 << 20

    /// The owner name of an entry's chunks.
    static func owner(entry key: String) -> String { "entry:" + key }
    /// The owner name of an outbox record's chunks.
    static func owner(outbox id: Int64) -> String { "outbox:\(id)" }
    /// The owner name of a dead letter's chunks.
    static func owner(deadLetter id: Int64) -> String { "dead_letter:\(id)" }

    /// The number of chunk rows `blob` needs beyond its head.
    static func chunkCount(of blob: [UInt8]) -> Int {
        max(0, (blob.count - 1) / chunkSize)
    }

    /// Binds the head of `blob` (its first ``chunkSize`` bytes) at `index`.
    static func bindHead(of blob: [UInt8], to statement: SQLiteStatement, at index: Int32) throws {
        try blob.withUnsafeBytes { raw in
            try statement.bind(UnsafeRawBufferPointer(rebasing: raw.prefix(chunkSize)), at: index)
        }
    }

    /// Writes the chunk rows of `blob` beyond its head, for `owner`, replacing any it had.
    static func writeTail(of blob: [UInt8], owner: String, in connection: SQLiteConnection) throws {
        let count = self.chunkCount(of: blob)
        guard count > 0 else { return }
        let insert = try connection.statement(
            "INSERT OR REPLACE INTO blob_chunk (owner, seq, bytes) VALUES (?1, ?2, ?3)")
        try blob.withUnsafeBytes { raw in
            for seq in 1...count {
                let start = seq * chunkSize
                insert.reset()
                try insert.bind(owner, at: 1)
                try insert.bind(Int64(seq), at: 2)
                try insert.bind(UnsafeRawBufferPointer(rebasing: raw[start..<min(start + chunkSize, raw.count)]), at: 3)
                try insert.run()
            }
        }
    }

    /// Stores `pending` as the entry of `key` (and, with `replicate`, as an outbox record for the
    /// remote tier; with `onlyIfAbsent`, a fill, only if the key has no entry or an expired one no
    /// newer than `pending`), encoding it frame by frame into 1 MiB rows as it goes: the head in the row,
    /// the rest in chunk rows, each written for both owners. Only one MiB of the envelope is ever
    /// held. Runs inside the caller's write transaction.
    static func writeEncoding(
        _ pending: PendingEnvelope,
        key: CacheKey,
        expiresAtMilliseconds: Int64?,
        replicate: Bool,
        onlyIfAbsent: Bool = false,
        in connection: SQLiteConnection,
        now: Int64
    ) throws {
        if onlyIfAbsent {
            // A fill: a row written since its lookup missed is newer, and stays.
            let exists = try connection.statement(
                """
                SELECT EXISTS (SELECT 1 FROM entry
                    WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2 OR created_at > ?3))
                """)
            defer { exists.reset() }
            try exists.bind(key.rawValue, at: 1)
            try exists.bind(now, at: 2)
            try exists.bind(pending.createdAtMilliseconds, at: 3)
            if try exists.step(), exists.int64(at: 0) == 1 { return }
        }
        let entryOwner = self.owner(entry: key.rawValue)
        var outboxOwner: String?
        var outboxID: Int64?
        var buffer = [UInt8]()
        buffer.reserveCapacity(chunkSize)
        var seq = 0
        var total = 0
        let insertChunk = try connection.statement(
            "INSERT OR REPLACE INTO blob_chunk (owner, seq, bytes) VALUES (?1, ?2, ?3)")
        func emit() throws {
            if seq == 0 {
                // The head: the rows exist from here on. Replacing the entry's row drops the
                // chunks of the value it held (trigger), before the new ones are written.
                let entry = try connection.statement(
                    """
                    INSERT INTO entry (key, namespace, blob, size, created_at, expires_at, accessed_at, chunks)
                    VALUES (?1, ?2, ?3, ?4, ?7, ?6, ?5, 0)
                    ON CONFLICT (key) DO UPDATE SET
                        namespace = excluded.namespace, blob = excluded.blob, size = excluded.size,
                        created_at = excluded.created_at, expires_at = excluded.expires_at,
                        accessed_at = excluded.accessed_at, chunks = 0
                    """
                )
                try entry.bind(key.rawValue, at: 1)
                try entry.bind(key.namespace, at: 2)
                try entry.bind(buffer, at: 3)
                try entry.bind(Int64(buffer.count + key.rawValue.utf8.count), at: 4)
                try entry.bind(now, at: 5)
                try entry.bind(expiresAtMilliseconds, at: 6)
                try entry.bind(pending.createdAtMilliseconds, at: 7)
                try entry.run()
                if replicate {
                    try OutboxRecord.insert(
                        .store(key: key, blob: buffer, expiresAtMilliseconds: expiresAtMilliseconds), into: connection,
                        now: now)
                    outboxID = connection.lastInsertRowID
                    outboxOwner = self.owner(outbox: connection.lastInsertRowID)
                }
            } else {
                for owner in [entryOwner, outboxOwner].compactMap({ $0 }) {
                    insertChunk.reset()
                    try insertChunk.bind(owner, at: 1)
                    try insertChunk.bind(Int64(seq), at: 2)
                    try insertChunk.bind(buffer, at: 3)
                    try insertChunk.run()
                }
            }
            total += buffer.count
            seq += 1
            buffer.removeAll(keepingCapacity: true)
        }
        try pending.encode { piece in
            var rest = piece[...]
            while !rest.isEmpty {
                let take = min(chunkSize - buffer.count, rest.count)
                buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: rest.prefix(take)))
                rest = rest.dropFirst(take)
                if buffer.count == chunkSize { try emit() }
            }
        }
        if !buffer.isEmpty || seq == 0 { try emit() }
        let chunks = Int64(seq - 1)
        let finish = try connection.statement("UPDATE entry SET size = ?2, chunks = ?3 WHERE key = ?1")
        try finish.bind(key.rawValue, at: 1)
        try finish.bind(Int64(total + key.rawValue.utf8.count), at: 2)
        try finish.bind(chunks, at: 3)
        try finish.run()
        if let outboxID {
            let outbox = try connection.statement("UPDATE outbox SET chunks = ?2, size = ?3 WHERE id = ?1")
            try outbox.bind(outboxID, at: 1)
            try outbox.bind(chunks, at: 2)
            try outbox.bind(Int64(total + key.rawValue.utf8.count), at: 3)
            try outbox.run()
        }
    }

    /// The whole blob: `head` followed by the `chunks` chunk rows of `owner`, in order. `owner` is
    /// evaluated only when there are chunks (an entry's owner name is built from its key).
    ///
    /// Run it in the snapshot that read the head (while the head's statement is still stepping, or
    /// inside a transaction). A missing chunk leaves the blob short, which the envelope's checksum
    /// catches like any other damage.
    static func assemble(
        head: SQLiteStatement, column: Int32, chunks: Int64, owner: @autoclosure () -> String,
        in connection: SQLiteConnection
    ) throws -> [UInt8] {
        guard chunks > 0 else { return head.bytes(at: column) }
        var blob: [UInt8] = []
        blob.reserveCapacity(head.byteCount(at: column) + Int(chunks) * chunkSize)
        try self.forEachPiece(head: head, column: column, chunks: chunks, owner: owner(), in: connection) {
            blob.append(contentsOf: $0)
        }
        return blob
    }

    /// Feeds `head` and then the `chunks` chunk rows of `owner`, in order, to `decoder`, straight
    /// from SQLite's buffers: no copy of the whole blob is made. Same snapshot rule as
    /// ``assemble(head:column:chunks:owner:in:)``.
    static func stream(
        head: SQLiteStatement, column: Int32, chunks: Int64, owner: String, in connection: SQLiteConnection,
        into decoder: EnvelopeStreamDecoder
    ) throws {
        try self.forEachPiece(head: head, column: column, chunks: chunks, owner: owner, in: connection) {
            try decoder.append($0)
        }
    }

    /// Calls `body` with the head and then each chunk row of `owner`, in order, where SQLite holds
    /// them (each valid only during its call).
    private static func forEachPiece(
        head: SQLiteStatement, column: Int32, chunks: Int64, owner: String, in connection: SQLiteConnection,
        _ body: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        try head.withBytes(at: column, body)
        guard chunks > 0 else { return }
        let select = try connection.statement(
            "SELECT bytes FROM blob_chunk WHERE owner = ?1 AND seq BETWEEN 1 AND ?2 ORDER BY seq")
        defer { select.reset() }
        try select.bind(owner, at: 1)
        try select.bind(chunks, at: 2)
        while try select.step() {
            try select.withBytes(at: 0, body)
        }
    }

    /// The bytes of `owner`'s chunk rows, for sizes shown to users.
    static func tailByteCount(owner: String, in connection: SQLiteConnection) throws -> Int {
        let select = try connection.statement("SELECT coalesce(sum(length(bytes)), 0) FROM blob_chunk WHERE owner = ?1")
        defer { select.reset() }
        try select.bind(owner, at: 1)
        return try select.step() ? Int(select.int64(at: 0)) : 0
    }
}
