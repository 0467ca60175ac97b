import CPanzaSQLite

/// A prepared statement of a ``SQLiteConnection``. Bind, step, read columns, and reset.
final class SQLiteStatement {
    private let handle: OpaquePointer
    private unowned let connection: SQLiteConnection
    private var isFinalized = false

    init(handle: OpaquePointer, connection: SQLiteConnection) {
        self.handle = handle
        self.connection = connection
    }

    func finalize() {
        guard !self.isFinalized else { return }
        self.isFinalized = true
        sqlite3_finalize(self.handle)
    }

    func reset() {
        sqlite3_reset(self.handle)
        sqlite3_clear_bindings(self.handle)
    }

    func bind(_ value: String, at index: Int32) throws {
        let code =
            value.utf8.withContiguousStorageIfAvailable { utf8 in
                utf8.withMemoryRebound(to: CChar.self) { text in
                    cpanza_sqlite3_bind_text_transient(self.handle, index, text.baseAddress, Int32(text.count))
                }
            }
            ?? {
                var copy = value
                return copy.withUTF8 { utf8 in
                    utf8.withMemoryRebound(to: CChar.self) { text in
                        cpanza_sqlite3_bind_text_transient(self.handle, index, text.baseAddress, Int32(text.count))
                    }
                }
            }()
        try self.check(code, "binding text")
    }

    /// Binds `value` at `index` without a copy for the duration of `body`, then resets the statement
    /// and clears its bindings, before the string's bytes can go away.
    ///
    /// Each allocation SQLite makes takes its process-wide memory-statistics mutex (the system
    /// SQLite of Debian has no per-connection lookaside memory), so a lookup whose key is not copied
    /// makes one allocation and one free fewer, and contends less with lookups on other threads.
    func withBinding<Result>(_ value: String, at index: Int32, _ body: () throws -> Result) throws -> Result {
        var value = value
        return try value.withUTF8 { utf8 in
            defer { self.reset() }
            let code = utf8.withMemoryRebound(to: CChar.self) { text in
                cpanza_sqlite3_bind_text_static(self.handle, index, text.baseAddress, Int32(text.count))
            }
            try self.check(code, "binding text")
            return try body()
        }
    }

    func bind(_ value: Int64, at index: Int32) throws {
        try self.check(sqlite3_bind_int64(self.handle, index, value), "binding an integer")
    }

    func bind(_ value: Int64?, at index: Int32) throws {
        if let value {
            try self.bind(value, at: index)
        } else {
            try self.check(sqlite3_bind_null(self.handle, index), "binding null")
        }
    }

    func bind(_ bytes: [UInt8], at index: Int32) throws {
        try bytes.withUnsafeBytes { try self.bind($0, at: index) }
    }

    /// Binds a copy of `raw` (SQLite copies it before returning).
    func bind(_ raw: UnsafeRawBufferPointer, at index: Int32) throws {
        guard raw.count <= Int(Int32.max) else {
            throw PanzaError(
                code: .valueTooLarge, message: "a blob of \(raw.count) bytes is too long for one SQLite value")
        }
        // A zero-length blob still needs a non-null pointer, or SQLite stores NULL.
        let code = cpanza_sqlite3_bind_blob_transient(
            self.handle, index, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(raw.count))
        try self.check(code, "binding a blob")
    }

    /// Calls `body` with the blob of `column` where SQLite holds it (valid until the next step).
    func withBytes<Result>(at column: Int32, _ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        guard let pointer = sqlite3_column_blob(self.handle, column) else {
            return try body(UnsafeRawBufferPointer(start: nil, count: 0))
        }
        return try body(UnsafeRawBufferPointer(start: pointer, count: Int(sqlite3_column_bytes(self.handle, column))))
    }

    /// The length in bytes of the blob of `column`.
    func byteCount(at column: Int32) -> Int { Int(sqlite3_column_bytes(self.handle, column)) }

    /// Advances to the next row. Returns `false` when the statement is done.
    func step() throws -> Bool {
        let code = sqlite3_step(self.handle)
        switch code {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let message = self.connection.lastErrorMessage
            sqlite3_reset(self.handle)
            throw SQLiteConnection.error(
                resultCode: code,
                message: message,
                path: self.connection.path,
                context: "running \(String(cString: sqlite3_sql(self.handle)).prefix(60))"
            )
        }
    }

    /// Steps the statement to completion, ignoring rows.
    func run() throws {
        while try self.step() {}
    }

    func int64(at column: Int32) -> Int64 { sqlite3_column_int64(self.handle, column) }

    func optionalInt64(at column: Int32) -> Int64? {
        sqlite3_column_type(self.handle, column) == SQLITE_NULL ? nil : sqlite3_column_int64(self.handle, column)
    }

    func optionalText(at column: Int32) -> String? {
        sqlite3_column_type(self.handle, column) == SQLITE_NULL ? nil : self.text(at: column)
    }

    func text(at column: Int32) -> String {
        guard let pointer = sqlite3_column_text(self.handle, column) else { return "" }
        let count = Int(sqlite3_column_bytes(self.handle, column))
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    func bytes(at column: Int32) -> [UInt8] {
        // The pointer first, then the length: that order is the one SQLite documents as safe.
        guard let pointer = sqlite3_column_blob(self.handle, column) else { return [] }
        let count = Int(sqlite3_column_bytes(self.handle, column))
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    private func check(_ code: Int32, _ context: String) throws {
        guard code == SQLITE_OK else {
            throw SQLiteConnection.error(
                resultCode: code,
                message: self.connection.lastErrorMessage,
                path: self.connection.path,
                context: context
            )
        }
    }
}

@available(*, unavailable)
extension SQLiteStatement: Sendable {}
