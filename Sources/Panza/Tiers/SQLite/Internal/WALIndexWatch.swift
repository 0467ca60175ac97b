import CPanzaSQLite

/// Tells, without a system call, whether a WAL-mode SQLite file changed since a moment it marked:
/// a transaction committed (by any connection of any process) or a checkpoint copied frames back.
///
/// SQLite keeps the WAL's index in shared memory (the file's `-shm` file, for the default VFS),
/// which every connection maps. Its header (https://sqlite.org/walformat.html) changes with every
/// commit: a change counter, the last valid frame, the checksums, the salts that change when the
/// WAL restarts. A connection reads it at the start of every read transaction to learn whether its
/// page cache is still good. This type reads the header the same way, so that an inline reader
/// can keep one read transaction across lookups for as long as nothing changed
/// (``InlineReader``): a lookup in it sees exactly what a new transaction would.
///
/// The index is the one SQLite mapped for a connection, obtained through that connection's VFS
/// (``SQLiteConnection/walIndex()``): this type opens no descriptor of SQLite's files. (Closing a
/// descriptor of a file drops every POSIX lock the process holds on it, SQLite's read marks and
/// write lock included, which is why SQLite itself never closes one while a connection is open.)
/// The header's version word is checked on every read; an index of another version gives no mark.
final class WALIndexWatch: @unchecked Sendable {
    /// The wal-index header and the checkpoint's progress at one moment.
    struct Mark: Equatable {
        fileprivate var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

        static func == (lhs: Mark, rhs: Mark) -> Bool {
            lhs.words.0 == rhs.words.0 && lhs.words.1 == rhs.words.1 && lhs.words.2 == rhs.words.2
                && lhs.words.3 == rhs.words.3 && lhs.words.4 == rhs.words.4 && lhs.words.5 == rhs.words.5
                && lhs.words.6 == rhs.words.6
        }
    }

    /// The connection whose mapping this reads: kept open for as long as the watch lives, since
    /// SQLite unmaps the index when the connection closes.
    private let connection: SQLiteConnection
    private let base: UnsafeRawPointer

    /// Watches the wal-index of `connection`'s database, or returns `nil` when there is none to
    /// watch (the file is not in WAL mode, its VFS has no shared memory, the index is not mapped
    /// yet, or its version is unknown): callers then start a transaction for every lookup.
    ///
    /// Call it only after `connection` read the database in WAL mode. The watch keeps the
    /// connection; close it only once the watch is no longer read.
    init?(connection: SQLiteConnection) {
        guard let base = connection.walIndex() else { return nil }
        self.connection = connection
        self.base = base
    }

    /// The current mark, or `nil` while a commit is being published (the header's two copies
    /// differ), or the index is not initialized or of another version: no mark is then equal to
    /// any other.
    func mark() -> Mark? {
        var mark = Mark(words: (0, 0, 0, 0, 0, 0, 0))
        let complete = withUnsafeMutablePointer(to: &mark.words) { words in
            words.withMemoryRebound(to: UInt64.self, capacity: 7) { cpanza_wal_index_mark(self.base, $0) }
        }
        return complete == 1 ? mark : nil
    }
}
