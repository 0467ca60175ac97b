public import CoreMetrics
import Synchronization

/// Reports a cache's counters through swift-metrics.
///
/// The hot paths only bump the atomic counters behind ``CacheStatistics``; this reporter turns
/// them into swift-metrics counters and gauges every ``TieredCache/Configuration/MetricsReporting/interval``
/// (and when the cache closes), so that a memory hit costs no metrics call. Load latencies are
/// recorded as they happen. Every metric carries the dimension `cache` (the configured label); the
/// names are listed in `docs/metrics.md`.
final class MetricsReporter: Sendable {
    private struct State {
        var reported: [String: Int] = [:]
        var counters: [String: Counter] = [:]
        var gauges: [String: Gauge] = [:]
        var timers: [String: CoreMetrics.Timer] = [:]
    }

    let label: String
    private let factory: any MetricsFactory
    private let state = Mutex(State())

    init(label: String, factory: (any MetricsFactory)?) {
        self.label = label
        self.factory = factory ?? MetricsSystem.factory
    }

    /// Pushes what changed since the last report.
    func report(_ statistics: CacheStatistics, ids: [(id: String, counters: IdCounters)]) {
        var counts: [(name: String, dimensions: [(String, String)], value: Int)] = [
            ("panza_lookups_total", [("tier", "memory"), ("result", "hit")], statistics.memory.hits),
            ("panza_lookups_total", [("tier", "memory"), ("result", "miss")], statistics.memory.misses),
            ("panza_loads_total", [("result", "success")], statistics.loads - statistics.loadFailures),
            ("panza_loads_total", [("result", "failure")], statistics.loadFailures),
            ("panza_coalesced_waits_total", [], statistics.coalescedWaits),
            ("panza_corrupt_blobs_total", [], statistics.corruptBlobs),
            ("panza_expired_total", [], statistics.expired),
            ("panza_writes_total", [], statistics.writes),
            ("panza_write_failures_total", [], statistics.writeFailures),
            ("panza_dead_letters_total", [], statistics.droppedWrites),
            ("panza_unstorable_results_total", [], statistics.unstorableResults),
            ("panza_undecodable_values_total", [], statistics.undecodableValues),
            ("panza_untrusted_blobs_total", [], statistics.untrustedBlobs),
            ("panza_invalidations_applied_total", [], statistics.invalidationsApplied),
            ("panza_invalidation_poll_failures_total", [], statistics.invalidationPollFailures),
            ("panza_bytes_written_total", [], statistics.bytesWritten),
            ("panza_bytes_read_total", [], statistics.bytesRead),
            ("panza_memory_evictions_total", [], statistics.memoryEvictions),
            ("panza_throttled_waits_total", [], statistics.throttledWaits),
            ("panza_stale_hits_total", [], statistics.staleHits),
            ("panza_refreshes_total", [("result", "success")], statistics.refreshes),
            ("panza_refreshes_total", [("result", "failure")], statistics.refreshFailures),
            ("panza_fail_safe_activations_total", [], statistics.failSafeActivations),
            ("panza_load_timeouts_total", [("kind", "soft")], statistics.softTimeouts),
            ("panza_load_timeouts_total", [("kind", "hard")], statistics.hardTimeouts),
            ("panza_discarded_loads_total", [], statistics.discardedLoads),
            ("panza_backed_off_loads_total", [], statistics.backedOffLoads),
        ]
        for (tier, tierCounts) in statistics.tiers {
            for (result, value) in [
                ("hit", tierCounts.hits), ("miss", tierCounts.misses), ("error", tierCounts.errors),
                ("timeout", tierCounts.timeouts), ("skipped", tierCounts.skipped),
            ] {
                counts.append(("panza_lookups_total", [("tier", tier), ("result", result)], value))
            }
            counts.append(("panza_slow_reads_total", [("tier", tier)], tierCounts.slow))
        }
        for (id, counters) in ids {
            let calls = counters.calls.load(0)
            let loads = counters.loads.load(ordering: .relaxed)
            counts.append(("panza_memoized_calls_total", [("id", id), ("result", "hit")], max(0, calls - loads)))
            counts.append(("panza_memoized_calls_total", [("id", id), ("result", "miss")], loads))
            counts.append(
                ("panza_memoized_load_failures_total", [("id", id)], counters.loadFailures.load(ordering: .relaxed)))
        }
        var gauges: [(name: String, dimensions: [(String, String)], value: Int)] = [
            ("panza_memory_entries", [], statistics.memoryEntries),
            ("panza_memory_bytes", [], statistics.memoryBytes),
            ("panza_write_queue_depth", [], statistics.pendingWrites),
            ("panza_write_queue_bytes", [], statistics.pendingBytes),
        ]
        for (tier, tierCounts) in statistics.tiers {
            if let breaker = tierCounts.breaker {
                gauges.append(("panza_breaker_open", [("tier", tier)], breaker == .closed ? 0 : 1))
            }
        }
        self.state.withLock { state in
            for (name, dimensions, value) in counts {
                let key = Self.key(name, dimensions)
                let delta = value - state.reported[key, default: 0]
                guard delta > 0 else { continue }
                state.reported[key] = value
                Self.cached(key, in: &state.counters) {
                    Counter(label: name, dimensions: self.dimensions(dimensions), factory: self.factory)
                }.increment(by: delta)
            }
            for (name, dimensions, value) in gauges {
                let key = Self.key(name, dimensions)
                Self.cached(key, in: &state.gauges) {
                    Gauge(label: name, dimensions: self.dimensions(dimensions), factory: self.factory)
                }.record(value)
            }
        }
    }

