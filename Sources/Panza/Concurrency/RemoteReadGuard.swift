import Logging
import Synchronization

/// Bounds what a lookup may wait for a remote tier: a deadline on each read, and a
/// ``CircuitBreaker`` that skips the tier after consecutive failures, so that a dead, slow or
/// blackholed remote costs a caller at most a short wait, then nothing.
///
/// A read that passes its deadline is abandoned, not cancelled: it goes on in the background (the
/// tier's own timeouts end it) while the caller moves on to its loader. A caller that is cancelled
/// stops waiting at once, cancels its read and tells the breaker nothing.
final class RemoteReadGuard: Sendable {
    /// How a guarded read ended.
    enum Outcome<Value: Sendable>: Sendable {
        case value(Value)
        /// The breaker is open: the tier was not asked.
        case skipped
        /// The deadline passed first.
        case timedOut(Duration)
        case failed(any Error)
    }

    let tierName: String
    let timeout: Duration?
    private let breaker: Mutex<CircuitBreaker>
    private let slowerThan: @Sendable () -> Duration?
    private let onSlowRead: @Sendable () -> Void
    /// The breaker's time: the cache's clock (``TieredCache/Configuration/clock``).
    private let now: @Sendable () -> Duration
    /// Measures reads against `slowerThan`, as loads are measured.
    private let clock = ContinuousClock()
    private let logger: Logger

    /// - Parameters:
    ///   - now: the time by which the breaker's open periods pass.
    ///   - slowerThan: how long a read may take before it counts as slow (a failure for the
    ///     breaker, its answer still used); `nil` when there is no such bound yet.
    ///   - onSlowRead: called for each slow read (statistics).
    init(
        tierName: String,
        timeout: Duration?,
        breaker: CircuitBreaker.Configuration,
        logger: Logger,
        now: @escaping @Sendable () -> Duration,
        slowerThan: @escaping @Sendable () -> Duration? = { nil },
        onSlowRead: @escaping @Sendable () -> Void = {}
    ) {
        self.tierName = tierName
        self.timeout = timeout
        self.breaker = Mutex(CircuitBreaker(configuration: breaker))
        self.slowerThan = slowerThan
        self.onSlowRead = onSlowRead
        self.now = now
        self.logger = logger
    }

    /// Where the breaker stands.
    var state: CircuitBreaker.State { self.breaker.withLock { $0.state } }

    /// Runs `read` unless the breaker is open, within the deadline.
    ///
    /// - Throws: `CancellationError` when the calling task is cancelled, at once (the read is
    ///   cancelled, and the breaker counts neither a success nor a failure).
    func read<Value: Sendable>(_ read: @escaping @Sendable () async throws -> Value) async throws -> Outcome<Value> {
        let now = self.now()
        guard self.breaker.withLock({ $0.allowsRead(now: now) }) else { return .skipped }
        let outcome: Outcome<Value>
        let started = self.clock.now
        do {
            if let timeout = self.timeout {
                if let value = try await Deadline.value(
                    within: timeout, clock: SystemCacheClock(), cancelsOnTimeout: false, read)
                {
                    outcome = .value(value)
                } else {
                    outcome = .timedOut(timeout)
                }
            } else {
                outcome = .value(try await read())
            }
        } catch is CancellationError where Task.isCancelled {
            throw CancellationError()
        } catch {
            outcome = .failed(error)
        }
        var slow = false
        if case .value = outcome, let bound = self.slowerThan(), started.duration(to: self.clock.now) > bound {
            slow = true
            self.onSlowRead()
        }
        let transition: CircuitBreaker.Transition? = self.breaker.withLock { breaker in
            if case .value = outcome, !slow { return breaker.recordSuccess() }
            // The tier answered, with an object that is refused: not an outage.
            if case .failed(let error) = outcome, (error as? PanzaError)?.code == .untrustedBlob {
                return breaker.recordSuccess()
            }
            return breaker.recordFailure(now: self.now())
        }
        switch transition {
        case .opened(let duration):
            self.logger.warning(
                "panza: circuit breaker opened; reads skip the tier",
                metadata: ["tier": "\(self.tierName)", "for": "\(duration)", "slow": "\(slow)"]
            )
        case .closed:
            self.logger.info(
                "panza: circuit breaker closed; reads use the tier again", metadata: ["tier": "\(self.tierName)"])
        case nil:
            break
        }
        return outcome
    }
}
