import Benchmark
import Foundation
import Panza

// Each Panza benchmark stands beside the baseline that bounds it, measured in the same run:
//
//   Panza                                          baseline (the limit)
//   memory.hit.memoized-call                       baseline.mutex-dictionary.lookup
//   memory.hit.memoized-call.tasks-8               memory.hit.memoized-call.tasks-1 (same executor)
//   sqlite.hit.memoized-call.tasks-N.readers-M     baseline.sqlite-c.point-lookup (C API, prepared)
//   set.write-behind.drain-to-sqlite               baseline.sqlite-c.inserts-one-transaction
//   envelope.encode/decode.json-1kib               baseline.lz4.compress/decompress.json-1kib
//   s3.get.signed.1kib.concurrency-32              baseline.http.get.unsigned… (AsyncHTTPClient), boto3
//   miss.latency.<S3 state>.loader-20ms            baseline.loader.20ms (the loader alone)
//
// Names are safe identifiers (lowercase, dots and dashes): they name the threshold files.
//
// Throughput is per operation: every measured iteration runs `scalingFactor` operations.

/// These machines are shared and noisy: 30% tolerance at the median and at p90 (stored thresholds
/// are p90 values).
var tolerance: BenchmarkThresholds { BenchmarkThresholds(relative: [.p50: 30.0, .p90: 30.0]) }

/// Latency-only benchmarks keep the tolerance on the one metric they measure.
var latencyThresholds: [BenchmarkMetric: BenchmarkThresholds] { [.wallClock: tolerance] }