    /// Records one load of memoized id `id` (`""` for a plain key) that took `duration`.
    func recordLoad(id: String, duration: Duration) {
        let dimensions = id.isEmpty ? [] : [("id", id)]
        let key = Self.key("panza_load_duration_seconds", dimensions)
        let timer = self.state.withLock { state in
            Self.cached(key, in: &state.timers) {
                CoreMetrics.Timer(
                    label: "panza_load_duration_seconds", dimensions: self.dimensions(dimensions), factory: self.factory
                )
            }
        }
        timer.recordNanoseconds(duration.wholeNanoseconds)
    }

    /// The metric under `key`, made by `make` the first time.
    private static func cached<Metric>(_ key: String, in metrics: inout [String: Metric], make: () -> Metric) -> Metric
    {
        if let metric = metrics[key] { return metric }
        let made = make()
        metrics[key] = made
        return made
    }

    private func dimensions(_ extra: [(String, String)]) -> [(String, String)] {
        [("cache", self.label)] + extra
    }

    private static func key(_ name: String, _ dimensions: [(String, String)]) -> String {
        ([name] + dimensions.map { "\($0.0)=\($0.1)" }).joined(separator: "|")
    }
}

/// The counters of every memoized id of a cache.
final class IdCounterRegistry: Sendable {
    private let counters = Mutex<[String: IdCounters]>([:])

    /// The counters of `id`, made on first use.
    func counters(forID id: String) -> IdCounters {
        self.counters.withLock { counters in
            if let existing = counters[id] { return existing }
            let made = IdCounters()
            counters[id] = made
            return made
        }
    }

    var all: [(id: String, counters: IdCounters)] {
        self.counters.withLock { counters in counters.map { (id: $0.key, counters: $0.value) } }
    }
}

/// The counters of one memoized id, bumped without a lock on its calls.
@usableFromInline
final class IdCounters: Sendable {
    /// Calls of the memoized function (hits and misses), striped: every call adds to it.
    let calls = StripedCounters(count: 1)
    /// Calls that ran the function.
    let loads = Atomic<Int>(0)
    /// Calls of the function that threw.
    let loadFailures = Atomic<Int>(0)

    /// Counts one call of the memoized function.
    @usableFromInline
    func recordCall() { self.calls.add(0) }
}
