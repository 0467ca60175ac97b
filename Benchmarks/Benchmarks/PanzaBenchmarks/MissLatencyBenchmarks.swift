import Benchmark
import BenchmarkFaultProxy
import Foundation
import Panza
import PanzaS3

/// What a cache miss costs a caller when S3 is healthy, blackholed or slow, beside the loader
/// alone (a 20 ms API call): the cache must never make a call much slower than no cache.
///
///   Panza miss (SQLite + S3 tiers, default read timeout 1 s)     baseline
///   S3 healthy                                                   the loader alone
///   S3 blackholed, breaker closed (every miss waits the timeout)
///   S3 blackholed, breaker open (misses skip S3)
///   S3 slow: 500 ms per answer
let missLatencyBenchmarks: @Sendable () -> Void = {
    let environment = ProcessInfo.processInfo.environment
    guard let endpoint = environment["PANZA_TEST_S3_ENDPOINT"], let access = environment["PANZA_TEST_S3_ACCESS_KEY"],
        let secret = environment["PANZA_TEST_S3_SECRET_KEY"]
    else { return }
    let credentials = S3Credentials(accessKeyID: access, secretAccessKey: secret)
    let apiLatency = Duration.milliseconds(20)

    @Sendable func loader() async throws -> String {
        try await Task.sleep(for: apiLatency)
        return Workload.json(seed: 9)
    }

    Benchmark(
        "baseline.loader.20ms",
        configuration: .init(
            metrics: [.wallClock], scalingFactor: .one, maxDuration: .seconds(3), maxIterations: 100,
            thresholds: latencyThresholds)
    ) { benchmark in
        benchmark.startMeasurement()
        blackHole(try await loader())
        benchmark.stopMeasurement()
    }

    let scenarios: [(name: String, fault: FaultProxy.Fault, breakerOpen: Bool, iterations: Int)] = [
        ("s3-healthy", .none, false, 100),
        ("s3-blackholed.breaker-closed", .blackhole, false, 5),
        ("s3-blackholed.breaker-open", .blackhole, true, 100),
        ("s3-slow-500ms.breaker-closed", .delay(.milliseconds(500)), false, 5),
        ("s3-slow-500ms.breaker-open", .delay(.milliseconds(500)), true, 100),
    ]
    for scenario in scenarios {
        Benchmark(
            "miss.latency.\(scenario.name).loader-20ms",
            configuration: .init(
                metrics: [.wallClock], scalingFactor: .one, maxDuration: .seconds(10),
                maxIterations: scenario.iterations,
                thresholds: latencyThresholds
            )
        ) { benchmark in
            let cache = try await MissFixtures.shared.cache(
                scenario: scenario.name, fault: scenario.fault, breakerOpen: scenario.breakerOpen,
                endpoint: endpoint, credentials: credentials
            )
            let key = "miss-\(UUID().uuidString)"
            benchmark.startMeasurement()
            blackHole(try await cache.value(forKey: key, loader: loader))
            benchmark.stopMeasurement()
        }
    }
}

/// One cache (and one proxy) per scenario, kept across iterations.
final class MissFixtures: @unchecked Sendable {
    static let shared = MissFixtures()
    private let lock = NSLock()
    private var caches: [String: (TieredCache, FaultProxy)] = [:]

    func cache(
        scenario: String, fault: FaultProxy.Fault, breakerOpen: Bool, endpoint: String, credentials: S3Credentials
    ) async throws -> TieredCache {
        if let (cache, _) = self.lock.withLock({ self.caches[scenario] }) { return cache }
        let proxy = try FaultProxy(upstream: endpoint)
        var configuration = TieredCache.Configuration()
        configuration.memory = nil
        configuration.sqlite = .init(path: Workload.temporaryPath("miss-\(scenario.hashValue).sqlite"))
        var tier = S3Tier.Configuration(
            bucket: "panza-bench-misses", endpoint: proxy.endpoint, credentials: credentials)
        tier.client.requestTimeout = .seconds(5)
        configuration.remote = try S3Tier(configuration: tier)
        configuration.modes = CacheModes()
        // The defaults (1 s read timeout, breaker after 5 failures or reads slower than the loads);
        // "closed" keeps it closed, "open" warms it up to open before measuring.
        if !breakerOpen { configuration.remoteBreaker.failureThreshold = .max }
        configuration.remoteBreaker.openDuration = .seconds(3_600)
        configuration.remoteBreaker.maxOpenDuration = .seconds(3_600)
        let cache = try await TieredCache(configuration: configuration)
        // Warm the connection (and create the bucket) while S3 is healthy.
        try await cache.set("warm", forKey: "warm")
        try await cache.flush()
        _ = try await cache.value(forKey: "warm-miss") { "x" }
        proxy.inject(fault)
        if breakerOpen {
            var index = 0
            while cache.statistics.tiers["s3"]?.breaker != .open, index < 20 {
                _ = try await cache.value(forKey: "open-\(index)") { "x" }
                index += 1
            }
            if cache.statistics.tiers["s3"]?.breaker != .open {
                print("\(scenario): the breaker did not open after \(index) misses; measuring anyway")
            }
        }
        self.lock.withLock { self.caches[scenario] = (cache, proxy) }
        return cache
    }
}
