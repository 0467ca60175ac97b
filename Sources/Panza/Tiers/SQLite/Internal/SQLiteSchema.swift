/// The versioned schema of a Panza SQLite file, and its migrations.
///
/// A Panza file carries `PRAGMA application_id = 0x504E5A41` ("PNZA") and its schema version in
/// `PRAGMA user_version`. A new version appends a migration here; a file of an older version is
/// migrated on open, in one transaction; a file of a newer version is refused.
enum SQLiteSchema {
    static let applicationID: Int64 = 0x504E_5A41
    static var currentVersion: Int64 { Int64(migrations.count) }

    /// `migrations[i]` moves a file from version `i` to version `i + 1`.
    static let migrations: [String] = [
        // Version 1.
        """
        CREATE TABLE entry (
            key TEXT NOT NULL PRIMARY KEY,
            namespace TEXT NOT NULL,
            blob BLOB NOT NULL,
            size INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER,
            accessed_at INTEGER NOT NULL
        );
        CREATE INDEX entry_by_access ON entry(accessed_at);
        CREATE INDEX entry_by_namespace ON entry(namespace);
        CREATE INDEX entry_by_expiry ON entry(expires_at) WHERE expires_at IS NOT NULL;
        CREATE TABLE usage (
            id INTEGER NOT NULL PRIMARY KEY CHECK (id = 0),
            bytes INTEGER NOT NULL,
            entries INTEGER NOT NULL
        );
        INSERT INTO usage (id, bytes, entries) VALUES (0, 0, 0);
        CREATE TRIGGER entry_after_insert AFTER INSERT ON entry BEGIN
            UPDATE usage SET bytes = bytes + NEW.size, entries = entries + 1 WHERE id = 0;
        END;
        CREATE TRIGGER entry_after_delete AFTER DELETE ON entry BEGIN
            UPDATE usage SET bytes = bytes - OLD.size, entries = entries - 1 WHERE id = 0;
        END;
        CREATE TRIGGER entry_after_update_size AFTER UPDATE OF size ON entry BEGIN
            UPDATE usage SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
        END;
        """,
        // Version 2: the outbox of uploads to a remote tier, written in the same transaction as the
        // local entry, so that pending uploads survive a crash.
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind INTEGER NOT NULL,
            key TEXT,
            namespace TEXT,
            blob BLOB,
            expires_at INTEGER,
            created_at INTEGER NOT NULL
        );
        CREATE INDEX outbox_by_key ON outbox(key);
        """,
        // Version 3: leases so that several processes never upload one key out of order, attempts
        // and dead letters for operations that fail for good, indexes for every shadow lookup, and
        // the change counters that guard fills (see WriteStamp).
        """
        ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
        ALTER TABLE outbox ADD COLUMN lease_expires_at INTEGER;
        DROP INDEX outbox_by_key;
        CREATE INDEX outbox_by_key ON outbox(key, id);
        CREATE INDEX outbox_namespace_removals ON outbox(namespace, id) WHERE kind = 2;
        CREATE INDEX outbox_all_removals ON outbox(id) WHERE kind = 3;
        CREATE TABLE dead_letter (
            id INTEGER NOT NULL PRIMARY KEY,
            kind INTEGER NOT NULL,
            key TEXT,
            namespace TEXT,
            blob BLOB,
            expires_at INTEGER,
            created_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            error TEXT NOT NULL,
            failed_at INTEGER NOT NULL
        );
        CREATE INDEX dead_letter_key_removals ON dead_letter(key, id) WHERE kind = 1;
        CREATE INDEX dead_letter_namespace_removals ON dead_letter(namespace, id) WHERE kind = 2;
        CREATE INDEX dead_letter_all_removals ON dead_letter(id) WHERE kind = 3;
        CREATE TABLE write_stamp (scope TEXT NOT NULL PRIMARY KEY, stamp INTEGER NOT NULL) WITHOUT ROWID;
        """,
        // Version 4: blobs longer than 1 MiB keep their head in their row and the rest in chunk
        // rows (see BlobChunks), deleted with their owner by triggers. An update of an entry's
        // blob drops the old chunks; the writer then inserts the new ones.
        """
        CREATE TABLE blob_chunk (
            owner TEXT NOT NULL,
            seq INTEGER NOT NULL,
            bytes BLOB NOT NULL,
            PRIMARY KEY (owner, seq)
        );
        ALTER TABLE entry ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE outbox ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE dead_letter ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;
        CREATE TRIGGER entry_chunks_after_delete AFTER DELETE ON entry WHEN OLD.chunks > 0 BEGIN
            DELETE FROM blob_chunk WHERE owner = 'entry:' || OLD.key;
        END;
        CREATE TRIGGER entry_chunks_after_update AFTER UPDATE OF blob ON entry WHEN OLD.chunks > 0 BEGIN
            DELETE FROM blob_chunk WHERE owner = 'entry:' || OLD.key;
        END;
        CREATE TRIGGER outbox_chunks_after_delete AFTER DELETE ON outbox WHEN OLD.chunks > 0 BEGIN
            DELETE FROM blob_chunk WHERE owner = 'outbox:' || OLD.id;
        END;
        CREATE TRIGGER dead_letter_chunks_after_delete AFTER DELETE ON dead_letter WHEN OLD.chunks > 0 BEGIN
            DELETE FROM blob_chunk WHERE owner = 'dead_letter:' || OLD.id;
        END;
        """,
        // Version 5: the disk budget of the outbox and the dead letters (see OutboxBudget). Each
        // record counts its bytes (blob, chunks and key) in `size`, and triggers keep the totals
        // in `usage` as they do for entries; `refused_uploads` counts the stores the budget
        // turned away.
        """
        ALTER TABLE outbox ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE dead_letter ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
        UPDATE outbox SET size = coalesce(length(blob), 0) + coalesce(length(CAST(key AS BLOB)), 0)
            + (SELECT coalesce(sum(length(bytes)), 0) FROM blob_chunk WHERE owner = 'outbox:' || outbox.id);
        UPDATE dead_letter SET size = coalesce(length(blob), 0) + coalesce(length(CAST(key AS BLOB)), 0)
            + (SELECT coalesce(sum(length(bytes)), 0) FROM blob_chunk WHERE owner = 'dead_letter:' || dead_letter.id);
        ALTER TABLE usage ADD COLUMN outbox_bytes INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE usage ADD COLUMN dead_letter_bytes INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE usage ADD COLUMN refused_uploads INTEGER NOT NULL DEFAULT 0;
        UPDATE usage SET
            outbox_bytes = (SELECT coalesce(sum(size), 0) FROM outbox),
            dead_letter_bytes = (SELECT coalesce(sum(size), 0) FROM dead_letter)
        WHERE id = 0;
        CREATE TRIGGER outbox_after_insert AFTER INSERT ON outbox BEGIN
            UPDATE usage SET outbox_bytes = outbox_bytes + NEW.size WHERE id = 0;
        END;
        CREATE TRIGGER outbox_after_delete AFTER DELETE ON outbox BEGIN
            UPDATE usage SET outbox_bytes = outbox_bytes - OLD.size WHERE id = 0;
        END;
        CREATE TRIGGER outbox_after_update_size AFTER UPDATE OF size ON outbox BEGIN
            UPDATE usage SET outbox_bytes = outbox_bytes - OLD.size + NEW.size WHERE id = 0;
        END;
        CREATE TRIGGER dead_letter_after_insert AFTER INSERT ON dead_letter BEGIN
            UPDATE usage SET dead_letter_bytes = dead_letter_bytes + NEW.size WHERE id = 0;
        END;
        CREATE TRIGGER dead_letter_after_delete AFTER DELETE ON dead_letter BEGIN
            UPDATE usage SET dead_letter_bytes = dead_letter_bytes - OLD.size WHERE id = 0;
        END;
        CREATE INDEX dead_letter_by_age ON dead_letter(failed_at) WHERE kind = 0;
        """,
    ]

    /// Creates or migrates the schema of the file behind `connection`.
    ///
    /// - Throws: ``PanzaError/Code/notAPanzaDatabase`` for a database of another application,
    ///   ``PanzaError/Code/unsupportedSchemaVersion`` for a newer Panza file.
    static func prepare(_ connection: SQLiteConnection) throws {
        // The common case, a current Panza file, needs no write lock: another process may hold it.
        if try scalar(connection, "PRAGMA application_id") == self.applicationID,
            try scalar(connection, "PRAGMA user_version") == currentVersion
        {
            return
        }
        try connection.writeTransaction {
            // Checked again under the write lock: another process may have created the file meanwhile.
            try self.checkOwnership(connection)
            let version = try scalar(connection, "PRAGMA user_version")
            if try scalar(connection, "PRAGMA application_id") == 0 {
                try connection.execute("PRAGMA application_id = \(self.applicationID)")
            }
            for index in Int(version)..<migrations.count {
                try connection.execute(migrations[index])
            }
            if version != currentVersion {
                try connection.execute("PRAGMA user_version = \(currentVersion)")
            }
        }
    }

    /// Throws ``PanzaError/Code/notAPanzaDatabase`` for a database of another application and
    /// ``PanzaError/Code/unsupportedSchemaVersion`` for a newer Panza file, changing nothing: it runs
    /// before any pragma that writes (such as `journal_mode`).
    static func checkOwnership(_ connection: SQLiteConnection) throws {
        let applicationID = try scalar(connection, "PRAGMA application_id")
        let version = try scalar(connection, "PRAGMA user_version")
        if applicationID == 0 {
            guard version == 0, try scalar(connection, "SELECT count(*) FROM sqlite_schema") == 0 else {
                throw notPanza(connection)
            }
            return
        }
        guard applicationID == self.applicationID else { throw notPanza(connection) }
        guard version <= currentVersion else {
            throw PanzaError(
                code: .unsupportedSchemaVersion,
                message: "the file has schema version \(version); this Panza reads up to \(currentVersion). "
                    + "Upgrade Panza or use another file",
                path: connection.path
            )
        }
    }

    /// ``checkOwnership(_:)`` in one read transaction: its three reads see one snapshot. Read one
    /// by one, they could straddle another process's creation of the file (an application id of 0
    /// read before it committed, its tables after) and call a new Panza file foreign.
    static func checkOwnershipInSnapshot(_ connection: SQLiteConnection) throws {
        try connection.execute("BEGIN")
        do {
            try self.checkOwnership(connection)
            try connection.execute("COMMIT")
        } catch {
            try? connection.execute("ROLLBACK")
            throw error
        }
    }

    /// Reads the schema table, which fails with ``PanzaError/Code/corruptDatabase`` on a file that
    /// is not a database.
    static func checkReadable(_ connection: SQLiteConnection) throws {
        _ = try scalar(connection, "SELECT count(*) FROM sqlite_schema")
    }

    private static func scalar(_ connection: SQLiteConnection, _ sql: StaticString) throws -> Int64 {
        let statement = try connection.statement(sql)
        defer { statement.reset() }
        return try statement.step() ? statement.int64(at: 0) : 0
    }

    private static func notPanza(_ connection: SQLiteConnection) -> PanzaError {
        PanzaError(
            code: .notAPanzaDatabase,
            message: "the file is a SQLite database of another application; Panza will not touch it. "
                + "Point the SQLite tier at a new path",
            path: connection.path
        )
    }
}
