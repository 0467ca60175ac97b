/// A point lookup of an entry on one connection: what a reader does for a lookup, on its own
/// queue (``SQLiteReader``) or on the caller's thread (``InlineReaderPool``).
struct SQLiteEntryLookup {
    let connection: SQLiteConnection
    let accessTimeResolution: Int64
    /// The time by which entries expire and accesses are dated: the cache's clock.
    let clock: any CacheClock

    /// The stored entry of `key`, or `nil` when it is missing or expired, with the miss's write
    /// stamp and whether the writer should be asked for maintenance.
    ///
    /// - Parameters:
    ///   - decodingUpTo: decode the entry as it is read, from SQLite's buffers (one stored in
    ///     chunks, chunk by chunk), with this payload limit; `nil` for its stored bytes.
    ///   - headOnly: answer `nil` (look elsewhere) for an entry stored in chunks instead of reading
    ///     them: an inline lookup never holds the caller's thread for a large value.
    ///   - stampingMisses: read a miss's write stamp (a second look, in one read transaction);
    ///     without it a miss has no stamp, and cannot guard a fill.
    func lookup(
        _ key: CacheKey, log: AccessLog, decodingUpTo maxPayloadBytes: Int?, headOnly: Bool, stampingMisses: Bool = true
    ) throws -> (found: TierFound?, missStamp: Int64?, requestMaintenance: Bool)? {
        let now = self.clock.nowMilliseconds()
        let first = try self.entry(key.rawValue, now: now, log: log, decodingUpTo: maxPayloadBytes, headOnly: headOnly)
        switch first {
        case .hit(let found, let request):
            return (found, nil, request)
        case .chunked:
            return nil
        case .miss, .expired:
            guard stampingMisses else { return (first.expiredCopy, nil, first.requestsMaintenance) }
            // In a transaction an inline reader keeps (``InlineReader``), the miss was seen in the
            // stamp's own snapshot.
            guard !self.connection.isInTransaction else {
                return (
                    first.expiredCopy, try WriteStamp.read(for: key, in: self.connection), first.requestsMaintenance
                )
            }
            // The miss again, with the stamp, in one read transaction: hits never pay for it.
            try self.connection.run("BEGIN")
            defer { try? self.connection.run("COMMIT") }
            let stamp = try WriteStamp.read(for: key, in: self.connection)
            let again = try self.entry(
                key.rawValue, now: now, log: log, decodingUpTo: maxPayloadBytes, headOnly: headOnly)
            switch again {
            case .hit(let found, let request): return (found, nil, request)
            case .chunked: return nil
            case .miss, .expired: return (again.expiredCopy, stamp, again.requestsMaintenance)
            }
        }
    }

    private enum EntryLookup {
        case hit(TierFound, requestMaintenance: Bool)
        case miss
        case expired(createdAtMilliseconds: Int64, requestMaintenance: Bool)
        /// Stored in chunks, and only the head may be read here.
        case chunked

        /// A miss's answer: the expired copy's creation time (see ``TierFound/expired(createdAtMilliseconds:)``).
        var expiredCopy: TierFound? {
            guard case .expired(let createdAt, _) = self else { return nil }
            return .expired(createdAtMilliseconds: createdAt)
        }

        /// Whether the writer should be asked for maintenance (access times or an expired entry to
        /// write).
        var requestsMaintenance: Bool {
            switch self {
            case .hit(_, let request), .expired(_, let request): request
            case .miss, .chunked: false
            }
        }
    }

    private func entry(_ key: String, now: Int64, log: AccessLog, decodingUpTo maxPayloadBytes: Int?, headOnly: Bool)
        throws -> EntryLookup
    {
        let statement = try self.connection.statement(
            "SELECT blob, expires_at, accessed_at, chunks, created_at FROM entry WHERE key = ?")
        return try statement.withBinding(key, at: 1) {
            try self.entry(statement, key: key, now: now, log: log, decodingUpTo: maxPayloadBytes, headOnly: headOnly)
        }
    }

    /// The entry the stepped `statement` finds, read before it is reset.
    private func entry(
        _ statement: SQLiteStatement, key: String, now: Int64, log: AccessLog, decodingUpTo maxPayloadBytes: Int?,
        headOnly: Bool
    ) throws -> EntryLookup {
        guard try statement.step() else { return .miss }
        if let expiresAt = statement.optionalInt64(at: 1), expiresAt <= now {
            return .expired(createdAtMilliseconds: statement.int64(at: 4), requestMaintenance: log.recordExpired(key))
        }
        // The chunks are read while the entry's statement still holds its snapshot.
        let chunks = statement.int64(at: 3)
        if chunks > 0, headOnly { return .chunked }
        var request = false
        if now - statement.int64(at: 2) >= self.accessTimeResolution {
            request = log.recordAccess(key, at: now)
        }
        // When the caller asks for a decoded value, the entry is decoded as it is read, straight
        // from SQLite's buffers: its bytes are not copied out first (the payload is the one copy).
        if let maxPayloadBytes {
            do {
                if chunks == 0 {
                    let envelope = try statement.withBytes(at: 0) {
                        try DecodedEnvelope.decode($0, maxPayloadBytes: maxPayloadBytes)
                    }
                    return .hit(.decoded(envelope), requestMaintenance: request)
                }
                let decoder = EnvelopeStreamDecoder(maxPayloadBytes: maxPayloadBytes)
                try BlobChunks.stream(
                    head: statement, column: 0, chunks: chunks, owner: BlobChunks.owner(entry: key),
                    in: self.connection, into: decoder)
                return .hit(.decoded(try decoder.finish()), requestMaintenance: request)
            } catch let error as PanzaError
                where [.corruptBlob, .unsupportedFormat, .valueTooLarge].contains(error.code)
            {
                return .hit(.decodingFailed(error), requestMaintenance: request)
            }
        }
        let blob = try BlobChunks.assemble(
            head: statement, column: 0, chunks: chunks, owner: BlobChunks.owner(entry: key), in: self.connection)
        return .hit(.blob(blob), requestMaintenance: request)
    }
}
