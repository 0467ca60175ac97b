/// Thrown by a loader to say that the upstream refused the call for now (HTTP 429, quota errors).
///
/// ``TieredCache`` then pauses the rate limiters of that call (the id's and the global ones) for
/// `retryAfter` (or a backoff of 100 ms doubling per attempt when it is `nil`) and calls the loader
/// again, up to ``LoadLimits/maxRateLimitRetries`` times; after that this error reaches the callers.
public struct RateLimitedError: Error, Hashable, Sendable, CustomStringConvertible {
    /// How long the upstream asked to wait (for example from a `Retry-After` header).
    public var retryAfter: Duration?
    /// A short explanation for logs.
    public var message: String

    /// An error saying the API refused for rate, to be retried after `retryAfter` (or a backoff when `nil`).
    public init(retryAfter: Duration? = nil, message: String = "rate limited by the upstream") {
        self.retryAfter = retryAfter
        self.message = message
    }

    /// A one-line description, with the pause asked for.
    public var description: String {
        "RateLimitedError: \(self.message)" + (self.retryAfter.map { " (retry after \($0))" } ?? "")
    }
}
