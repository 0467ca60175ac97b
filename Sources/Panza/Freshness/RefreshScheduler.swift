import Synchronization

/// The background refreshes of a cache: one task per key at a time, none after close, and a
/// per-key failure backoff that also throttles fail-safe loads during an outage.
///
/// A refresh is decided, and takes its ``StoreCondition``, when its stale or due hit is served
/// (``TieredCache/startRefresh(_:)``), so that a `set` made just after that hit wins over it.
final class RefreshScheduler: Sendable {
    /// The first backoff after a failure; each further failure doubles it, up to ``maximumBackoff``.
    static let initialBackoff: Int64 = 1_000
    static let maximumBackoff: Int64 = 30_000
    /// The most keys whose failures are remembered; beyond it the oldest are forgotten.
    static let maximumFailedKeys = 10_000

    private struct Failure {
        var until: Int64
        var backoff: Int64
        /// The failure's error: a fail-safe policy is asked about it while the key backs off.
        var error: any Error
    }

    private struct State {
        var tasks: [String: Task<Void, Never>] = [:]
        var failures: [String: Failure] = [:]
        var isClosed = false
    }

    private let state = Mutex(State())

    /// Starts `body` as the refresh of `key` unless one runs already or the scheduler is closed
    /// (its caller asks ``isBackingOff(_:atMilliseconds:)`` first, and counts a backed-off key).
    /// Returns whether it started.
    @discardableResult
    func start(_ key: CacheKey, _ body: @escaping @Sendable () async -> Void) -> Bool {
        self.state.withLock { state in
            guard !state.isClosed, state.tasks[key.rawValue] == nil else { return false }
            // A refresh runs on its own: it holds none of the permits of the load that started it.
            state.tasks[key.rawValue] = HeldPermits.$current.withValue([]) {
                Task {
                    await body()
                    _ = self.state.withLock { $0.tasks.removeValue(forKey: key.rawValue) }
                }
            }
            return true
        }
    }

    /// Whether the key's last load failed within its backoff period.
    func isBackingOff(_ key: CacheKey, atMilliseconds now: Int64) -> Bool {
        self.backoffError(key, atMilliseconds: now) != nil
    }

    /// The error of the key's last load when it failed within its backoff period; `nil` when the
    /// key is not backing off.
    func backoffError(_ key: CacheKey, atMilliseconds now: Int64) -> (any Error)? {
        self.state.withLock { state in
            guard let failure = state.failures[key.rawValue], failure.until > now else { return nil }
            return failure.error
        }
    }

    func recordFailure(_ key: CacheKey, error: any Error, atMilliseconds now: Int64) {
        self.state.withLock { state in
            if state.failures.count >= Self.maximumFailedKeys, state.failures[key.rawValue] == nil {
                state.failures = state.failures.filter { $0.value.until > now }
                if state.failures.count >= Self.maximumFailedKeys { state.failures.removeAll() }
            }
            let backoff =
                state.failures[key.rawValue].map { min($0.backoff * 2, Self.maximumBackoff) }
                ?? Self.initialBackoff
            state.failures[key.rawValue] = Failure(until: now + backoff, backoff: backoff, error: error)
        }
    }

    func recordSuccess(_ key: CacheKey) {
        self.state.withLock { state in
            if !state.failures.isEmpty { state.failures[key.rawValue] = nil }
        }
    }

    /// The refreshes running now.
    var running: [Task<Void, Never>] { self.state.withLock { Array($0.tasks.values) } }

    /// Refuses new refreshes and cancels those running.
    func close() {
        let tasks = self.state.withLock { state in
            state.isClosed = true
            defer { state.tasks = [:] }
            return Array(state.tasks.values)
        }
        for task in tasks { task.cancel() }
    }
}
