import CPanzaSQLite

// This file and SQLiteStatement.swift are the only ones that call libsqlite3.
//
// The hazards: a `sqlite3 *` opened with SQLITE_OPEN_NOMUTEX must never be used from two threads at
// once, and a statement must be finalized before its connection closes. `SQLiteConnection` and
// `SQLiteStatement` are therefore not `Sendable`; they live inside `SQLiteTier`, an actor whose
// executor is one serial dispatch queue, and the connection finalizes its statements before closing.

/// One connection to a SQLite file, with its prepared statements.
final class SQLiteConnection {
    let path: String
    private let handle: OpaquePointer
    /// The prepared statements, by the address of their SQL literal: found without hashing the
    /// text (a point lookup's statement is looked up on every hit). Only literals are prepared
    /// and kept, so the cache is bounded by the program's text.
    private var literalStatements: [UnsafeRawPointer: SQLiteStatement] = [:]
    private var isClosed = false

    /// Opens (creating if needed) the database at `path`.
    init(path: String, busyTimeoutMilliseconds: Int32) throws {
        self.path = path
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let code = sqlite3_open_v2(path, &handle, flags, nil)
        guard code == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let handle { sqlite3_close_v2(handle) }
            throw SQLiteConnection.error(resultCode: code, message: message, path: path, context: "open")
        }
        self.handle = handle
        sqlite3_extended_result_codes(handle, 1)
        sqlite3_busy_timeout(handle, busyTimeoutMilliseconds)
    }

    deinit {
        self.close()
    }

    /// Turns SQLite's memory statistics off for the process; `false` (changing nothing) once
    /// SQLite is initialized (see ``SQLiteTier/disableSQLiteMemoryStatistics()``).
    static func disableMemoryStatistics() -> Bool {
        cpanza_sqlite3_config_memstatus(0) == SQLITE_OK
    }

    func close() {
        guard !self.isClosed else { return }
        self.isClosed = true
        for statement in self.literalStatements.values { statement.finalize() }
        self.literalStatements = [:]
        sqlite3_close_v2(self.handle)
    }

    /// The wal-index of the main database as this connection's VFS mapped it, or `nil` (see
    /// ``WALIndexWatch``); valid until the connection closes.
    func walIndex() -> UnsafeRawPointer? {
        guard !self.isClosed else { return nil }
        return cpanza_sqlite3_wal_index(self.handle)
    }

    /// Sets how long a statement waits for a lock other connections hold.
    func setBusyTimeout(milliseconds: Int32) {
        guard !self.isClosed else { return }
        sqlite3_busy_timeout(self.handle, milliseconds)
    }

    /// Whether a transaction is open (`BEGIN` ran and neither `COMMIT` nor `ROLLBACK` yet).
    var isInTransaction: Bool { sqlite3_get_autocommit(self.handle) == 0 }

    /// Runs the literal statement `sql`, which returns no rows, from its cached prepared statement:
    /// for statements run often (`BEGIN`, `COMMIT`), which ``execute(_:)`` would parse every time.
    func run(_ sql: StaticString) throws {
        let statement = try self.statement(sql)
        defer { statement.reset() }
        _ = try statement.step()
    }

    /// The rowid of the last row inserted (`sqlite3_last_insert_rowid`).
    var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(self.handle) }

    /// Runs one or more SQL statements that return no rows.
    func execute(_ sql: String) throws {
        var errorMessage: UnsafeMutablePointer<CChar>?
        let code = sqlite3_exec(self.handle, sql, nil, nil, &errorMessage)
        let message = errorMessage.map { String(cString: $0) }
        sqlite3_free(errorMessage)
        guard code == SQLITE_OK else {
            throw SQLiteConnection.error(
                resultCode: code,
                message: message ?? self.lastErrorMessage,
                path: self.path,
                context: "executing \(sql.prefix(60))"
            )
        }
    }

    /// Returns the cached prepared statement for the literal `sql`, reset and with bindings cleared.
    func statement(_ sql: StaticString) throws -> SQLiteStatement {
        let address = UnsafeRawPointer(sql.utf8Start)
        if let statement = self.literalStatements[address] {
            statement.reset()
            return statement
        }
        let statement = try self.prepare(sql.description)
        self.literalStatements[address] = statement
        return statement
    }

    private func prepare(_ sql: String) throws -> SQLiteStatement {
        var handle: OpaquePointer?
        let code = sqlite3_prepare_v3(self.handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &handle, nil)
        guard code == SQLITE_OK, let handle else {
            throw SQLiteConnection.error(
                resultCode: code,
                message: self.lastErrorMessage,
                path: self.path,
                context: "preparing \(sql.prefix(60))"
            )
        }
        return SQLiteStatement(handle: handle, connection: self)
    }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction, committing on success.
    ///
    /// `IMMEDIATE` takes the write lock up front, so that the busy timeout applies to it; a deferred
    /// transaction that upgrades from read to write can fail with `SQLITE_BUSY` at once.
    func writeTransaction<Result>(_ body: () throws -> Result) throws -> Result {
        try self.execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try self.execute("COMMIT")
            return result
        } catch {
            try? self.execute("ROLLBACK")
            throw error
        }
    }

    /// Rows changed by the last statement.
    var changes: Int { Int(sqlite3_changes(self.handle)) }

    var lastErrorMessage: String { String(cString: sqlite3_errmsg(self.handle)) }

    /// The one place a SQLite result code becomes a ``PanzaError``.
    static func error(resultCode: Int32, message: String, path: String, context: String) -> PanzaError {
        let primary = resultCode & 0xFF
        let code: PanzaError.Code
        var text = "SQLite error \(resultCode) while \(context): \(message)"
        switch primary {
        case SQLITE_BUSY, SQLITE_LOCKED:
            code = .databaseBusy
            text += "; another connection held the lock past the busy timeout"
        case SQLITE_NOTADB, SQLITE_CORRUPT:
            code = .corruptDatabase
            text +=
                "; the file is not a SQLite database or is damaged. Delete it (with its -wal and -shm files), "
                + "run `panza purge --rebuild`, or set `SQLiteTier.Configuration.rebuildIfUnreadable`"
        default:
            code = .databaseFailure
        }
        return PanzaError(code: code, message: text, path: path)
    }
}

@available(*, unavailable)
extension SQLiteConnection: Sendable {}
