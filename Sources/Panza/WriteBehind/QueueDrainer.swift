import Logging
import Synchronization

/// Drains one ``WriteQueue`` into its tier: the one drain loop of Panza, for the in-memory queues
/// and for the SQLite outbox alike.
///
/// Every decision (batch size, backoff, when an operation goes to the dead letters, which flush
/// waiters end, when to stop) is made by a ``DrainStateMachine`` behind a lock; this type only
/// carries out what it returns, outside the lock. Time comes from an injected clock, so tests
/// drive backoff without sleeping.
final class QueueDrainer: Sendable {
    /// The clock the drainer sleeps on: the continuous clock, or a test's.
    struct Timing: Sendable {
        var now: @Sendable () -> Duration
        var sleep: @Sendable (Duration) async throws -> Void

        static var continuous: Timing {
            let clock = ContinuousClock()
            let start = clock.now
            return Timing(
                now: { start.duration(to: clock.now) },
                sleep: { try await clock.sleep(until: start.advanced(by: $0)) }
            )
        }
    }

    private struct State {
        var machine: DrainStateMachine
        var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        var nextWaiterID: UInt64 = 0
        var parked: CheckedContinuation<Void, Never>?
    }

    let queue: any WriteQueue
    private let timing: Timing
    private let statistics: StatisticsRecorder
    private let logger: Logger
    /// Called after each applied batch (the SQLite queue wakes the outbox drainer with it).
    private let onApplied: @Sendable ([QueuedWrite]) -> Void
    private let state: Mutex<State>

    init(
        queue: any WriteQueue,
        configuration: DrainStateMachine.Configuration,
        timing: Timing = .continuous,
        statistics: StatisticsRecorder,
        logger: Logger,
        onApplied: @escaping @Sendable ([QueuedWrite]) -> Void = { _ in }
    ) {
        self.queue = queue
        self.timing = timing
        self.statistics = statistics
        self.logger = logger
        self.onApplied = onApplied
        self.state = Mutex(State(machine: DrainStateMachine(configuration: configuration)))
    }

    // MARK: Events from the cache

