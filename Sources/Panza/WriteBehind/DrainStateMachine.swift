/// The decisions of one write-behind queue's drainer, with no locks, tasks or clocks of its own.
///
/// ``QueueDrainer`` keeps one of these behind a lock, feeds it every event (work arrived, a batch
/// applied or failed, a flush asked for, close) and carries out what it returns outside the lock.
/// Sequence numbers are the queue's own; the *watermark* is the highest sequence below which
/// nothing is pending any more (applied or moved to the dead letters).
struct DrainStateMachine {
    struct Configuration: Hashable, Sendable {
        /// Operations applied in one batch.
        var maxBatch: Int
        /// Failed attempts after which an operation is moved to the dead letters.
        var maxAttempts: Int
        /// The first pause after a failure; it doubles up to ``maxBackoff``.
        var initialBackoff: Duration
        var maxBackoff: Duration
        /// How long an idle drainer waits before looking again without being told (`nil`: never).
        var pollInterval: Duration?
    }

    /// What the drainer does next.
    enum Step: Hashable {
        /// Claim and apply at most `limit` operations.
        case drain(limit: Int)
        /// Pause until `until` (a failure's backoff), then decide again.
        case sleep(until: Duration)
        /// Nothing to do: park until work arrives, close is asked, or `timeout` passes.
        case waitForWork(timeout: Duration?)
        /// The queue is closed and empty (or abandoned): return.
        case finish
    }

    /// What to do with a batch that failed.
    enum FailureDecision: Hashable {
        /// Leave it queued and try again after `after`.
        case retry(after: Duration)
        /// Move the batch's only operation to the dead letters and go on.
        case deadLetter
    }

    /// How a flush waiter ends.
    enum Resume: Hashable {
        /// Everything up to its target was applied.
        case applied(id: UInt64)
        /// Everything up to its target left the queue, but some of it went to the dead letters.
        case dropped(id: UInt64, count: Int)
        /// A batch failed while it waited; the operations stay queued.
        case failed(id: UInt64)
        /// The queue closed before its target was reached.
        case abandoned(id: UInt64)
    }

    private struct Waiter {
        var target: UInt64
        var dropsAtRegistration: Int
    }

    private enum Phase: Hashable {
        /// Claiming and applying.
        case running
        /// The last claim found nothing; waiting for ``workArrived()``.
        case idle
        /// After a failure, until the given time.
        case backingOff(until: Duration)
        /// Returned `.finish`; every later event is ignored.
        case finished
    }

    let configuration: Configuration
    private(set) var watermark: UInt64 = 0
    private(set) var isClosing = false
    /// Operations moved to the dead letters so far.
    private(set) var drops = 0
    private var phase = Phase.running
    /// Work arrived after the drainer last decided to claim: a claim that found nothing must
    /// not put it to sleep, since that claim may have run before the work was queued.
    private var workSignalled = false
    private var limit: Int
    private var backoff: Duration
    private var waiters: [UInt64: Waiter] = [:]

    init(configuration: Configuration) {
        precondition(configuration.maxBatch >= 1 && configuration.maxAttempts >= 1)
        self.configuration = configuration
        self.limit = configuration.maxBatch
        self.backoff = configuration.initialBackoff
    }

    var isFinished: Bool { self.phase == .finished }
    /// Whether a drainer that was told `.waitForWork` should park (nothing arrived meanwhile).
    var isWaitingForWork: Bool { self.phase == .idle && !self.isClosing }

    /// What to do now.
    mutating func next(now: Duration) -> Step {
        switch self.phase {
        case .finished:
            return .finish
        case .running:
            self.workSignalled = false
            return .drain(limit: self.limit)
        case .backingOff(let until):
            if now >= until {
                self.phase = .running
                self.workSignalled = false
                return .drain(limit: self.limit)
            }
            return .sleep(until: until)
        case .idle:
            if self.isClosing {
                self.phase = .finished
                return .finish
            }
            return .waitForWork(timeout: self.configuration.pollInterval)
        }
    }

    /// New operations were queued. Returns whether a parked drainer must be woken.
    mutating func workArrived() -> Bool {
        guard self.phase == .idle else {
            self.workSignalled = true
            return false
        }
        self.phase = .running
        return true
    }

    /// A parked drainer's poll interval passed.
    mutating func pollTimerFired() {
        if self.phase == .idle { self.phase = .running }
    }

    /// A claim found nothing to apply. `watermark` covers everything queued so far.
    mutating func claimedNothing(watermark: UInt64) -> [Resume] {
        guard self.phase != .finished else { return [] }
        if self.workSignalled {
            self.workSignalled = false  // look again before sleeping
        } else {
            self.phase = .idle
        }
        return self.advance(to: watermark)
    }

