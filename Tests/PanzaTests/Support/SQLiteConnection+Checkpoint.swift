@testable import Panza

extension SQLiteConnection {
    /// Runs a `TRUNCATE` checkpoint, as another process would, and returns its "busy" column:
    /// whether a reader or writer held it back.
    func truncateCheckpointIsBusy() throws -> Bool {
        let checkpoint = try self.statement("PRAGMA wal_checkpoint(TRUNCATE)")
        defer { checkpoint.reset() }
        guard try checkpoint.step() else { throw TestError(message: "the checkpoint returned no row") }
        return checkpoint.int64(at: 0) != 0
    }
}
