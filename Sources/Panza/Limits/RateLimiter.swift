/// A token bucket: at most `ratePerSecond` tokens a second on average, and at most `burst` at once.
///
/// ```swift
/// let limiter = RateLimiter(ratePerSecond: 200, burst: 20)
/// try await limiter.acquire()            // cost 1
/// try await limiter.acquire(cost: 5)
/// let ok = await limiter.tryAcquire(cost: 1)
/// ```
///
/// Waiters are served in arrival order: a large cost is not starved by small ones that arrive after
/// it, and `tryAcquire` never jumps the queue. A waiter that is cancelled leaves at once with
/// `CancellationError` and takes no tokens; the next waiter is reconsidered immediately, so a
/// cancellation never lowers the rate the others get. The bucket starts full (one burst is
/// available at once). Tokens accrue continuously, so oversleeping timers do not lower the long-run
/// rate. Pass a `clock` to drive time yourself in tests.
public actor RateLimiter {
    /// What the limiter has done since it was created.
    public struct Statistics: Hashable, Sendable {
        /// Acquisitions granted.
        public var acquired = 0
        /// Acquisitions that had to wait.
        public var throttled = 0
        /// Time spent waiting, summed over the acquisitions that waited.
        public var totalWait: Duration = .zero
    }

    private struct Waiter {
        var id: UInt64
        var cost: Double
        var slot: WaiterSlot
    }

    /// Tokens added per second.
    public nonisolated let ratePerSecond: Double
    /// The most tokens held at once.
    public nonisolated let burst: Int

    private let now: @Sendable () -> Duration
    private let sleep: @Sendable (Duration) async throws -> Void
    private var tokens: Double
    private var updatedAt: Duration
    private var pausedUntil: Duration = .zero
    private var waiters: [Waiter] = []
    private var nextID: UInt64 = 0
    private var pump: (generation: UInt64, task: Task<Void, Never>)?
    private var counters = Statistics()

    /// A limiter on the continuous clock.
    ///
    /// - Precondition: `ratePerSecond > 0` and `burst >= 1`.
    public init(ratePerSecond: Double, burst: Int) {
        self.init(ratePerSecond: ratePerSecond, burst: burst, clock: ContinuousClock())
    }

    /// A limiter on `clock`.
    ///
    /// - Precondition: `ratePerSecond > 0` and `burst >= 1`.
    public init<C: Clock>(ratePerSecond: Double, burst: Int, clock: C) where C.Duration == Duration {
        precondition(ratePerSecond > 0 && ratePerSecond.isFinite, "ratePerSecond must be positive")
        precondition(burst >= 1, "burst must be at least 1")
        let start = clock.now
        self.ratePerSecond = ratePerSecond
        self.burst = burst
        self.now = { start.duration(to: clock.now) }
        self.sleep = { offset in try await clock.sleep(until: start.advanced(by: offset), tolerance: nil) }
        self.tokens = Double(burst)
        self.updatedAt = .zero
    }

    /// What the limiter has done so far.
    public var statistics: Statistics { self.counters }

    /// Acquisitions waiting right now.
    public var waitingCount: Int { self.waiters.count { !$0.slot.isCancelled } }

    /// Waits until `cost` tokens are available, in arrival order, and takes them.
    ///
    /// - Throws: `CancellationError` when the task is cancelled while waiting (no tokens are
    ///   taken); ``PanzaError/Code/invalidConfiguration`` when `cost` is below 1 or above ``burst``.
    public func acquire(cost: Int = 1) async throws {
        _ = try await self.acquireMeasured(cost: cost)
    }

    /// Takes `cost` tokens if that needs no waiting and nobody is waiting. Returns whether it did.
    public func tryAcquire(cost: Int = 1) -> Bool {
        guard cost >= 1, cost <= self.burst else { return false }
        let now = self.refill()
        guard self.waiters.isEmpty, now >= self.pausedUntil, self.tokens >= Double(cost) else { return false }
        self.tokens -= Double(cost)
        self.counters.acquired += 1
        return true
    }

    /// Grants nothing until `duration` from now (an upstream said to back off), then resumes the pace.
    public func pause(for duration: Duration) {
        let until = self.refill() + duration
        guard until > self.pausedUntil else { return }
        self.pausedUntil = until
        self.restartPump()
    }

    /// Acquires, and returns how long it waited.
    func acquireMeasured(cost: Int) async throws -> Duration {
        guard cost >= 1, cost <= self.burst else {
            throw PanzaError(
                code: .invalidConfiguration,
                message: "a rate limiter with burst \(self.burst) cannot grant a cost of \(cost)"
            )
        }
        try Task.checkCancellation()
        let start = self.refill()
        if self.waiters.isEmpty, start >= self.pausedUntil, self.tokens >= Double(cost) {
            self.tokens -= Double(cost)
            self.counters.acquired += 1
            return .zero
        }
        self.nextID &+= 1
        let waiter = Waiter(id: self.nextID, cost: Double(cost), slot: WaiterSlot())
        self.waiters.append(waiter)
        if self.pump == nil { self.restartPump() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                waiter.slot.park(continuation)
            }
        } onCancel: {
            if waiter.slot.cancel() {
                Task { await self.removeCancelled(waiter.id) }
            }
        }
        let waited = self.now() - start
        self.counters.throttled += 1
        self.counters.totalWait += waited
        return waited
    }

    /// Adds the tokens earned since the last update. Returns the current time.
    @discardableResult
    private func refill() -> Duration {
        let now = self.now()
        if now > self.updatedAt {
            let elapsed = now - self.updatedAt
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            self.tokens = min(Double(self.burst), self.tokens + seconds * self.ratePerSecond)
            self.updatedAt = now
        }
        return now
    }

    private func removeCancelled(_ id: UInt64) {
        guard let index = self.waiters.firstIndex(where: { $0.id == id }) else { return }
        self.waiters.remove(at: index)
        if index == 0 { self.restartPump() }
    }

    /// Starts a new pump, stopping the one that sleeps on a stale plan.
    private func restartPump() {
        self.pump?.task.cancel()
        guard !self.waiters.isEmpty else {
            self.pump = nil
            return
        }
        self.nextID &+= 1
        let generation = self.nextID
        self.pump = (generation, Task { await self.runPump(generation: generation) })
    }

    /// Grants the head of the queue whenever its tokens are there; sleeps until they will be.
    private func runPump(generation: UInt64) async {
        while self.pump?.generation == generation, !Task.isCancelled {
            while let head = self.waiters.first, head.slot.isCancelled {
                self.waiters.removeFirst()
            }
            guard let head = self.waiters.first else {
                self.pump = nil
                return
            }
            let now = self.refill()
            if now >= self.pausedUntil, self.tokens >= head.cost {
                self.waiters.removeFirst()
                if head.slot.grant() {
                    self.tokens -= head.cost
                    self.counters.acquired += 1
                }
                continue
            }
            let tokensDue = max(0, head.cost - self.tokens) / self.ratePerSecond
            let readyAt = max(self.pausedUntil, now + .nanoseconds(Int64((tokensDue * 1e9).rounded(.up))))
            do {
                try await self.sleep(readyAt)
            } catch {
                return  // replaced by a newer pump
            }
        }
    }
}