let benchmarks: @Sendable () -> Void = {
    // PANZA_BENCHMARK_SQLITE_MEMSTATUS=off runs every benchmark, Panza's and the C baselines alike,
    // with SQLite's process-wide memory statistics off (`SQLiteTier.disableSQLiteMemoryStatistics()`),
    // as an application that calls it does.
    if ProcessInfo.processInfo.environment["PANZA_BENCHMARK_SQLITE_MEMSTATUS"] == "off" {
        precondition(SQLiteTier.disableSQLiteMemoryStatistics(), "SQLite was initialized before the benchmarks")
    }
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock],
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 100_000,
        thresholds: [.wallClock: tolerance, .throughput: tolerance]
    )
    let keyCount = 10_000

    // MARK: Memory

    for metrics in [true, false] {
        Benchmark("memory.hit.memoized-call\(metrics ? "" : ".metrics-off")") { benchmark in
            var configuration = TieredCache.Configuration()
            configuration.sqlite = nil
            configuration.modes = CacheModes()
            if !metrics { configuration.metrics = nil }
            let cache = try await TieredCache(configuration: configuration)
            let value = Workload.json(seed: 1)
            let forecast = cache.memoize(id: "forecast") { (city: String, days: Int) async throws -> String in value }
            _ = try await forecast("Oslo", 3)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(try await forecast("Oslo", 3))
            }
            benchmark.stopMeasurement()
            try await cache.close()
        }
    }

    // The same hits from 8 tasks (one key each) on every core, against 1 task run the same way
    // (both on CoreTaskExecutor, whose executor preference costs every call a little): the goal is
    // 1.6×. A million calls per iteration, so that waking the executor's threads is negligible.
    for tasks in [1, 8] {
        Benchmark(
            "memory.hit.memoized-call.tasks-\(tasks)",
            configuration: .init(
                metrics: [.throughput, .wallClock], scalingFactor: .mega, maxDuration: .seconds(5), maxIterations: 20,
                thresholds: [.wallClock: tolerance, .throughput: tolerance])
        ) { benchmark in
            var configuration = TieredCache.Configuration()
            configuration.sqlite = nil
            configuration.modes = CacheModes()
            let cache = try await TieredCache(configuration: configuration)
            // Each call has its own result, as distinct calls do: one string shared by every entry
            // would make every hit retain the same object, from both cores.
            let forecast = cache.memoize(id: "forecast") { (city: String, days: Int) async throws -> String in
                Workload.json(seed: days + 1)
            }
            for task in 0..<tasks { _ = try await forecast("Oslo", task) }
            let iterations = benchmark.scaledIterations.count
            benchmark.startMeasurement()
            try await runConcurrently(iterations: iterations, tasks: tasks, onEveryCore: true) { task, _ in
                blackHole(try await forecast("Oslo", task))
            }
            benchmark.stopMeasurement()
            try await cache.close()
        }
    }

    Benchmark("baseline.mutex-dictionary.lookup") { benchmark in
        let dictionary = Baseline.LockedDictionary()
        dictionary.storage.withLock { $0["forecast/oslo-3"] = Workload.json(seed: 1) }
        for _ in benchmark.scaledIterations {
            blackHole(dictionary.lookup("forecast/oslo-3"))
        }
    }

    Benchmark("memoize.key-hashing.string-int") { benchmark in
        for index in benchmark.scaledIterations {
            blackHole(try MemoizeKey.make(id: "forecast", arguments: "Oslo", index))
        }
    }

    // MARK: SQLite reads

    // The tasks share the cooperative pool's one free thread (see `runConcurrently`), except in
    // the every-core run, with an inline reader per core: a hit never suspends.
    for (tasks, readers, inline) in [(1, 1, 0), (8, 1, 0), (8, 2, 0), (8, 1, 2)] {
        let name = "tasks-\(tasks)" + (inline > 0 ? ".every-core.inline-\(inline)" : ".readers-\(readers)")
        Benchmark("sqlite.hit.memoized-call.\(name)") { benchmark in
            let (cache, lookup) = try await Fixtures.shared.sqliteHitCache(
                readers: readers, inlineReaders: inline, keyCount: keyCount)
            let iterations = benchmark.scaledIterations.count
            let loadsBefore = cache.statistics.loads
            benchmark.startMeasurement()
            try await runConcurrently(iterations: iterations, tasks: tasks, onEveryCore: inline > 0) { task, index in
                blackHole(try await lookup((task &* 7919 &+ (index &+ 1) &* 4099) % keyCount))
            }
            benchmark.stopMeasurement()
            precondition(cache.statistics.loads == loadsBefore, "a lookup missed SQLite")
        }
    }

    Benchmark("baseline.sqlite-c.point-lookup") { benchmark in
        let (sqlite, keys) = Fixtures.shared.rawSQLite(keyCount: keyCount)
        var seed = 0
        for _ in benchmark.scaledIterations {
            seed = (seed &+ 4099) % keyCount
            blackHole(sqlite.lookup(keys[seed]))
        }
    }

    // MARK: Writes

    // 1,000 sets, then a flush: until every entry is in SQLite. The harness leaves the cooperative
    // pool one thread (see `CoreTaskExecutor`), which the caller and the cache's drainer then take
    // in turn: the sets and the drain do not overlap, as they would in an application with a thread
    // per core. The `caller-own-thread` run gives the caller a thread of its own, as an
    // application's pool does, and leaves the pool's free thread to the drainer.
    for callerOwnThread in [false, true] {
        Benchmark(
            "set.write-behind.drain-to-sqlite" + (callerOwnThread ? ".caller-own-thread" : ""),
            configuration: .init(
                metrics: [.throughput, .wallClock], scalingFactor: .kilo, maxDuration: .seconds(3),
                maxIterations: 200)
        ) { benchmark in
            var configuration = TieredCache.Configuration()
            configuration.memory = .init(maxEntries: 100_000, maxBytes: 256 << 20)
            configuration.sqlite = .init(path: Workload.temporaryPath("set-\(UUID().uuidString).sqlite"))
            configuration.modes = CacheModes()
            let cache = try await TieredCache(configuration: configuration)
            let values = (0..<benchmark.scaledIterations.count).map { Workload.json(seed: $0) }
            @Sendable func setAndFlush() async throws {
                for (index, value) in values.enumerated() {
                    try await cache.set(value, forKey: "k\(index)")
                }
                try await cache.flush()
            }
            benchmark.startMeasurement()
            if callerOwnThread {
                try await withTaskExecutorPreference(CoreTaskExecutor.shared) { try await setAndFlush() }
            } else {
                try await setAndFlush()
            }
            benchmark.stopMeasurement()
            try await cache.close()
        }
    }

    Benchmark(
        "set.latency.write-behind",
        configuration: .init(
            metrics: [.wallClock], scalingFactor: .one, maxDuration: .seconds(3), maxIterations: 100_000,
            thresholds: latencyThresholds)
    ) { benchmark in
        // One set per measured iteration, so that wallClock percentiles are per-call latencies.
        let state = SetLatencyState.shared
        let cache = try await state.cache()
        let index = state.next()
        let value = state.value
        benchmark.startMeasurement()
        try await cache.set(value, forKey: "latency-\(index)")
        benchmark.stopMeasurement()
    }

    Benchmark(
        "baseline.sqlite-c.inserts-one-transaction",
        configuration: .init(
            metrics: [.throughput, .wallClock], scalingFactor: .kilo, maxDuration: .seconds(3), maxIterations: 200)
    ) { benchmark in
        let sqlite = Baseline.RawSQLite(path: Workload.temporaryPath("raw-insert.sqlite"))
        let keys = (0..<benchmark.scaledIterations.count).map { "k\($0)" }
        let value = Array(Workload.json(seed: 1).utf8)
        benchmark.startMeasurement()
        sqlite.insertBatch(keys: keys[...], value: value)
    }

    // MARK: Envelopes

    let payload = Array(Workload.json(seed: 42).utf8)
    let envelope = BlobEnvelope(contentType: .text, payload: payload, createdAtMilliseconds: 1_764_000_000_000)
    let encoded = envelope.encoded()
    let compressed = Baseline.lz4Compress(payload)

    Benchmark("envelope.encode.json-1kib") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(envelope.encoded()) }
    }
    Benchmark("baseline.lz4.compress.json-1kib") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Baseline.lz4Compress(payload)) }
    }
    Benchmark("envelope.decode.json-1kib") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(try BlobEnvelope.decode(encoded)) }
    }
    Benchmark("baseline.lz4.decompress.json-1kib") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Baseline.lz4Decompress(compressed, originalSize: payload.count))
        }
    }

    // MARK: Single-flight

    Benchmark(
        "single-flight.misses-100.one-load",
        configuration: .init(
            metrics: [.throughput, .wallClock], scalingFactor: .one, maxDuration: .seconds(3), maxIterations: 10_000)
    ) { benchmark in
        var configuration = TieredCache.Configuration()
        configuration.sqlite = nil
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        let key = "fan-out-\(UUID().uuidString)"
        benchmark.startMeasurement()
        try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<100 {
                group.addTask { try await cache.value(forKey: key) { "loaded" } }
            }
            try await group.waitForAll()
        }
        benchmark.stopMeasurement()
        try await cache.close()
    }

    limiterBenchmarks()
    s3Benchmarks()
    missLatencyBenchmarks()
    largeValueBenchmarks()
    sharedBucketBenchmarks()
    openBenchmarks()
    peerBenchmarks()
    coldReadBenchmarks()
    freshnessBenchmarks()
}

