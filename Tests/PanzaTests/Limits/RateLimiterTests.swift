import Synchronization
import Testing

@testable import Panza

/// Records the order in which tasks got through.
final class OrderLog: Sendable {
    private let entries = Mutex<[String]>([])
    func append(_ entry: String) { self.entries.withLock { $0.append(entry) } }
    var values: [String] { self.entries.withLock { $0 } }
}

@Suite(.timeLimit(.minutes(1)))
struct RateLimiterTests {
    let clock = ManualClock()

    func waitForWaiters(_ limiter: RateLimiter, _ count: Int) async {
        let reached = await eventually { await limiter.waitingCount == count }
        #expect(reached, "expected \(count) waiters")
    }

    /// Lets the limiter's pump run after the clock moved.
    func settle() async {
        for _ in 0..<20 { await Task.yield() }
        try? await Task.sleep(for: .milliseconds(5))
    }

    @Test("The bucket starts full, then refills at the rate")
    func burstThenRate() async throws {
        let limiter = RateLimiter(ratePerSecond: 10, burst: 5, clock: self.clock)
        for _ in 0..<5 { #expect(await limiter.tryAcquire()) }
        #expect(!(await limiter.tryAcquire()))
        self.clock.advance(by: .milliseconds(99))
        #expect(!(await limiter.tryAcquire()))
        self.clock.advance(by: .milliseconds(1))
        #expect(await limiter.tryAcquire())
        #expect(!(await limiter.tryAcquire()))
        // Idle time never banks more than one burst.
        self.clock.advance(by: .seconds(60))
        for _ in 0..<5 { #expect(await limiter.tryAcquire()) }
        #expect(!(await limiter.tryAcquire()))
    }

    @Test("acquire waits exactly until its tokens have accrued")
    func acquireWaits() async throws {
        let limiter = RateLimiter(ratePerSecond: 10, burst: 1, clock: self.clock)
        try await limiter.acquire()
        let done = CallCounter()
        let task = Task {
            try await limiter.acquire()
            done.increment()
        }
        await self.waitForWaiters(limiter, 1)
        self.clock.advance(by: .milliseconds(99))
        await self.settle()
        #expect(done.value == 0)
        self.clock.advance(by: .milliseconds(1))
        try await task.value
        #expect(done.value == 1)
        let statistics = await limiter.statistics
        #expect(statistics.acquired == 2)
        #expect(statistics.throttled == 1)
        #expect(statistics.totalWait == .milliseconds(100))
    }

    @Test("Waiters are served in arrival order; a large cost is not starved by small ones")
    func fifoWithMixedCosts() async throws {
        let limiter = RateLimiter(ratePerSecond: 10, burst: 10, clock: self.clock)
        try await limiter.acquire(cost: 10)
        let order = OrderLog()
        let large = Task {
            try await limiter.acquire(cost: 8)
            order.append("large")
        }
        await self.waitForWaiters(limiter, 1)
        let small = Task {
            try await limiter.acquire(cost: 1)
            order.append("small")
        }
        await self.waitForWaiters(limiter, 2)
        #expect(!(await limiter.tryAcquire()), "tryAcquire jumped the queue")

        self.clock.advance(by: .milliseconds(100))  // 1 token: enough for small, but large is first
        await self.settle()
        #expect(order.values.isEmpty)
        self.clock.advance(by: .milliseconds(700))  // 8 tokens
        try await large.value
        #expect(order.values == ["large"])
        self.clock.advance(by: .milliseconds(100))
        try await small.value
        #expect(order.values == ["large", "small"])
    }

    @Test("A cancelled waiter leaves at once, takes nothing, and the next one is served on time")
    func cancellation() async throws {
        let limiter = RateLimiter(ratePerSecond: 10, burst: 10, clock: self.clock)
        try await limiter.acquire(cost: 10)
        let blocked = Task { try await limiter.acquire(cost: 10) }
        await self.waitForWaiters(limiter, 1)
        let next = Task { try await limiter.acquire(cost: 1) }
        await self.waitForWaiters(limiter, 2)

        blocked.cancel()
        await #expect(throws: CancellationError.self) { try await blocked.value }  // without the clock moving
        self.clock.advance(by: .milliseconds(100))
        try await next.value  // served after 100 ms, not after the cancelled one's second
        #expect(await limiter.statistics.acquired == 2)
        #expect(await limiter.waitingCount == 0)
    }

    @Test("A task cancelled before it asks is refused at once")
    func cancelledBeforeAsking() async {
        let limiter = RateLimiter(ratePerSecond: 10, burst: 1, clock: self.clock)
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await limiter.acquire()
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(await limiter.tryAcquire(), "the cancelled acquire took the token")
    }

    @Test("pause(for:) grants nothing until it is over")
    func pause() async throws {
        let limiter = RateLimiter(ratePerSecond: 10, burst: 5, clock: self.clock)
        await limiter.pause(for: .seconds(2))
        #expect(!(await limiter.tryAcquire()))
        let waiter = Task { try await limiter.acquire() }
        await self.waitForWaiters(limiter, 1)
        self.clock.advance(by: .milliseconds(1999))
        await self.settle()
        #expect(await limiter.waitingCount == 1)
        self.clock.advance(by: .milliseconds(1))
        try await waiter.value
    }

    @Test("Costs outside 1...burst are refused with a typed error")
    func invalidCost() async {
        let limiter = RateLimiter(ratePerSecond: 10, burst: 5, clock: self.clock)
        for cost in [0, 6] {
            let error = await #expect(throws: PanzaError.self) { try await limiter.acquire(cost: cost) }
            #expect(error?.code == .invalidConfiguration)
            #expect(!(await limiter.tryAcquire(cost: cost)))
        }
    }
}
