/// One connection of an ``InlineReaderPool``, and the read transaction it keeps across lookups.
///
/// Each read transaction of a WAL-mode file takes and releases a lock on the `-shm` file, two
/// `fcntl` system calls, and rereads the WAL's index: with a prepared point lookup on a
/// memory-mapped file, more than a third of the lookup (measured here: 3.07 µs a lookup in
/// transactions of its own, 1.85 µs in one held transaction). So an inline reader keeps its read
/// transaction open for as long as nothing changed in the file: before each lookup it compares the
/// WAL's index with the mark it took just before the transaction began (``WALIndexWatch``). When
/// any connection of any process committed, or a checkpoint progressed, the marks differ: the
/// transaction ends and a new one begins at the current state. A lookup therefore sees exactly
/// what a lookup in a transaction of its own would see at the same moment.
///
/// A held transaction pins its snapshot of the WAL, which a checkpoint cannot copy past nor
/// restart: the pool ends the transactions of readers idle for a few milliseconds
/// (``InlineReaderPool``), and a checkpoint's progress ends them at the next lookup.
///
/// A reader is used by one thread at a time (the one that took it from the pool).
final class InlineReader {
    let connection: SQLiteConnection
    /// The mark taken just before the held transaction began; `nil` when none is held.
    private var heldSince: WALIndexWatch.Mark?
    /// When the reader last finished a lookup (the pool's monotonic nanoseconds).
    var lastUsed: Int64 = 0

    init(connection: SQLiteConnection) {
        self.connection = connection
    }

    /// Whether a read transaction is held.
    var holdsTransaction: Bool { self.heldSince != nil }

    /// Makes the connection ready for a lookup that sees the file as it is now (`current`, the
    /// index's mark read just before): keeps the held transaction when nothing changed since it
    /// began, else ends it and, given a mark, begins another. Without a mark, the lookup runs in
    /// a transaction of its own. Returns whether it began a transaction to keep.
    ///
    /// The pool reads the mark, so that the watch it shares between its readers is not retained
    /// here on every lookup (which would pass its reference count between cores).
    func prepareLookup(current: WALIndexWatch.Mark?) throws -> Bool {
        if let held = self.heldSince {
            if let current, current == held { return false }
            self.endTransaction()
        }
        guard let current else { return false }
        // The mark is taken before the transaction begins, so that a commit between the two
        // makes the next comparison fail (the snapshot is then newer than the mark), never pass.
        try self.connection.run("BEGIN")
        self.heldSince = current
        return true
    }

    /// Ends the held transaction, if any (after a failed lookup, when idle, before closing).
    func endTransaction() {
        guard self.heldSince != nil else { return }
        self.heldSince = nil
        guard self.connection.isInTransaction else { return }
        do {
            try self.connection.run("COMMIT")
        } catch {
            try? self.connection.run("ROLLBACK")
        }
    }
}