/// State built once and shared by every iteration of a benchmark, so that setup stays out of
/// both the measurement and the steady state being measured.
final class Fixtures: @unchecked Sendable {
    static let shared = Fixtures()
    private let lock = NSLock()
    private var sqliteHit: [[Int]: (TieredCache, Memoized<Int, String>)] = [:]
    private var raw: (Baseline.RawSQLite, [String])?

    /// A cache without a memory tier whose SQLite file holds `keyCount` memoized results;
    /// `inlineReaders` 0 for the default count.
    func sqliteHitCache(readers: Int, inlineReaders: Int = 0, keyCount: Int) async throws -> (
        TieredCache, Memoized<Int, String>
    ) {
        if let existing = self.lock.withLock({ self.sqliteHit[[readers, inlineReaders]] }) { return existing }
        var configuration = TieredCache.Configuration()
        configuration.memory = nil
        var sqlite = SQLiteTier.Configuration(
            path: Workload.temporaryPath("sqlite-hit-\(readers)-\(inlineReaders).sqlite"), readerCount: readers)
        if inlineReaders > 0 { sqlite.inlineReaderCount = inlineReaders }
        configuration.sqlite = sqlite
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        let lookup = cache.memoize(id: "completion") { (seed: Int) async throws -> String in Workload.json(seed: seed) }
        for seed in 0..<keyCount { _ = try await lookup(seed) }
        try await cache.flush()
        self.lock.withLock { self.sqliteHit[[readers, inlineReaders]] = (cache, lookup) }
        return (cache, lookup)
    }

