import Testing

@testable import Panza

@Suite(.timeLimit(.minutes(1)))
struct ConcurrencyLimiterTests {
    @Test("At most limit operations run at once; the rest wait their turn")
    func limit() async throws {
        let pool = ConcurrencyLimiter(limit: 2)
        let gate = Gate()
        let running = CallCounter()
        let finished = CallCounter()
        let tasks = (0..<3).map { _ in
            Task {
                try await pool.withPermit {
                    running.increment()
                    await gate.wait()
                    finished.increment()
                }
            }
        }
        #expect(await eventually { running.value == 2 })
        try await Task.sleep(for: .milliseconds(20))
        #expect(running.value == 2, "a third operation started")
        #expect(pool.throttledCount == 1)
        gate.open()
        for task in tasks { try await task.value }
        #expect(finished.value == 3)
        #expect(pool.keysInUse == 0)
    }

    @Test("Keys are limited separately, and idle keys take no memory")
    func perKey() async throws {
        let pool = ConcurrencyLimiter(limit: 1)
        let gate = Gate()
        let running = CallCounter()
        let a = Task {
            try await pool.withPermit(key: "a") {
                running.increment()
                await gate.wait()
            }
        }
        let b = Task {
            try await pool.withPermit(key: "b") {
                running.increment()
                await gate.wait()
            }
        }
        #expect(await eventually { running.value == 2 }, "different keys blocked each other")
        #expect(pool.keysInUse == 2)
        gate.open()
        try await a.value
        try await b.value
        for index in 0..<1_000 {
            try await pool.withPermit(key: "tenant-\(index)") {}
        }
        #expect(pool.keysInUse == 0)
    }

    @Test("A cancelled waiter leaves at once and its turn passes on")
    func cancellation() async throws {
        let pool = ConcurrencyLimiter(limit: 1)
        let gate = Gate()
        let holder = Task { try await pool.withPermit { await gate.wait() } }
        #expect(await eventually { pool.keysInUse == 1 })
        let cancelled = Task { try await pool.withPermit { Issue.record("a cancelled waiter ran") } }
        #expect(await eventually { pool.throttledCount == 1 })
        let next = Task { try await pool.withPermit { "ran" } }
        #expect(await eventually { pool.throttledCount == 2 })
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        gate.open()
        try await holder.value
        #expect(try await next.value == "ran")
        #expect(pool.keysInUse == 0)
    }

    @Test("A permit is returned when the operation throws")
    func throwingOperation() async throws {
        let pool = ConcurrencyLimiter(limit: 1)
        await #expect(throws: TestError.self) {
            try await pool.withPermit { throw TestError(message: "boom") }
        }
        #expect(try await pool.withPermit { 1 } == 1)
        #expect(pool.keysInUse == 0)
    }
}