    /// New operations were queued.
    func notify() {
        let parked = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard state.machine.workArrived() else { return nil }
            defer { state.parked = nil }
            return state.parked
        }
        parked?.resume()
    }

    /// Returns once every operation up to `target` left the queue.
    ///
    /// - Throws: the tier's error when a batch fails meanwhile (the operations stay queued);
    ///   ``PanzaError/Code/writeDropped`` when some went to the dead letters;
    ///   ``PanzaError/Code/closed`` when the queue was abandoned; `CancellationError`.
    func waitUntilApplied(_ target: UInt64) async throws {
        guard target > 0 else { return }
        let id = self.state.withLock { state in
            state.nextWaiterID &+= 1
            return state.nextWaiterID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let immediate: DrainStateMachine.Resume?? = self.state.withLock { state in
                    if Task.isCancelled { return .some(nil) }
                    let resume = state.machine.flush(id: id, target: target)
                    if resume == nil { state.waiters[id] = continuation }
                    return resume.map { .some($0) } ?? nil
                }
                switch immediate {
                case .none: break
                case .some(.none): continuation.resume(throwing: CancellationError())
                case .some(.some(let resume)): continuation.resume(with: self.outcome(of: resume, error: nil))
                }
            }
        } onCancel: {
            let waiter = self.state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard state.machine.cancelFlush(id: id) else { return nil }
                return state.waiters.removeValue(forKey: id)
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// The drainer stops once the queue is empty.
    func close() {
        let parked = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard state.machine.close() else { return nil }
            defer { state.parked = nil }
            return state.parked
        }
        parked?.resume()
    }

    /// The drainer stops now, whatever is pending; flush waiters end with ``PanzaError/Code/closed``.
    func abandon() {
        let (ended, parked) = self.state.withLock { state in
            let ended = state.machine.abandon().compactMap { resume in
                state.waiters.removeValue(forKey: resume.id).map { (resume, $0) }
            }
            defer { state.parked = nil }
            return (ended, state.parked)
        }
        parked?.resume()
        for (resume, waiter) in ended { waiter.resume(with: self.outcome(of: resume, error: nil)) }
    }

    var isFinished: Bool { self.state.withLock { $0.machine.isFinished } }

    // MARK: The loop

    /// Drains until closed and empty, or abandoned. Run it in a task of its own.
    func run() async {
        while true {
            let step = self.state.withLock { $0.machine.next(now: self.timing.now()) }
            switch step {
            case .finish:
                return
            case .sleep(let until):
                try? await self.timing.sleep(until)
            case .waitForWork(let timeout):
                await self.park(timeout: timeout)
            case .drain(let limit):
                await self.drainOnce(limit: limit)
            }
        }
    }

    private func drainOnce(limit: Int) async {
        let batch: [QueuedWrite]
        do {
            batch = try await self.queue.claim(limit: limit)
        } catch {
            self.logger.warning(
                "panza: could not read a write-behind queue; retrying",
                metadata: ["tier": "\(self.queue.tierName)", "error": "\(error)"]
            )
            self.handleFailure(error, batchCount: 2, headAttempts: 0)  // never a dead letter
            return
        }
        guard let head = batch.first else {
            let watermark = (try? await self.queue.watermark()) ?? 0
            self.resume(self.state.withLock { $0.machine.claimedNothing(watermark: watermark) }, error: nil)
            return
        }
        do {
            try await self.queue.apply(batch)
            let watermark = try await self.queue.complete(batch)
            self.statistics.add(.writeBatches)
            self.statistics.add(.bytesWritten, batch.reduce(0) { $0 + $1.byteCount })
            self.onApplied(batch)
            self.resume(self.state.withLock { $0.machine.succeeded(watermark: watermark) }, error: nil)
        } catch let error as PanzaError where error.code == .leaseLost {
            // Another uploader took the batch over (this one stalled past its lease): not a failure
            // of the tier, and nothing of it is this uploader's to fail or dead-letter any more.
            self.logger.notice(
                "panza: an upload batch was taken over by another uploader; leaving it to that one",
                metadata: ["tier": "\(self.queue.tierName)", "operations": "\(batch.count)", "error": "\(error)"]
            )
            let watermark = (try? await self.queue.watermark()) ?? 0
            self.resume(self.state.withLock { $0.machine.claimedNothing(watermark: watermark) }, error: nil)
        } catch {
            guard !self.isFinished else { return }
            await self.queue.recordFailure(batch)
            let decision = self.handleFailure(error, batchCount: batch.count, headAttempts: head.attempts + 1)
            switch decision {
            case .retry(let pause):
                self.logger.warning(
                    "panza: write-behind batch failed; it stays queued and will be retried",
                    metadata: [
                        "tier": "\(self.queue.tierName)", "operations": "\(batch.count)",
                        "retryIn": "\(pause)", "error": "\(error)",
                    ]
                )
            case .deadLetter:
                await self.moveToDeadLetters(head, error: error)
            }
        }
    }

    @discardableResult
    private func handleFailure(
        _ error: any Error,
        batchCount: Int,
        headAttempts: Int
    ) -> DrainStateMachine.FailureDecision {
        self.statistics.add(.writeFailures)
        let permanent = batchCount == 1 && self.queue.isPermanent(error)
        let (decision, failed) = self.state.withLock { state in
            state.machine.failed(
                batchCount: batchCount,
                headAttempts: headAttempts,
                permanent: permanent,
                now: self.timing.now()
            )
        }
        self.resume(failed, error: error)
        return decision
    }

    private func moveToDeadLetters(_ write: QueuedWrite, error: any Error) async {
        self.statistics.add(.droppedWrites)
        self.logger.error(
            "panza: a write failed for good and was moved to the dead letters",
            metadata: [
                "tier": "\(self.queue.tierName)", "operation": "\(write.operation.summary)",
                "attempts": "\(write.attempts + 1)", "error": "\(error)",
            ]
        )
        do {
            let watermark = try await self.queue.deadLetter(write, error: error)
            self.resume(self.state.withLock { $0.machine.deadLettered(watermark: watermark) }, error: nil)
        } catch {
            self.logger.warning(
                "panza: could not record a dead letter; the operation stays queued",
                metadata: ["tier": "\(self.queue.tierName)", "error": "\(error)"]
            )
        }
    }

    /// Parks until ``notify()``, ``close()``, ``abandon()`` or `timeout`.
    private func park(timeout: Duration?) async {
        let timer = timeout.map { timeout in
            Task {
                try await self.timing.sleep(self.timing.now() + timeout)
                let parked = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                    state.machine.pollTimerFired()
                    defer { state.parked = nil }
                    return state.parked
                }
                parked?.resume()
            }
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = self.state.withLock { state in
                guard state.machine.isWaitingForWork else { return true }
                state.parked = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
        timer?.cancel()
    }

    private func resume(_ resumes: [DrainStateMachine.Resume], error: (any Error)?) {
        guard !resumes.isEmpty else { return }
        let waiters = self.state.withLock { state in
            resumes.compactMap { resume in state.waiters.removeValue(forKey: resume.id).map { (resume, $0) } }
        }
        for (resume, waiter) in waiters { waiter.resume(with: self.outcome(of: resume, error: error)) }
    }

    private func outcome(of resume: DrainStateMachine.Resume, error: (any Error)?) -> Result<Void, any Error> {
        switch resume {
        case .applied:
            return .success(())
        case .dropped(_, let count):
            return .failure(
                PanzaError(
                    code: .writeDropped,
                    message: "\(count) write(s) to the \(self.queue.tierName) tier failed for good and were moved "
                        + "to the dead letters (see `panza outbox` and the error log)"
                )
            )
        case .failed:
            return .failure(
                error ?? PanzaError(code: .closed, message: "a write to the \(self.queue.tierName) tier failed")
            )
        case .abandoned:
            return .failure(
                PanzaError(
                    code: .closed,
                    message: "the cache closed before writes to the \(self.queue.tierName) tier finished"
                )
            )
        }
    }
}

extension CacheTierOperation {
    /// A short description for logs: the operation and its key, never the bytes.
    var summary: String {
        switch self {
        case .store(let key, let blob, _): "store \(key.rawValue) (\(blob.count) bytes)"
        case .remove(let key): "remove \(key.rawValue)"
        case .removeNamespace(let namespace): "remove namespace \(namespace)"
        case .removeAll: "remove all"
        }
    }
}