    /// A batch was applied; nothing up to `watermark` is pending.
    mutating func succeeded(watermark: UInt64) -> [Resume] {
        guard self.phase != .finished else { return [] }
        self.limit = self.configuration.maxBatch
        self.backoff = self.configuration.initialBackoff
        if case .backingOff = self.phase { self.phase = .running }
        return self.advance(to: watermark)
    }

    /// Applying a batch of `batchCount` operations failed; `headAttempts` counts the failures of its
    /// first operation, this one included.
    ///
    /// A failed batch is retried with its head alone, so that one bad operation is found and
    /// charged, not its neighbours. The head goes to the dead letters when the tier called the
    /// failure permanent or it failed ``Configuration/maxAttempts`` times.
    mutating func failed(
        batchCount: Int,
        headAttempts: Int,
        permanent: Bool,
        now: Duration
    ) -> (decision: FailureDecision, failedWaiters: [Resume]) {
        guard self.phase != .finished else { return (.retry(after: .zero), []) }
        if batchCount == 1, permanent || headAttempts >= self.configuration.maxAttempts {
            // The waiters learn of it from ``deadLettered(watermark:)``, as a drop.
            self.phase = .running
            return (.deadLetter, [])
        }
        let failedWaiters = self.waiters.keys.sorted().map { Resume.failed(id: $0) }
        self.waiters = [:]
        let pause = self.backoff
        self.backoff = min(self.backoff * 2, self.configuration.maxBackoff)
        self.limit = 1
        self.phase = .backingOff(until: now + pause)
        return (.retry(after: pause), failedWaiters)
    }

    /// An operation was moved to the dead letters; nothing up to `watermark` is pending.
    ///
    /// The poison is out of the queue: the operations behind it are drained at once, in full
    /// batches, without the backoff it earned (one poison write used to stall the queue ~11 s).
    mutating func deadLettered(watermark: UInt64) -> [Resume] {
        guard self.phase != .finished else { return [] }
        self.drops += 1
        self.limit = self.configuration.maxBatch
        self.backoff = self.configuration.initialBackoff
        return self.advance(to: watermark)
    }

    /// A caller waits for every operation up to `target`. Returns how it ends now, or `nil` when
    /// it was registered and will end with a later event.
    mutating func flush(id: UInt64, target: UInt64) -> Resume? {
        if target <= self.watermark { return .applied(id: id) }
        if self.phase == .finished { return .abandoned(id: id) }
        self.waiters[id] = Waiter(target: target, dropsAtRegistration: self.drops)
        return nil
    }

    /// A flush waiter was cancelled. Returns whether it was still registered.
    mutating func cancelFlush(id: UInt64) -> Bool {
        self.waiters.removeValue(forKey: id) != nil
    }

    /// Stop once the queue is empty. Returns whether a parked drainer must be woken.
    ///
    /// The drainer claims once more after this, whatever it found before: a write accepted just
    /// before close (queued before the cache's fence closed) may have come after the last claim,
    /// with its ``workArrived()`` still on its way. Only a claim that starts after close, and so
    /// after every accepted write was queued, may find the queue empty for good.
    mutating func close() -> Bool {
        self.isClosing = true
        switch self.phase {
        case .idle:
            self.phase = .running
            return true
        case .running:
            self.workSignalled = true
            return false
        case .backingOff, .finished:
            return false
        }
    }

    /// Stop now, whatever is pending (close's deadline passed). Returns the waiters to end.
    mutating func abandon() -> [Resume] {
        self.phase = .finished
        self.isClosing = true
        let ended = self.waiters.keys.sorted().map { Resume.abandoned(id: $0) }
        self.waiters = [:]
        return ended
    }

    private mutating func advance(to watermark: UInt64) -> [Resume] {
        self.watermark = max(self.watermark, watermark)
        var resumed: [Resume] = []
        for (id, waiter) in self.waiters where waiter.target <= self.watermark {
            let dropped = self.drops - waiter.dropsAtRegistration
            resumed.append(dropped > 0 ? .dropped(id: id, count: dropped) : .applied(id: id))
        }
        for resume in resumed {
            switch resume {
            case .applied(let id), .dropped(let id, _), .failed(let id), .abandoned(let id):
                self.waiters[id] = nil
            }
        }
        return resumed.sorted { $0.id < $1.id }
    }
}

extension DrainStateMachine.Resume {
    var id: UInt64 {
        switch self {
        case .applied(let id), .dropped(let id, _), .failed(let id), .abandoned(let id): id
        }
    }
}
