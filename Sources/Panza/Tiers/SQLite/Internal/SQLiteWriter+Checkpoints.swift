import Foundation
import Logging
import Synchronization

// Checkpoints of the writer: the idle PASSIVE one and the TRUNCATE one after many bytes.
extension SQLiteWriter {
    /// How long the writer must have written nothing before it checkpoints the WAL.
    static let idleCheckpointDelay = Duration.milliseconds(100)

    /// Returns once more than `count` idle checkpoints ran, or the writer closed (for tests).
    func waitForIdleCheckpoint(after count: Int) async {
        guard self.idleCheckpointCount <= count, !self.isClosed else { return }
        await withCheckedContinuation { self.idleCheckpointWaiters.append((count, $0)) }
    }

    /// Resumes the waiters whose count was passed; every waiter when `all` (the writer closed).
    func resumeIdleCheckpointWaiters(all: Bool = false) {
        let count = self.idleCheckpointCount
        self.idleCheckpointWaiters.removeAll { waiter in
            guard all || count > waiter.after else { return false }
            waiter.continuation.resume()
            return true
        }
    }

    /// Copies the WAL into the database file once no write came for ``idleCheckpointDelay``.
    ///
    /// A reader whose snapshot is wholly in the database file skips the WAL: its pages come from
    /// the memory-mapped file, without a search of the WAL index and a `pread` for each page the
    /// WAL holds. A `PASSIVE` checkpoint waits for no reader or writer.
    func startIdleCheckpointTimer() {
        guard !self.idleCheckpointScheduled else { return }
        self.idleCheckpointScheduled = true
        let generation = self.writeGeneration
        Task {
            try? await Task.sleep(for: Self.idleCheckpointDelay)
            self.idleCheckpoint(ifStill: generation)
        }
    }

    func idleCheckpoint(ifStill generation: Int) {
        self.idleCheckpointScheduled = false
        guard let connection = self.connection, !self.isClosed else { return }
        guard generation == self.writeGeneration else {
            // Written since: wait for the writer to be idle again.
            self.startIdleCheckpointTimer()
            return
        }
        if self.checkpoint(connection, mode: "PASSIVE") {
            self.idleCheckpoints.add(1, ordering: .relaxed)
            self.resumeIdleCheckpointWaiters()
        }
    }

    /// The WAL is truncated to at most this after a checkpoint (`PRAGMA journal_size_limit`).
    static let journalSizeLimit = 64 << 20

    /// A `TRUNCATE` checkpoint runs after this many bytes were written, so that large batches do
    /// not leave a large WAL behind.
    static let checkpointAfterBytes = 32 << 20

    /// Runs a checkpoint of `mode` (`TRUNCATE` or `PASSIVE`); a failure is logged and the
    /// checkpoint left for later. Returns whether it ran.
    @discardableResult
    func checkpoint(_ connection: SQLiteConnection, mode: StaticString) -> Bool {
        do {
            try connection.execute("PRAGMA wal_checkpoint(\(mode))")
            return true
        } catch {
            self.logger.debug("panza: WAL checkpoint deferred", metadata: ["mode": "\(mode)", "error": "\(error)"])
            return false
        }
    }
}