    func rawSQLite(keyCount: Int) -> (Baseline.RawSQLite, [String]) {
        self.lock.withLock {
            if let raw = self.raw { return raw }
            let sqlite = Baseline.RawSQLite(path: Workload.temporaryPath("raw-lookup.sqlite"))
            let keys = (0..<keyCount).map { "completion/\($0)" }
            sqlite.insertBatch(keys: keys[...], value: Array(Workload.json(seed: 1).utf8))
            self.raw = (sqlite, keys)
            return (sqlite, keys)
        }
    }
}

/// One cache shared by the iterations of the set-latency benchmark.
final class SetLatencyState: @unchecked Sendable {
    static let shared = SetLatencyState()
    let value = Workload.json(seed: 7)
    private let lock = NSLock()
    private var counter = 0
    private var opened: TieredCache?

    func next() -> Int {
        self.lock.withLock {
            self.counter += 1
            return self.counter % 50_000
        }
    }

    func cache() async throws -> TieredCache {
        if let opened = self.lock.withLock({ self.opened }) { return opened }
        var configuration = TieredCache.Configuration()
        configuration.memory = .init(maxEntries: 100_000, maxBytes: 256 << 20)
        configuration.sqlite = .init(path: Workload.temporaryPath("set-latency.sqlite"))
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        self.lock.withLock { self.opened = cache }
        return cache
    }
}

/// The rate-limiter benchmarks: uncontended acquire, and the rate achieved under contention.
let limiterBenchmarks: @Sendable () -> Void = {
    Benchmark("rate-limiter.acquire.uncontended") { benchmark in
        let limiter = RateLimiter(ratePerSecond: 1e12, burst: 1_000_000)
        for _ in benchmark.scaledIterations {
            try await limiter.acquire()
        }
    }

    for cancelEvery in [nil, 10] as [Int?] {
        let name =
            cancelEvery == nil
            ? "rate-limiter.achieved-per-mille.tasks-64"
            : "rate-limiter.achieved-per-mille.cancel-every-10th"
        let metric = BenchmarkMetric.custom(
            "achieved per mille of 200/s", polarity: .prefersLarger, useScalingFactor: false)
        Benchmark(
            name,
            configuration: .init(
                metrics: [metric], scalingFactor: .one, maxDuration: .seconds(30), maxIterations: 1,
                thresholds: [metric: tolerance])
        ) { benchmark in
            benchmark.measurement(metric, try await achievedRatePercent(cancelEvery: cancelEvery))
        }
    }
}

/// Runs 64 tasks acquiring from a 200/s limiter for 5 s and returns the achieved rate in per mille
/// of 200/s, with the initial burst subtracted. With `cancelEvery`, extra waiters that get
/// cancelled are mixed in; they must not lower the rate.
func achievedRatePercent(cancelEvery: Int?) async throws -> Int {
    let rate = 200.0
    let burst = 20
    let limiter = RateLimiter(ratePerSecond: rate, burst: burst)
    let clock = ContinuousClock()
    let start = clock.now
    let deadline = start + .seconds(5)
    let granted = ManagedCounter()
    try await withThrowingTaskGroup(of: Void.self) { group in
        for task in 0..<64 {
            group.addTask {
                var attempt = 0
                while clock.now < deadline {
                    attempt += 1
                    if let cancelEvery, (attempt + task) % cancelEvery == 0 {
                        let doomed = Task { try await limiter.acquire() }
                        try await Task.sleep(for: .milliseconds(2))
                        doomed.cancel()
                        if (try? await doomed.value) != nil, clock.now < deadline { granted.increment() }
                        continue
                    }
                    try await limiter.acquire()
                    if clock.now < deadline { granted.increment() }
                }
            }
        }
        try await group.waitForAll()
    }
    let achieved = Double(granted.value - burst) / 5.0
    return Int((achieved / rate * 1000).rounded())
}

final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { self.lock.withLock { self.count += 1 } }
    var value: Int { self.lock.withLock { self.count } }
}
