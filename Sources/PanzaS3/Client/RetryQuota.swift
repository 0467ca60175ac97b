/// The client's retry budget, as the AWS SDKs' standard retry mode keeps it: retries spend tokens,
/// successes earn them back, so that when S3 throttles or fails for everyone the client stops
/// multiplying its load (a retry storm) and fails fast instead.
///
/// A retry costs 5 tokens, 10 after a timeout or a connection failure; a request that succeeds at
/// once earns 1 token, one that succeeds after retries gets back what its last retry cost. When
/// the tokens run out, failed requests are not retried until successes refill the budget.
struct RetryQuota: Sendable {
    static let retryCost = 5
    static let transportRetryCost = 10

    let capacity: Int
    private(set) var available: Int

    init(capacity: Int) {
        self.capacity = max(0, capacity)
        self.available = self.capacity
    }

    /// Takes the cost of one retry after `error`; `nil` when the budget cannot pay for it.
    mutating func acquire(after error: S3Error) -> Int? {
        let cost = error.code == .transport ? Self.transportRetryCost : Self.retryCost
        guard self.available >= cost else { return nil }
        self.available -= cost
        return cost
    }

    /// A request succeeded; `lastRetryCost` is what its last retry cost, `nil` if it needed none.
    mutating func recordSuccess(lastRetryCost: Int?) {
        self.available = min(self.capacity, self.available + (lastRetryCost ?? 1))
    }
}
