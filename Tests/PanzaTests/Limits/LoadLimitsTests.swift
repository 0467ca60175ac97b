import Testing

@testable import Panza

@Suite(.timeLimit(.minutes(1)))
struct LoadLimitsTests {
    let directory: TemporaryDirectory
    let clock = ManualClock()

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    @Test("Loader calls are paced by the id's limiter; hits are never throttled")
    func pacingAndHits() async throws {
        let cache = try await makeCache(in: self.directory)
        let limiter = RateLimiter(ratePerSecond: 1, burst: 1, clock: self.clock)
        let calls = CallCounter()
        let square = cache.memoize(id: "square", limits: LoadLimits(rateLimiter: limiter)) {
            (x: Int) async throws -> Int in
            calls.increment()
            return x * x
        }
        #expect(try await square(2) == 4)
        for _ in 0..<100 { #expect(try await square(2) == 4) }  // hits: no token, no wait
        #expect(await limiter.statistics.acquired == 1)

        let second = Task { try await square(3) }
        #expect(await eventually { await limiter.waitingCount == 1 })
        #expect(calls.value == 1)
        self.clock.advance(by: .seconds(1))
        #expect(try await second.value == 9)
        #expect(calls.value == 2)
        #expect(cache.statistics.throttledWaits == 1)
        #expect(cache.statistics.throttledSeconds == 1)
        try await cache.close()
    }

    @Test("Coalesced identical calls take one token")
    func coalescedCallsTakeOneToken() async throws {
        let cache = try await makeCache(in: self.directory)
        let limiter = RateLimiter(ratePerSecond: 1, burst: 5, clock: self.clock)
        let gate = Gate()
        let f = cache.memoize(id: "f", limits: LoadLimits(rateLimiter: limiter)) { (x: Int) async throws -> Int in
            await gate.wait()
            return x
        }
        let tasks = (0..<50).map { _ in Task { try await f(7) } }
        #expect(await eventually { cache.statistics.coalescedWaits == 49 })
        gate.open()
        for task in tasks { #expect(try await task.value == 7) }
        #expect(await limiter.statistics.acquired == 1)
    }

    @Test("RateLimitedError pauses the limiter for retryAfter and the call is retried")
    func retryAfter() async throws {
        let cache = try await makeCache(in: self.directory)
        let limiter = RateLimiter(ratePerSecond: 100, burst: 10, clock: self.clock)
        let calls = CallCounter()
        let f = cache.memoize(id: "f", limits: LoadLimits(rateLimiter: limiter)) { (x: Int) async throws -> Int in
            if calls.increment() == 1 { throw RateLimitedError(retryAfter: .seconds(2)) }
            return x
        }
        let call = Task { try await f(1) }
        #expect(
            await eventually {
                let waiting = await limiter.waitingCount
                return calls.value == 1 && waiting == 1
            })
        self.clock.advance(by: .milliseconds(1999))
        try await Task.sleep(for: .milliseconds(20))
        #expect(calls.value == 1, "retried before retryAfter")
        self.clock.advance(by: .milliseconds(1))
        #expect(try await call.value == 1)
        #expect(calls.value == 2)
        #expect(cache.statistics.rateLimitRetries == 1)
        try await cache.close()
    }

    @Test("After maxRateLimitRetries the RateLimitedError reaches the caller and nothing is stored")
    func retriesExhausted() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let f = cache.memoize(id: "f", limits: LoadLimits(maxRateLimitRetries: 2)) { (x: Int) async throws -> Int in
            calls.increment()
            throw RateLimitedError(retryAfter: .milliseconds(1))
        }
        await #expect(throws: RateLimitedError.self) { try await f(1) }
        #expect(calls.value == 3)
        #expect(try await f.peek(1) == nil)
        try await cache.close()
    }

    @Test("Per-key concurrency limits derived from the arguments")
    func perKeyConcurrency() async throws {
        let cache = try await makeCache(in: self.directory)
        let pool = ConcurrencyLimiter(limit: 1)
        let gate = Gate()
        let running = CallCounter()
        let fetch = cache.memoize(
            id: "fetch",
            limits: LoadLimits(concurrencyLimiter: pool),
            concurrencyKey: { (tenant: String, _: Int) in tenant }
        ) { (tenant: String, page: Int) async throws -> String in
            running.increment()
            await gate.wait()
            return "\(tenant)-\(page)"
        }
        let a1 = Task { try await fetch("a", 1) }
        let a2 = Task { try await fetch("a", 2) }
        let b1 = Task { try await fetch("b", 1) }
        #expect(await eventually { running.value == 2 })
        try await Task.sleep(for: .milliseconds(20))
        #expect(running.value == 2, "two loads of tenant a ran at once")
        gate.open()
        #expect(try await [a1.value, a2.value, b1.value] == ["a-1", "a-2", "b-1"])
        #expect(cache.statistics.throttledWaits == 1)
        try await cache.close()
    }

    @Test("Global limits apply to every loader of the cache")
    func globalLimits() async throws {
        let limiter = RateLimiter(ratePerSecond: 1, burst: 2, clock: self.clock)
        let cache = try await makeCache(in: self.directory) { $0.loadLimits = LoadLimits(rateLimiter: limiter) }
        _ = try await cache.value(forKey: "a") { "a" }
        let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in x }
        _ = try await f(1)
        #expect(await limiter.statistics.acquired == 2)
        #expect(!(await limiter.tryAcquire()))
        try await cache.close()
    }
}
