/// Limits on loader calls: how often and how many at once.
///
/// Limits apply to loader calls only: hits are never throttled, and identical concurrent calls,
/// coalesced into one load, take one token. Give limits per memoized id
/// (`memoize(id:limits:)`) and for the whole cache (``TieredCache/Configuration/loadLimits``);
/// a load honors both.
public struct LoadLimits: Sendable {
    /// Paces loader calls; `nil` for no rate limit.
    public var rateLimiter: RateLimiter?
    /// Tokens one loader call takes.
    public var cost: Int
    /// Bounds loader calls at once; `nil` for no bound.
    public var concurrencyLimiter: ConcurrencyLimiter?
    /// How often a loader that throws ``RateLimitedError`` is called again before the error reaches
    /// the callers.
    public var maxRateLimitRetries: Int

    /// Limits from a rate limiter and/or a concurrency limiter; `cost` tokens per call, `maxRateLimitRetries` retries after a `RateLimitedError`.
    public init(
        rateLimiter: RateLimiter? = nil,
        cost: Int = 1,
        concurrencyLimiter: ConcurrencyLimiter? = nil,
        maxRateLimitRetries: Int = 3
    ) {
        self.rateLimiter = rateLimiter
        self.cost = cost
        self.concurrencyLimiter = concurrencyLimiter
        self.maxRateLimitRetries = maxRateLimitRetries
    }

    /// Convenience: a rate limit of `ratePerSecond` with `burst`.
    public static func rate(_ ratePerSecond: Double, burst: Int) -> LoadLimits {
        LoadLimits(rateLimiter: RateLimiter(ratePerSecond: ratePerSecond, burst: burst))
    }

    /// Convenience: at most `limit` loader calls at once.
    public static func concurrency(_ limit: Int) -> LoadLimits {
        LoadLimits(concurrencyLimiter: ConcurrencyLimiter(limit: limit))
    }
}

extension LoadLimits {
    /// Runs `body` within these limits: a rate token (of ``cost``) first, then a concurrency permit
    /// held while it runs. The S3 tier's reads and writes go through it.
    package static func run<Result: Sendable>(
        within limits: LoadLimits?,
        _ body: @Sendable () async throws -> Result
    ) async throws -> Result {
        guard let limits else { return try await body() }
        if let rateLimiter = limits.rateLimiter { try await rateLimiter.acquire(cost: limits.cost) }
        if let concurrencyLimiter = limits.concurrencyLimiter {
            return try await concurrencyLimiter.withPermit { try await body() }
        }
        return try await body()
    }
}
