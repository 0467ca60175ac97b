/// Decides whether the cache asks a remote tier at all, after it failed or timed out several times
/// in a row: a pure state machine, fed the time by its caller.
///
/// Closed, it lets every read through and counts consecutive failures; at
/// ``Configuration/failureThreshold`` it opens for ``Configuration/openDuration``, during which
/// reads skip the tier (a miss goes straight to the loader). Then it lets one probe through
/// (half-open): a success closes it, a failure opens it again for twice as long, up to
/// ``Configuration/maxOpenDuration``.
public struct CircuitBreaker: Sendable {
    /// Settings of a breaker.
    public struct Configuration: Hashable, Sendable {
        /// Consecutive failures (errors or timeouts) that open the breaker; 5 by default.
        public var failureThreshold: Int
        /// How long the breaker first stays open; 1 s by default.
        public var openDuration: Duration
        /// The longest it stays open after failed probes; 30 s by default.
        public var maxOpenDuration: Duration
        /// Whether a read that answers, but more slowly than this cache's loads typically take (an
        /// average of recent load times, and at least ``minimumSlowRead``), counts toward opening
        /// the breaker, as a failure does; its answer is still used. A remote tier slower than
        /// calling the API directly is then skipped until a probe is fast again, while one faster
        /// than the API (an LLM call of seconds, S3 in hundreds of milliseconds) stays in use.
        /// Nothing counts as slow before the first load. `true` by default.
        public var skipsTiersSlowerThanLoads: Bool = true
        /// Reads faster than this never count as slow; 10 ms by default.
        public var minimumSlowRead: Duration = .milliseconds(10)

        /// A breaker that opens after `failureThreshold` consecutive failures for `openDuration`,
        /// doubling up to `maxOpenDuration`.
        public init(
            failureThreshold: Int = 5, openDuration: Duration = .seconds(1), maxOpenDuration: Duration = .seconds(30)
        ) {
            self.failureThreshold = failureThreshold
            self.openDuration = openDuration
            self.maxOpenDuration = maxOpenDuration
        }
    }

    /// Where the breaker stands.
    public enum State: String, Hashable, Sendable, Codable {
        /// Reads go to the tier.
        case closed
        /// Reads skip the tier.
        case open
        /// One probe is in flight; other reads skip the tier.
        case halfOpen
    }

    /// What a state change means, for logs and statistics.
    enum Transition: Hashable {
        case opened(for: Duration)
        case closed
    }

    let configuration: Configuration
    private(set) var state = State.closed
    private var failures = 0
    private var openUntil: Duration = .zero
    private var nextOpenDuration: Duration

    init(configuration: Configuration) {
        self.configuration = configuration
        self.nextOpenDuration = configuration.openDuration
    }

    /// Whether a read may go to the tier at `now`. In half-open, only the first caller gets `true`.
    mutating func allowsRead(now: Duration) -> Bool {
        switch self.state {
        case .closed:
            return true
        case .open:
            guard now >= self.openUntil else { return false }
            self.state = .halfOpen
            return true
        case .halfOpen:
            return false
        }
    }

    /// A read got an answer (a hit or a miss).
    mutating func recordSuccess() -> Transition? {
        self.failures = 0
        self.nextOpenDuration = self.configuration.openDuration
        guard self.state != .closed else { return nil }
        self.state = .closed
        return .closed
    }

    /// A read failed or timed out at `now`.
    mutating func recordFailure(now: Duration) -> Transition? {
        switch self.state {
        case .closed:
            self.failures += 1
            guard self.failures >= self.configuration.failureThreshold else { return nil }
        case .halfOpen:
            break
        case .open:
            return nil  // a read that started before the breaker opened
        }
        let duration = self.nextOpenDuration
        self.state = .open
        self.openUntil = now + duration
        self.nextOpenDuration = min(duration * 2, self.configuration.maxOpenDuration)
        return .opened(for: duration)
    }
}
