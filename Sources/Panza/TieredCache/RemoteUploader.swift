import Logging
import Synchronization

/// Drains the SQLite outbox into a remote tier: durable write-behind for uploads.
///
/// Records are written to the outbox in the same transaction as the local entry, so an upload that
/// was pending when the process died is found and sent by the next process that opens the file.
/// Records are sent in order, in batches (the remote tier applies a batch with bounded
/// concurrency), and deleted once applied. When the remote fails, the records stay and are retried
/// with backoff (100 ms doubling to 30 s); callers never see the failure unless they `flush()`.
///
/// Several processes sharing one file may send the same record twice; uploads and deletions are
/// idempotent, so that costs requests, not correctness.
final class RemoteUploader: Sendable {
    private struct Waiter {
        var target: Int64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var uploadedThrough: Int64 = 0
        var wake: CheckedContinuation<Void, Never>?
        var pendingWake = false
        var waiters: [Waiter] = []
        var isStopping = false
    }

    let outbox: SQLiteTier
    let remote: any CacheTier
    private let batchSize: Int
    private let statistics: StatisticsRecorder
    private let logger: Logger
    private let state = Mutex(State())

    init(outbox: SQLiteTier, remote: any CacheTier, batchSize: Int, statistics: StatisticsRecorder, logger: Logger) {
        self.outbox = outbox
        self.remote = remote
        self.batchSize = batchSize
        self.statistics = statistics
        self.logger = logger
    }

    /// Tells the uploader that new records may be waiting.
    func notify() {
        let wake = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            defer { state.wake = nil }
            if state.wake == nil { state.pendingWake = true }
            return state.wake
        }
        wake?.resume()
    }

    /// Returns once every outbox record up to `target` has reached the remote tier.
    ///
    /// - Throws: the remote tier's error when an upload fails while waiting; the records stay.
    func waitUntilUploaded(_ target: Int64) async throws {
        guard target > 0 else { return }
        self.notify()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let done = self.state.withLock { state in
                if state.uploadedThrough >= target { return true }
                state.waiters.append(Waiter(target: target, continuation: continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Stops after the current batch; unsent records stay in the outbox for the next start.
    func stop() {
        let (wake, waiters) = self.state.withLock { state in
            state.isStopping = true
            defer {
                state.wake = nil
                state.waiters = []
            }
            return (state.wake, state.waiters)
        }
        wake?.resume()
        for waiter in waiters {
            waiter.continuation.resume(throwing: PanzaError(code: .closed, message: "the cache closed before the upload finished"))
        }
    }

    /// The upload loop. Run it in a task; it returns after ``stop()``.
    func run() async {
        var backoff = Duration.milliseconds(100)
        while !self.state.withLock({ $0.isStopping }) {
            let records: [OutboxRecord]
            do {
                records = try await self.outbox.pendingOutbox(limit: self.batchSize)
            } catch {
                self.logger.warning("panza: could not read the outbox", metadata: ["error": "\(error)"])
                await self.idle(for: backoff)
                backoff = min(backoff * 2, .seconds(30))
                continue
            }
            guard let last = records.last else {
                self.caughtUp()
                await self.idle(for: .seconds(5))
                continue
            }
            do {
                try await self.remote.apply(records.map(\.operation))
                try await self.outbox.completeOutbox(records.map(\.id))
                self.uploaded(through: last.id, records: records)
                backoff = .milliseconds(100)
            } catch {
                self.failed(error)
                self.logger.warning(
                    "panza: upload to the remote tier failed; the records stay in the outbox and will be retried",
                    metadata: ["tier": "\(self.remote.name)", "records": "\(records.count)", "error": "\(error)"]
                )
                await self.idle(for: backoff)
                backoff = min(backoff * 2, .seconds(30))
            }
        }
    }

    /// Waits for ``notify()``, ``stop()`` or `duration`, whichever comes first.
    private func idle(for duration: Duration) async {
        let timer = Task {
            try? await Task.sleep(for: duration)
            self.notify()
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = self.state.withLock { state in
                if state.pendingWake || state.isStopping {
                    state.pendingWake = false
                    return true
                }
                state.wake = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
        timer.cancel()
    }

    private func uploaded(through id: Int64, records: [OutboxRecord]) {
        var bytes = 0
        for record in records {
            if case .store(_, let blob, _) = record.operation { bytes += blob.count }
        }
        self.statistics.add(.writeBatches)
        self.statistics.add(.bytesWritten, bytes)
        let ready = self.state.withLock { state -> [Waiter] in
            state.uploadedThrough = max(state.uploadedThrough, id)
            let through = state.uploadedThrough
            let ready = state.waiters.filter { $0.target <= through }
            state.waiters.removeAll { $0.target <= through }
            return ready
        }
        for waiter in ready { waiter.continuation.resume() }
    }

    /// The outbox is empty: every waiter's records are gone (possibly sent by another process).
    private func caughtUp() {
        let ready = self.state.withLock { state -> [Waiter] in
            defer { state.waiters = [] }
            if let highest = state.waiters.map(\.target).max() {
                state.uploadedThrough = max(state.uploadedThrough, highest)
            }
            return state.waiters
        }
        for waiter in ready { waiter.continuation.resume() }
    }

    private func failed(_ error: any Error) {
        self.statistics.add(.writeFailures)
        let waiters = self.state.withLock { state in
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.continuation.resume(throwing: error) }
    }
}
