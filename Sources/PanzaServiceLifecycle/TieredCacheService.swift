public import Panza
public import ServiceLifecycle

/// A `TieredCache` run as a swift-service-lifecycle `Service`, so that a server (Hummingbird,
/// Vapor) or a batch tool flushes the cache on SIGTERM instead of losing its write-behind queue.
///
/// ```swift
/// let cache = try await TieredCache(path: "cache.sqlite")
/// let group = ServiceGroup(
///     services: [TieredCacheService(cache: cache), server],   // the cache first: it stops last
///     gracefulShutdownSignals: [.sigterm, .sigint],
///     logger: logger
/// )
/// try await group.run()
/// ```
///
/// `run()` waits for graceful shutdown (or cancellation), then closes the cache: queued writes are
/// applied within `closeTimeout` and uploads still in the SQLite
/// outbox stay there for the next start (see `TieredCache.close()`). The cache's own
/// background work runs whether or not the service runs; the service only ends it well.
public struct TieredCacheService: Service {
    /// The cache this service closes on shutdown.
    public let cache: TieredCache

    /// A service that closes `cache` on graceful shutdown.
    public init(cache: TieredCache) {
        self.cache = cache
    }

    /// Waits for graceful shutdown (or cancellation), then closes the cache.
    public func run() async throws {
        // Suspends until graceful shutdown; throws when the task is cancelled instead. Either way
        // the cache is closed.
        try? await gracefulShutdown()
        try await self.cache.close()
    }
}
