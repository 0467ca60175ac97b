import Testing

@testable import Panza

/// The circuit breaker as a pure state machine, on explicit times (no clock, no sleeping).
struct CircuitBreakerTests {
    static let configuration = CircuitBreaker.Configuration(
        failureThreshold: 3,
        openDuration: .seconds(1),
        maxOpenDuration: .seconds(4)
    )

    @Test("Opens after the threshold of consecutive failures; a success in between resets the count")
    func opens() {
        let breaker = Box(CircuitBreaker(configuration: Self.configuration))
        #expect(breaker.recordFailure(now: .zero) == nil)
        #expect(breaker.recordFailure(now: .zero) == nil)
        #expect(breaker.recordSuccess() == nil)
        #expect(breaker.recordFailure(now: .zero) == nil)
        #expect(breaker.recordFailure(now: .zero) == nil)
        #expect(breaker.allowsRead(now: .zero))
        #expect(breaker.recordFailure(now: .seconds(10)) == .opened(for: .seconds(1)))
        #expect(breaker.state == .open)
        #expect(!breaker.allowsRead(now: .seconds(10)))
        #expect(!breaker.allowsRead(now: .seconds(10) + .milliseconds(999)))
    }

    @Test("After the open duration one probe goes through; its success closes the breaker")
    func probeCloses() {
        let breaker = Box(CircuitBreaker(configuration: Self.configuration))
        for _ in 0..<3 { _ = breaker.recordFailure(now: .zero) }
        #expect(breaker.allowsRead(now: .seconds(1)), "the probe was not let through")
        #expect(breaker.state == .halfOpen)
        #expect(!breaker.allowsRead(now: .seconds(1)), "a second read went through during the probe")
        #expect(breaker.recordSuccess() == .closed)
        #expect(breaker.allowsRead(now: .seconds(1)))
    }

    @Test("A failed probe opens the breaker again for twice as long, up to the bound")
    func backoff() {
        let breaker = Box(CircuitBreaker(configuration: Self.configuration))
        for _ in 0..<3 { _ = breaker.recordFailure(now: .zero) }
        var now = Duration.zero
        for expected in [Duration.seconds(2), .seconds(4), .seconds(4)] {
            now += .seconds(10)
            #expect(breaker.allowsRead(now: now))
            #expect(breaker.recordFailure(now: now) == .opened(for: expected))
            #expect(!breaker.allowsRead(now: now + expected - .milliseconds(1)))
        }
        now += .seconds(10)
        #expect(breaker.allowsRead(now: now))
        #expect(breaker.recordSuccess() == .closed)
        // After closing, the next opening starts from the first duration again.
        for _ in 0..<2 { _ = breaker.recordFailure(now: now) }
        #expect(breaker.recordFailure(now: now) == .opened(for: .seconds(1)))
    }

    @Test("A failure of a read that started before the breaker opened changes nothing")
    func lateFailure() {
        let breaker = Box(CircuitBreaker(configuration: Self.configuration))
        for _ in 0..<3 { _ = breaker.recordFailure(now: .zero) }
        #expect(breaker.recordFailure(now: .milliseconds(500)) == nil)
        #expect(breaker.allowsRead(now: .seconds(1)), "a late failure extended the open period")
    }
}

/// Lets `#expect` call the breaker's mutating methods (the macro cannot mutate its operands).
private final class Box {
    var breaker: CircuitBreaker
    init(_ breaker: CircuitBreaker) { self.breaker = breaker }
    var state: CircuitBreaker.State { self.breaker.state }
    func allowsRead(now: Duration) -> Bool { self.breaker.allowsRead(now: now) }
    func recordSuccess() -> CircuitBreaker.Transition? { self.breaker.recordSuccess() }
    func recordFailure(now: Duration) -> CircuitBreaker.Transition? { self.breaker.recordFailure(now: now) }
}
