import Foundation
import Logging
import Synchronization

// Administration of the file through the writer: usage, listings, verification, compaction.
extension SQLiteWriter {
    /// How full the tier is.
    func usage() throws -> Usage {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement(
            "SELECT bytes, entries, outbox_bytes, dead_letter_bytes, refused_uploads FROM usage WHERE id = 0")
        defer { statement.reset() }
        guard try statement.step() else { return Usage(bytes: 0, entries: 0, fileBytes: 0) }
        var usage = Usage(
            bytes: Int(statement.int64(at: 0)), entries: Int(statement.int64(at: 1)), fileBytes: 0,
            outboxBytes: Int(statement.int64(at: 2)), deadLetterBytes: Int(statement.int64(at: 3)),
            refusedUploads: Int(statement.int64(at: 4)))
        statement.reset()
        let pages = try connection.statement(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
        defer { pages.reset() }
        usage.fileBytes = try pages.step() ? Int(pages.int64(at: 0)) : 0
        return usage
    }

    /// Entries and bytes per namespace, largest first.
    func namespaceSummaries() throws -> [NamespaceSummary] {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement(
            "SELECT namespace, count(*), sum(size) FROM entry GROUP BY namespace ORDER BY sum(size) DESC, namespace"
        )
        defer { statement.reset() }
        var result: [NamespaceSummary] = []
        while try statement.step() {
            result.append(
                NamespaceSummary(
                    namespace: statement.text(at: 0),
                    entries: Int(statement.int64(at: 1)),
                    bytes: Int(statement.int64(at: 2))
                )
            )
        }
        return result
    }

    /// Rebuilds the file to return free pages to the file system (`VACUUM`).
    func compact() throws {
        try self.openConnectionOrThrow().execute("VACUUM")
    }

    /// Lists entries, most recently used first.
    ///
    /// - Parameters:
    ///   - namespace: only the entries of this memoize id (`""` for plain keys); `nil` for all.
    ///   - limit: at most this many; `nil` for all.
    func entries(namespace: String? = nil, limit: Int? = nil) throws -> [EntryInfo] {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement(
            """
            SELECT key, namespace, size, created_at, expires_at, accessed_at, substr(blob, 1, 40) FROM entry
            WHERE ?1 IS NULL OR namespace = ?1 ORDER BY accessed_at DESC, key LIMIT ?2
            """
        )
        defer { statement.reset() }
        if let namespace { try statement.bind(namespace, at: 1) }
        try statement.bind(Int64(limit ?? -1), at: 2)
        var result: [EntryInfo] = []
        while try statement.step() {
            // The row's expires_at is when the entry may go (the end of its stale period); when
            // it turns stale is in the envelope's header.
            let times = BlobEnvelope.times(ofStored: statement.bytes(at: 6))
            result.append(
                EntryInfo(
                    key: statement.text(at: 0),
                    namespace: statement.text(at: 1),
                    size: Int(statement.int64(at: 2)),
                    createdAtMilliseconds: statement.int64(at: 3),
                    expiresAtMilliseconds: times.map(\.freshUntil) ?? statement.optionalInt64(at: 4),
                    staleUntilMilliseconds: times == nil ? nil : statement.optionalInt64(at: 4),
                    accessedAtMilliseconds: statement.int64(at: 5)
                )
            )
        }
        return result
    }

    /// The stored bytes of `key`, expired or not, without recording an access.
    func storedBlob(forKey key: String) throws -> [UInt8]? {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement("SELECT blob, chunks FROM entry WHERE key = ?")
        defer { statement.reset() }
        try statement.bind(key, at: 1)
        guard try statement.step() else { return nil }
        return try BlobChunks.assemble(
            head: statement, column: 0, chunks: statement.int64(at: 1), owner: BlobChunks.owner(entry: key),
            in: connection)
    }

    /// Checks the envelope of every entry.
    ///
    /// - Parameter removeCorrupt: delete the entries that fail.
    func verify(removeCorrupt: Bool) throws -> VerificationReport {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement("SELECT key, blob, chunks FROM entry ORDER BY key")
        var checked = 0
        var corrupt: [String] = []
        do {
            defer { statement.reset() }
            while try statement.step() {
                checked += 1
                do {
                    _ = try BlobEnvelope.decode(
                        try BlobChunks.assemble(
                            head: statement, column: 1, chunks: statement.int64(at: 2),
                            owner: BlobChunks.owner(entry: statement.text(at: 0)), in: connection))
                } catch {
                    corrupt.append(statement.text(at: 0))
                }
            }
        }
        if removeCorrupt, !corrupt.isEmpty {
            try self.apply(corrupt.map { .remove(CacheKey(rawValue: $0)) })
        }
        return VerificationReport(checked: checked, corruptKeys: corrupt, removed: removeCorrupt && !corrupt.isEmpty)
    }

    /// Moves an unreadable database file (and its `-wal` and `-shm` files) aside, so that the next
    /// open starts a new one. Returns the new path of the old file.
    ///
    /// Refuses a database of another application and a readable Panza file: it exists to recover from
    /// ``PanzaError/Code/corruptDatabase``. To empty a readable cache, apply ``CacheTierOperation/removeAll``.
    static func moveAsideUnreadableFile(atPath path: String) throws -> String {
        do {
            let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 1000)
            defer { connection.close() }
            try SQLiteSchema.checkReadable(connection)
        } catch let error as PanzaError where error.code == .corruptDatabase {
            return try moveAside(path)
        }
        throw PanzaError(
            code: .invalidConfiguration,
            message: "the file is a readable database; it is not moved aside",
            path: path
        )
    }

    /// The writer connection's `secure_delete` mode (0 off, 1 on, 2 fast), for tests.
    func secureDeleteMode() throws -> Int64 {
        let connection = try self.openConnectionOrThrow()
        let statement = try connection.statement("PRAGMA secure_delete")
        defer { statement.reset() }
        guard try statement.step() else { return -1 }
        return statement.int64(at: 0)
    }
}
