import Synchronization
import Testing

@testable import Panza

/// The waiter hand-off of the limiters under many thousands of interleaved acquisitions, releases
/// and cancellations: no waiter may stay suspended, and no permit may leak.
@Suite(.timeLimit(.minutes(1)))
struct LimiterStressTests {
    @Test("A grant that arrives before the waiter parks is kept, not overwritten")
    func grantBeforePark() async throws {
        let slot = WaiterSlot()
        #expect(slot.grant())
        // Without the fix the park replaced `.granted` with `.waiting`, and this never returned.
        try await withCheckedThrowingContinuation { continuation in slot.park(continuation) }
        #expect(!slot.cancel(), "a granted slot was cancelled")

        let cancelled = WaiterSlot()
        #expect(cancelled.cancel())
        await #expect(throws: CancellationError.self) {
            try await withCheckedThrowingContinuation { continuation in cancelled.park(continuation) }
        }
        #expect(!cancelled.grant())
    }

    @Test(
        "ConcurrencyLimiter: thousands of interleaved acquires, releases and cancellations finish with no permit held"
    )
    func concurrencyLimiterStress() async throws {
        let limiter = ConcurrencyLimiter(limit: 3)
        let counters = Counters()
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<64 {
                group.addTask {
                    var random = SplitMix64(seed: UInt64(worker))
                    for _ in 0..<400 {
                        let key: String? = random.below(4) == 0 ? "other" : nil
                        let yields = random.below(2) == 0
                        let task = Task {
                            try await limiter.withPermit(key: key) {
                                let now = counters.running.add(1, ordering: .relaxed).newValue
                                if now > 3 + 3 { counters.overLimit.store(true, ordering: .relaxed) }  // two keys
                                if yields { await Task.yield() }
                                counters.running.subtract(1, ordering: .relaxed)
                            }
                        }
                        if random.below(5) == 0 { task.cancel() }
                        _ = try? await task.value
                        counters.completed.add(1, ordering: .relaxed)
                    }
                }
            }
        }
        let completedCount = counters.completed.load(ordering: .relaxed)
        let wentOverLimit = counters.overLimit.load(ordering: .relaxed)
        #expect(completedCount == 64 * 400)
        #expect(!wentOverLimit)
        #expect(limiter.keysInUse == 0, "a permit leaked")
        // The limiter still grants at full capacity.
        let gate = Gate()
        let holders = (0..<3).map { _ in Task { try await limiter.withPermit { await gate.wait() } } }
        #expect(await eventually { limiter.keysInUse == 1 })
        gate.open()
        for holder in holders { try await holder.value }
    }

    @Test("RateLimiter: thousands of interleaved acquisitions and cancellations all end")
    func rateLimiterStress() async throws {
        let limiter = RateLimiter(ratePerSecond: 1_000_000, burst: 8)
        let counters = Counters()
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<32 {
                group.addTask {
                    var random = SplitMix64(seed: UInt64(1000 + worker))
                    for _ in 0..<100 {
                        let cost = 1 + random.below(8)
                        let task = Task { try await limiter.acquire(cost: cost) }
                        if random.below(4) == 0 { task.cancel() }
                        if (try? await task.value) != nil { counters.running.add(1, ordering: .relaxed) }
                        counters.completed.add(1, ordering: .relaxed)
                    }
                }
            }
        }
        let endedCount = counters.completed.load(ordering: .relaxed)
        let grantedCount = counters.running.load(ordering: .relaxed)
        #expect(endedCount == 32 * 100)
        #expect(grantedCount > 0)
        #expect(await limiter.waitingCount == 0)
    }
}

private final class Counters: Sendable {
    let running = Atomic<Int>(0)
    let completed = Atomic<Int>(0)
    let overLimit = Atomic<Bool>(false)
}
