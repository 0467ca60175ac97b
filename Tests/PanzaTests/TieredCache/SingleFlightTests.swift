import Foundation
import Testing

@testable import Panza

@Suite(.timeLimit(.minutes(1)))
struct SingleFlightTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    @Test("1,000 concurrent identical calls run the loader once and all get its result")
    func coalescing() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let values = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<1_000 {
                group.addTask {
                    try await cache.value(forKey: "k") {
                        calls.increment()
                        // Hold the load until every other caller has joined it.
                        _ = await eventually { cache.statistics.coalescedWaits == 999 }
                        return "result"
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(values.count == 1_000)
        #expect(values.allSatisfy { $0 == "result" })
        #expect(calls.value == 1)
        #expect(cache.statistics.coalescedWaits == 999)
        #expect(cache.statistics.tiers["sqlite"]?.misses == 1, "the lower tiers were asked more than once")
        try await cache.close()
    }

    @Test("A caller that looked in memory just before another caller's load stored its value does not load again")
    func flightEndedAfterMemoryLook() async throws {
        let cache = try await makeCache(in: self.directory, sqlite: false)
        let calls = CallCounter()
        let key = CacheKey(rawValue: "k")
        // The first call loads and stores.
        let first = try await cache.readThrough(key: key, id: "", timeToLive: nil) {
            "loaded #\(calls.increment())"
        }
        #expect(first == "loaded #1")
        // A second caller whose look in memory came before that store (memoryChecked), and whose
        // flight starts after the first one ended: it finds the value, as if it had joined.
        let coalescedBefore = cache.statistics.coalescedWaits
        let second = try await cache.readThrough(key: key, id: "", timeToLive: nil, memoryChecked: true) {
            "loaded #\(calls.increment())"
        }
        #expect(second == "loaded #1")
        #expect(calls.value == 1)
        #expect(cache.statistics.coalescedWaits == coalescedBefore + 1)
        try await cache.close()
    }

    @Test("A cancelled waiter leaves at once; the load goes on for the others and is stored")
    func cancellation() async throws {
        let cache = try await makeCache(in: self.directory)
        let gate = Gate()
        let calls = CallCounter()
        let loader: @Sendable () async throws -> String = {
            calls.increment()
            await gate.wait()
            return "loaded"
        }
        let first = Task { try await cache.value(forKey: "k", loader: loader) }
        #expect(await eventually { calls.value == 1 })
        let second = Task { try await cache.value(forKey: "k", loader: loader) }
        #expect(await eventually { cache.statistics.coalescedWaits == 1 })

        first.cancel()  // the caller that started the load leaves
        await #expect(throws: CancellationError.self) { try await first.value }
        gate.open()
        #expect(try await second.value == "loaded")
        #expect(calls.value == 1)
        #expect(try await cache.value(forKey: "k", as: String.self) == "loaded")
        try await cache.close()
    }

    @Test("A caller cancelled before it asks gets CancellationError and starts nothing")
    func cancelledBeforeAsking() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await cache.value(forKey: "k") {
                calls.increment()
                return "x"
            }
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        try await Task.sleep(for: .milliseconds(20))
        #expect(calls.value == 0)
        try await cache.close()
    }

    @Test("A loader error reaches every waiter and is not cached")
    func loaderErrors() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let results = await withTaskGroup(of: Result<String, any Error>.self) { group in
            for _ in 0..<10 {
                group.addTask {
                    do {
                        return .success(
                            try await cache.value(forKey: "k") { () async throws -> String in
                                calls.increment()
                                _ = await eventually { cache.statistics.coalescedWaits == 9 }
                                throw TestError(message: "upstream down")
                            })
                    } catch {
                        return .failure(error)
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(calls.value == 1)
        for result in results {
            #expect(throws: TestError(message: "upstream down")) { try result.get() }
        }
        #expect(cache.statistics.loadFailures == 1)
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        #expect(
            try await cache.value(forKey: "k") {
                calls.increment()
                return "ok"
            } == "ok")
        #expect(calls.value == 2)
        try await cache.close()
    }
}
