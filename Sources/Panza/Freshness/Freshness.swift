/// How a cached value is kept useful around its expiry: served stale while it is refreshed,
/// served stale when the loader fails, bounded in how long a load may make a caller wait, and
/// refreshed before it expires.
///
/// ```swift
/// let policy = Freshness(staleFor: .seconds(3600), failSafeFor: .seconds(86_400),
///                        softTimeout: .milliseconds(200), hardTimeout: .seconds(10), refreshAhead: 0.8)
/// let forecast = cache.memoize(id: "forecast", timeToLive: .seconds(60), freshness: policy) { ... }
/// ```
///
/// An entry is *fresh* for its time to live, then *stale* for as long as the longest of
/// ``staleFor`` and ``failSafeFor`` (every tier keeps it that long), then gone. Every parameter
/// defaults to off: `Freshness()` behaves as a cache without it (an entry is served while fresh,
/// and a caller waits for the loader once it expires).
///
/// - ``staleFor``: *stale-while-revalidate*. A call that finds an entry expired less than
///   `staleFor` ago returns it at once and starts one background refresh of the key.
/// - ``failSafeFor``: *stale-if-error*. When the load a caller waits for fails (the loader throws
///   or ``hardTimeout`` passes), an entry expired less than `failSafeFor` ago is returned instead
///   of the error, and the failure is logged and counted.
/// - ``softTimeout``: when a stale entry could be returned and the load takes longer than this,
///   the caller gets the stale entry; the load finishes and stores in the background.
/// - ``hardTimeout``: a load that takes longer is given up: its callers get
///   ``PanzaError/Code/timedOut`` (or, within ``failSafeFor``, the stale entry), and the loader is
///   cancelled unless ``completesInBackground``.
/// - ``refreshAhead``: a hit in the last part of an entry's fresh period (after this fraction of
///   it) starts a background refresh, so that a hot key never expires in callers' faces.
///
/// Background refreshes run one per key at a time in a process, and one per key across the
/// processes that share a SQLite file (a lease in the file); they obey the same limits as a
/// normal load, and their result never replaces a value stored, or removed, after they started.
public struct Freshness: Sendable {
    /// How long after expiry an entry is returned at once while a background refresh replaces
    /// it; zero (the default) for never.
    public var staleFor: Duration
    /// How long after expiry an entry is returned instead of a failed load's error; zero (the
    /// default) for never.
    public var failSafeFor: Duration
    /// How long a caller that could be given a stale entry waits for a load; `nil` (the default)
    /// for as long as the load takes.
    public var softTimeout: Duration?
    /// How long a load may take at all (the limiters' waits included); `nil` (the default) for no
    /// limit.
    public var hardTimeout: Duration?
    /// The fraction of an entry's fresh period after which a hit starts a background refresh,
    /// above 0 and below 1; `nil` (the default) for never.
    public var refreshAhead: Double?
    /// Whether a load given up by ``hardTimeout`` goes on in the background and stores its
    /// result; `false` (the default) cancels it.
    public var completesInBackground: Bool
    /// Errors that always reach the caller, even with a stale entry at hand (for example
    /// `{ $0 is AuthenticationError }`); `nil` for none. `CancellationError` always does.
    public var failSafeExcludes: (@Sendable (any Error) -> Bool)?

    /// A policy; every parameter defaults to off.
    ///
    /// - Parameters:
    ///   - staleFor: see ``staleFor``.
    ///   - failSafeFor: see ``failSafeFor``.
    ///   - softTimeout: see ``softTimeout``.
    ///   - hardTimeout: see ``hardTimeout``.
    ///   - refreshAhead: see ``refreshAhead``.
    ///   - completesInBackground: see ``completesInBackground``.
    ///   - failSafeExcludes: see ``failSafeExcludes``.
    public init(
        staleFor: Duration = .zero,
        failSafeFor: Duration = .zero,
        softTimeout: Duration? = nil,
        hardTimeout: Duration? = nil,
        refreshAhead: Double? = nil,
        completesInBackground: Bool = false,
        failSafeExcludes: (@Sendable (any Error) -> Bool)? = nil
    ) {
        self.staleFor = staleFor
        self.failSafeFor = failSafeFor
        self.softTimeout = softTimeout
        self.hardTimeout = hardTimeout
        self.refreshAhead = refreshAhead
        self.completesInBackground = completesInBackground
        self.failSafeExcludes = failSafeExcludes
    }

    /// No stale serving, no timeouts, no refreshes: how a cache behaves without a policy.
    public static let none = Freshness()

    /// How long after expiry the tiers keep an entry stored under this policy, in milliseconds.
    var retentionMilliseconds: Int64 {
        max(self.staleFor.wholeMilliseconds, self.failSafeFor.wholeMilliseconds)
    }

    /// Whether the policy may serve an entry after its expiry.
    var servesStale: Bool { self.retentionMilliseconds > 0 }

    /// Whether a policy is valid: non-negative durations, positive timeouts, `refreshAhead` in (0, 1).
    func validate() throws {
        func fail(_ message: String) -> PanzaError { PanzaError(code: .invalidConfiguration, message: message) }
        if self.staleFor < .zero || self.failSafeFor < .zero {
            throw fail("freshness: staleFor and failSafeFor must not be negative")
        }
        if let soft = self.softTimeout, soft <= .zero { throw fail("freshness: softTimeout must be positive") }
        if let hard = self.hardTimeout, hard <= .zero { throw fail("freshness: hardTimeout must be positive") }
        if let ratio = self.refreshAhead, !(ratio > 0 && ratio < 1) {
            throw fail("freshness: refreshAhead must be above 0 and below 1 (got \(ratio))")
        }
    }

    /// Whether a failure may be answered with a stale entry.
    func allowsFailSafe(for error: any Error) -> Bool {
        if error is CancellationError { return false }
        return !(self.failSafeExcludes?(error) ?? false)
    }
}
