extension SQLiteTier {
    /// Turns SQLite's memory statistics off for the whole process, so that SQLite hits scale
    /// across cores; call it first thing in `main`, before anything in the process uses SQLite.
    ///
    /// The system's libsqlite3 (Debian's, for one) is built without lookaside memory, so each
    /// allocation SQLite makes takes one process-wide mutex while its memory statistics are on; a
    /// point lookup makes three. Lookups on several cores then pass that mutex between them.
    ///
    /// The setting belongs to the process, not to Panza, which never changes it by itself: with
    /// the statistics off, `sqlite3_memory_used()` reports 0 and `sqlite3_soft_heap_limit64()` no
    /// longer limits anything, for every user of SQLite in the process.
    ///
    /// SQLite reads the setting once, when it initializes (at the first connection the process
    /// opens). Calling this while another thread opens a connection is a race that SQLite does
    /// not guard against.
    ///
    /// - Returns: `true` when the statistics are now off; `false` when SQLite was already
    ///   initialized, in which case nothing changed.
    @discardableResult
    public static func disableSQLiteMemoryStatistics() -> Bool {
        SQLiteConnection.disableMemoryStatistics()
    }
}
