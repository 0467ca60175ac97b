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
        switch self.checkpoint(connection, mode: .passive) {
        case .complete, .partial:
            self.idleCheckpoints.add(1, ordering: .relaxed)
            self.resumeIdleCheckpointWaiters()
        case .busy, .failed:
            break
        }
    }

    /// The WAL is truncated to at most this after a checkpoint (`PRAGMA journal_size_limit`).
    static let journalSizeLimit = 64 << 20

    /// How long a checkpoint waits for other connections (its busy timeout, in milliseconds). A
    /// `TRUNCATE` waits for every reader of the WAL while it holds the file's write lock, so every
    /// writer of every process waits with it: it waits this long at most, and is tried again later.
    static let checkpointBusyTimeoutMilliseconds: Int32 = 100
    /// After a `TRUNCATE` that did not complete, the next is tried once this much of the clock
    /// passed (milliseconds), so that a long reader does not slow every batch.
    static let truncateRetryMilliseconds: Int64 = 1_000

    enum CheckpointMode {
        /// Copies what it can, waiting for no one.
        case passive
        /// Copies the whole WAL and empties it, waiting (a short while) for readers and writers.
        case truncate
    }

    /// What a checkpoint did.
    enum CheckpointOutcome: Equatable {
        /// The whole WAL is in the database file (for `TRUNCATE`, the WAL is empty).
        case complete
        /// It ran, but readers still use part of the WAL (a `PASSIVE` one only).
        case partial
        /// Another connection held it back (SQLite's "busy" column); nothing was truncated.
        case busy
        /// It failed with an error.
        case failed
    }

    /// Runs a checkpoint and reads what it did from its result row (busy, frames in the WAL,
    /// frames copied): a busy one is logged and counted (``busyCheckpointCount``), a failure
    /// logged; either is tried again later.
    @discardableResult
    func checkpoint(_ connection: SQLiteConnection, mode: CheckpointMode) -> CheckpointOutcome {
        connection.setBusyTimeout(milliseconds: Self.checkpointBusyTimeoutMilliseconds)
        defer {
            connection.setBusyTimeout(milliseconds: Int32(clamping: self.configuration.busyTimeout.wholeMilliseconds))
        }
        do {
            let statement = try connection.statement(
                mode == .truncate ? "PRAGMA wal_checkpoint(TRUNCATE)" : "PRAGMA wal_checkpoint(PASSIVE)")
            defer { statement.reset() }
            guard try statement.step() else { return .failed }
            let busy = statement.int64(at: 0) != 0
            let walFrames = statement.int64(at: 1)
            let copiedFrames = statement.int64(at: 2)
            if busy {
                self.busyCheckpoints.add(1, ordering: .relaxed)
                self.logger.notice(
                    "panza: WAL checkpoint held back by another connection; tried again later",
                    metadata: [
                        "mode": "\(mode)", "walFrames": "\(walFrames)", "copiedFrames": "\(copiedFrames)",
                        "path": "\(self.configuration.path)",
                    ])
                return .busy
            }
            return walFrames == copiedFrames ? .complete : .partial
        } catch {
            self.logger.debug("panza: WAL checkpoint deferred", metadata: ["mode": "\(mode)", "error": "\(error)"])
            return .failed
        }
    }

    /// Empties the WAL once ``truncateAfterBytes`` were written since the last `TRUNCATE` that
    /// completed (the bytes are kept until one does), or once the WAL file is twice that large:
    /// the values written are only part of a WAL's pages (indexes, the usage row, evictions'
    /// freed pages, per transaction), and many small transactions write many more.
    ///
    /// After one that did not complete, the next waits ``truncateRetryMilliseconds``, unless the
    /// WAL grew to four times the threshold and doubled meanwhile: a fast writer fills many megabytes in a
    /// second, and the disk budget counts the WAL.
    func truncateIfDue(_ connection: SQLiteConnection) {
        let walBytes = self.walFileBytes
        guard self.bytesSinceCheckpoint >= self.truncateAfterBytes || walBytes >= 2 * self.truncateAfterBytes
        else { return }
        let now = self.clock.nowMilliseconds()
        guard
            now >= self.truncateNotBefore
                || walBytes >= max(4 * self.truncateAfterBytes, 2 * self.walBytesAtFailedTruncate)
        else { return }
        if self.checkpoint(connection, mode: .truncate) == .complete {
            self.bytesSinceCheckpoint = 0
            self.walBytesAtFailedTruncate = 0
        } else {
            self.truncateNotBefore = now + Self.truncateRetryMilliseconds
            self.walBytesAtFailedTruncate = walBytes
        }
    }

    /// The size of the WAL file (SQLite names it `<path>-wal`); 0 when there is none.
    var walFileBytes: Int {
        var info = stat()
        return stat(self.configuration.path + "-wal", &info) == 0 ? Int(info.st_size) : 0
    }

    /// The bytes written after which the WAL is emptied: ``Configuration/checkpointAfterBytes``,
    /// at most ``walScaleBytes``, so that the WAL of a small file stays small beside it.
    var truncateAfterBytes: Int { min(self.configuration.checkpointAfterBytes, self.walScaleBytes) }

    /// How many checkpoints another connection held back since the tier opened.
    nonisolated var busyCheckpointCount: Int { self.busyCheckpoints.load(ordering: .relaxed) }
}
