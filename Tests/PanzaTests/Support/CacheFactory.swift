import Foundation
@_exported import PanzaTestSupport

@testable import Panza

/// Opens caches on temporary SQLite files, with modes cleared from the environment.
func makeCache(
    in directory: TemporaryDirectory,
    memory: MemoryTier.Configuration? = .init(),
    sqlite: Bool = true,
    file: String = "cache.sqlite",
    configure: (inout TieredCache.Configuration) -> Void = { _ in }
) async throws -> TieredCache {
    var configuration = TieredCache.Configuration()
    configuration.memory = memory
    configuration.sqlite = sqlite ? .init(path: directory.path(file)) : nil
    configuration.modes = CacheModes()
    // Tests of consistency must not see a slow moment of a loaded machine as a read timeout; the
    // tests of timeouts set their own.
    configuration.remoteReadTimeout = .seconds(30)
    // Likewise a slow moment must not open the breaker; the tests of slow tiers turn it back on.
    configuration.remoteBreaker.skipsTiersSlowerThanLoads = false
    configure(&configuration)
    return try await TieredCache(configuration: configuration)
}

struct Forecast: Codable, Sendable, Equatable {
    var city: String
    var days: Int
    var temperatures: [Double]
}

struct TestError: Error, Equatable {
    var message: String
}
