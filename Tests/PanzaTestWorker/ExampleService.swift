import Foundation
import Logging
import Panza
import PanzaServiceLifecycle
import ServiceLifecycle
import UnixSignals

// The shape of a Hummingbird or Vapor service that memoizes an expensive API with Panza, without
// the web framework: a cache service and a "server" service in one ServiceGroup that shuts down
// gracefully on SIGTERM. The server stops first (reverse order), then the cache flushes and closes.

/// Stands in for a slow, paid API.
struct WeatherAPI: Sendable {
    func forecast(city: String, day: Int) async throws -> String {
        try await Task.sleep(for: .microseconds(50))
        return "forecast for \(city), day \(day): " + String(repeating: "☀︎", count: 200)
    }
}

/// Stands in for an HTTP server: it handles `requests` requests, says so, then serves until shutdown.
struct ExampleServer: Service {
    let cache: TieredCache
    let requests: Int

    func run() async throws {
        let api = WeatherAPI()
        let forecast = self.cache.memoize(id: "forecast") { (city: String, day: Int) async throws -> String in
            try await api.forecast(city: city, day: day)
        }
        for index in 0..<self.requests {
            _ = try await forecast("city-\(index % 50)", index)
        }
        // A burst of larger results, as a batch job ends with: the write-behind queue is not empty
        // when the signal comes.
        let report = String(repeating: "r", count: 16 << 10)
        for index in 0..<500 {
            try await self.cache.set(report + "\(index)", forKey: "report-\(index)")
        }
        // Accepted (in memory), not necessarily in SQLite yet: the write-behind queue holds the rest.
        let pending = self.cache.statistics.pendingWrites
        FileHandle.standardOutput.write(Data("served \(pending)\n".utf8))
        try? await gracefulShutdown()
    }
}

/// `PanzaTestWorker service DB REQUESTS`: runs the example until SIGTERM, then exits 0.
func runExampleService(path: String, requests: Int) async throws {
    var configuration = TieredCache.Configuration()
    configuration.sqlite = .init(path: path)
    configuration.modes = CacheModes()
    configuration.metrics = .init(label: "example")  // to MetricsSystem.factory: Prometheus in a real service
    let logger = Logger(label: "example")
    let cache = try await TieredCache(configuration: configuration, logger: logger)
    let group = ServiceGroup(
        services: [TieredCacheService(cache: cache), ExampleServer(cache: cache, requests: requests)],
        gracefulShutdownSignals: [.sigterm],
        logger: logger
    )
    try await group.run()
    FileHandle.standardOutput.write(Data("stopped\n".utf8))
}
