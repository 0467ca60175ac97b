import MetricsTestKit
import Testing

@testable import Panza

/// swift-metrics after a known workload, through a test metrics factory.
struct MetricsTests {
    @Test(
        "Counters per tier and per memoized id, load latencies and gauges match a known workload; reports add only what changed"
    )
    func knownWorkload() async throws {
        let directory = try TemporaryDirectory()
        let metrics = TestMetrics()
        let cache = try await makeCache(in: directory) {
            $0.metrics = .init(label: "test", interval: .seconds(3_600), factory: metrics)
        }
        let forecast = cache.memoize(id: "forecast") { (city: String) async throws -> String in "sunny in \(city)" }
        for city in ["Oslo", "Oslo", "Oslo", "Bergen"] { _ = try await forecast(city) }
        let failing = cache.memoize(id: "failing") { (x: Int) async throws -> Int in throw CancellationError() }
        _ = try? await failing(1)
        cache.reportMetrics()

        func counter(_ label: String, _ dimensions: [(String, String)]) throws -> Int64 {
            try metrics.expectCounter(label, [("cache", "test")] + dimensions).totalValue
        }
        #expect(try counter("panza_memoized_calls_total", [("id", "forecast"), ("result", "hit")]) == 2)
        #expect(try counter("panza_memoized_calls_total", [("id", "forecast"), ("result", "miss")]) == 2)
        #expect(try counter("panza_memoized_load_failures_total", [("id", "failing")]) == 1)
        #expect(try counter("panza_lookups_total", [("tier", "memory"), ("result", "hit")]) == 2)
        #expect(try counter("panza_lookups_total", [("tier", "memory"), ("result", "miss")]) == 3)
        #expect(try counter("panza_lookups_total", [("tier", "sqlite"), ("result", "miss")]) == 3)
        #expect(try counter("panza_loads_total", [("result", "success")]) == 2)
        #expect(try counter("panza_loads_total", [("result", "failure")]) == 1)
        #expect(
            try metrics.expectTimer("panza_load_duration_seconds", [("cache", "test"), ("id", "forecast")]).values.count
                == 2)
        #expect(try metrics.expectGauge("panza_memory_entries", [("cache", "test")]).lastValue == 2)

        _ = try await forecast("Oslo")
        cache.reportMetrics()
        #expect(
            try counter("panza_memoized_calls_total", [("id", "forecast"), ("result", "hit")]) == 3,
            "a report adds the delta only")
        try await cache.close()
        #expect(try counter("panza_writes_total", []) == 2)
    }

    @Test("With metrics off, nothing is reported and memoized calls count nothing")
    func off() async throws {
        let directory = try TemporaryDirectory()
        let cache = try await makeCache(in: directory) { $0.metrics = nil }
        let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in x }
        _ = try await f(1)
        #expect(cache.metricsReporter == nil && f.counters == nil)
        try await cache.close()
    }
}
