import Foundation
import Panza
import Synchronization
import Testing

@testable import PanzaS3

/// The S3 tier behind a fault-injecting proxy in front of the real test server (SeaweedFS): callers
/// are served whatever the network does, the breaker opens and closes, and nothing accepted is lost.
@Suite(.timeLimit(.minutes(3)))
struct FaultInjectionTests {
    let directory: TemporaryDirectory
    let proxy: FaultProxy
    let bucket = S3TestServer.uniqueBucket("fault")

    init() throws {
        self.directory = try TemporaryDirectory()
        self.proxy = try FaultProxy(upstream: try S3TestServer.settings().endpoint)
    }

    /// A tier that reaches S3 through the proxy.
    func tier(provider: (any S3CredentialProvider)? = nil) throws -> S3Tier.Configuration {
        let settings = try S3TestServer.settings()
        var tier = S3Tier.Configuration(
            bucket: self.bucket,
            prefix: "v1",
            endpoint: self.proxy.endpoint,
            credentials: provider == nil ? settings.credentials : nil,
            credentialProvider: provider
        )
        tier.client.retry = .init(maxAttempts: 4, baseDelay: .milliseconds(20), maxDelay: .milliseconds(200))
        tier.client.requestTimeout = .seconds(2)
        tier.client.connectTimeout = .seconds(1)
        // The requests these tests count are reads and uploads; the invalidation log is read once,
        // when a cache opens (tests that count wait for it with synchronizeInvalidations()).
        tier.invalidationPollInterval = nil
        return tier
    }

    func cache(
        _ file: String,
        memory: Bool = false,
        readTimeout: Duration = .seconds(1),
        breaker: CircuitBreaker.Configuration = {
            // A slow moment of a loaded machine must not open the breaker, but in the test of slow tiers.
            var breaker = CircuitBreaker.Configuration()
            breaker.skipsTiersSlowerThanLoads = false
            return breaker
        }(),
        clock: any CacheClock = SystemCacheClock(),
        configure: (inout TieredCache.Configuration) -> Void = { _ in }
    ) async throws -> TieredCache {
        var configuration = TieredCache.Configuration()
        configuration.clock = clock
        configuration.memory = memory ? .init() : nil
        configuration.sqlite = .init(path: self.directory.path(file))
        configuration.remote = try S3Tier(configuration: self.tier())
        configuration.modes = CacheModes()
        configuration.remoteReadTimeout = readTimeout
        configuration.remoteBreaker = breaker
        configuration.remoteCloseTimeout = .seconds(1)
        configuration.writeBehind.retryBackoff = .milliseconds(50)
        configuration.writeBehind.maxRetryBackoff = .milliseconds(500)
        configuration.writeBehind.maxAttempts = 1_000
        configure(&configuration)
        return try await TieredCache(configuration: configuration)
    }

    /// The object under `key`, read straight from the server (not through the proxy).
    func stored(_ key: String) async throws -> [UInt8]? {
        let client = try S3TestServer.client(bucket: self.bucket)
        do {
            let body = try await client.get(key: key)
            try await client.shutdown()
            return body
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    /// Flushes until the uploads are applied: a flush reports a failed batch (the operations stay
    /// queued and are retried), so a caller that must know they landed asks again.
    func flushEventually(_ cache: TieredCache) async throws {
        var lastError: (any Error)?
        for _ in 0..<100 {
            do {
                try await cache.flush()
                return
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        throw lastError!
    }

    /// Stores `values` through a cache with no fault, and waits until they are in the bucket.
    func seed(_ values: [String: String]) async throws {
        let cache = try await self.cache("seed-\(UUID().uuidString).sqlite")
        for (key, value) in values { try await cache.set(value, forKey: key) }
        try await cache.flush()
        try await cache.close()
    }

    @Test(
        "Blackholed: misses reach the loader within the read timeout, then at once with the breaker open; uploads wait and land after"
    )
    func blackholeThenRecovery() async throws {
        defer { self.proxy.close() }
        try await self.seed(["warm": "from S3"])
        // The breaker's open periods pass on the cache's clock, which only this test moves: the
        // breaker stays open until the test says its period is over, however slow the machine.
        let clock = ManualCacheClock(nowMilliseconds: SystemCacheClock().nowMilliseconds())
        let cache = try await self.cache(
            "blackhole.sqlite",
            breaker: {
                var breaker = CircuitBreaker.Configuration(
                    failureThreshold: 3, openDuration: .seconds(2), maxOpenDuration: .seconds(4))
                breaker.skipsTiersSlowerThanLoads = false
                return breaker
            }(),
            clock: clock
        )
        self.proxy.inject(.blackhole)
        // Counted, not timed (a loaded machine stretches any wall-clock bound): each miss reached
        // its loader because the read timeout cut the wait for S3, and with the breaker open S3 is
        // not asked at all.
        for index in 0..<3 {
            #expect(try await cache.value(forKey: "miss\(index)") { "loaded \(index)" } == "loaded \(index)")
            #expect(
                cache.statistics.tiers["s3"]?.timeouts == index + 1,
                "a miss waited longer than the read timeout allows")
        }
        #expect(cache.statistics.tiers["s3"]?.breaker == .open)
        #expect(try await cache.value(forKey: "miss-open") { "at once" } == "at once")
        #expect(cache.statistics.tiers["s3"]?.skipped == 1, "with the breaker open, S3 is not asked")
        #expect(cache.statistics.tiers["s3"]?.timeouts == 3)

        for index in 0..<10 { try await cache.set("accepted \(index)", forKey: "up\(index)") }
        try await Task.sleep(for: .milliseconds(300))  // uploads fail against the blackhole meanwhile
        self.proxy.inject(.none)
        try await self.flushEventually(cache)
        for index in 0..<10 {
            #expect(try await self.stored("v1/_keys/up\(index)") != nil, "upload \(index) was lost")
        }
        #expect(cache.statistics.droppedWrites == 0)
        // Until its open period passes, a read skips S3 and finds nothing; after it (at most
        // `maxOpenDuration`, 4 s, from the last failed read) the breaker lets a probe through, and
        // the answer closes it.
        #expect(try await cache.value(forKey: "warm", as: String.self) == nil, "the breaker closed by itself")
        #expect(cache.statistics.tiers["s3"]?.breaker == .open)
        clock.advance(by: .seconds(5))
        #expect(
            try await cache.value(forKey: "warm", as: String.self) == "from S3",
            "the breaker did not let a probe through after its open period")
        #expect(cache.statistics.tiers["s3"]?.breaker == .closed)
        try await cache.close()
    }

    @Test(
        "Blackholed with a full outbox: the file stays bounded, refused uploads remove their keys from S3 once it heals, and no older copy is served"
    )
    func blackholeWithAFullOutbox() async throws {
        defer { self.proxy.close() }
        try await self.seed(["value-299": "old", "value-0": "old"])
        let maxBytes = 4 << 20
        let path = self.directory.path("full.sqlite")
        let cache = try await self.cache("full.sqlite") { configuration in
            configuration.sqlite?.maxBytes = maxBytes
            configuration.memory = nil
        }
        self.proxy.inject(.blackhole)
        var random = SplitMix64(seed: 28)
        var largest = 0
        var first: [UInt8] = []
        var last: [UInt8] = []
        for index in 0..<300 {
            var value = [UInt8](repeating: 0, count: 100 << 10)
            for offset in stride(from: 0, to: value.count, by: 8) {
                withUnsafeBytes(of: random.next()) { value.replaceSubrange(offset..<offset + 8, with: $0) }
            }
            try await cache.set(value, forKey: "value-\(index)")
            last = value
            if index == 0 { first = value }
            if index % 25 == 0 {
                largest = max(
                    largest,
                    ["", "-wal"].reduce(0) { total, suffix in
                        let attributes = try? FileManager.default.attributesOfItem(atPath: path + suffix)
                        return total + ((attributes?[.size] as? NSNumber)?.intValue ?? 0)
                    })
            }
        }
        #expect(largest < 3 * maxBytes, "the file and its WAL reached \(largest) bytes")
        try await cache.waitForLocalTiers()
        #expect(try await cache.value(forKey: "value-299", as: [UInt8].self) == last, "the newest value is not served")
        // Read as `panza stats` reads it: the file's own totals.
        let inspector = try await SQLiteTier.open(configuration: .init(path: path))
        let usage = try await inspector.usage()
        await inspector.close()
        #expect(usage.refusedUploads > 0)
        #expect(usage.outboxBytes + usage.deadLetterBytes <= maxBytes)

        self.proxy.inject(.none)
        try await self.flushEventually(cache)
        try await cache.close()
        #expect(try await self.stored("v1/_keys/value-0") != nil, "a queued upload was lost")
        #expect(
            try await self.stored("v1/_keys/value-299") == nil,
            "S3 still holds a copy older than a refused upload")
        // Another machine misses instead of being served the older copy.
        let other = try await self.cache("other-machine.sqlite")
        #expect(try await other.value(forKey: "value-299", as: String.self) == nil)
        #expect(try await other.value(forKey: "value-0", as: [UInt8].self) == first, "a queued upload did not land")
        try await other.close()
    }

    @Test(
        "A body that drips: the client's deadline covers the body, and the cache serves the loader's value within the read timeout"
    )
    func drippingBody() async throws {
        defer { self.proxy.close() }
        try await self.seed(["slow": String(repeating: "x", count: 400)])
        // 16 bytes every 500 ms: the body would take 12.5 s whole, far past any bound below, so a
        // loaded machine's delays cannot be mistaken for a deadline that does not cover the body.
        self.proxy.inject(.drip(bytes: 16, interval: .milliseconds(500)))

        var settings = try self.tier().client
        settings.requestTimeout = .seconds(1)
        settings.retry = .none
        let client = try S3Client(configuration: settings)
        let started = ContinuousClock.now
        let result = await Result(catching: { try await client.get(key: "v1/_keys/slow") })
        try await client.shutdown()
        #expect(throws: S3Error.self) { try result.get() }
        #expect((try? result.get()) == nil)
        #expect(ContinuousClock.now - started < .seconds(8), "the request deadline must cover the body")

        let cache = try await self.cache("drip.sqlite")
        let calls = CallCounter()
        let cacheStarted = ContinuousClock.now
        #expect(
            try await cache.value(forKey: "slow") {
                calls.increment()
                return "fallback"
            } == "fallback")
        #expect(ContinuousClock.now - cacheStarted < .seconds(8))
        #expect(calls.value == 1)
        try await cache.close()
    }

    @Test("A slow but working S3 (300 ms per answer) is still used within the read timeout")
    func slowButWorking() async throws {
        defer { self.proxy.close() }
        try await self.seed(["k": "from S3"])
        self.proxy.inject(.delay(.milliseconds(300)))
        let cache = try await self.cache("slow.sqlite")
        #expect(try await cache.value(forKey: "k") { "loader" } == "from S3")
        #expect(cache.statistics.loads == 0)
        try await cache.close()
    }

    @Test("S3 slower than the API (300 ms per answer, instant loads): after a few slow reads misses skip it")
    func slowerThanTheAPI() async throws {
        defer { self.proxy.close() }
        try await self.seed(["warm": "from S3"])
        var breaker = CircuitBreaker.Configuration(failureThreshold: 3, openDuration: .seconds(60))
        breaker.skipsTiersSlowerThanLoads = true
        let cache = try await self.cache("slower.sqlite", breaker: breaker)
        // The reads counted below are GETs: the invalidation log is read before S3 slows down.
        try await cache.synchronizeInvalidations()
        self.proxy.inject(.delay(.milliseconds(300)))
        for index in 0..<4 { _ = try await cache.value(forKey: "miss\(index)") { "loaded" } }
        #expect(cache.statistics.tiers["s3"]?.breaker == .open)
        #expect(cache.statistics.tiers["s3"]?.slow == 3)
        #expect(try await cache.value(forKey: "another") { "at once" } == "at once")
        #expect(cache.statistics.tiers["s3"]?.skipped == 1, "an open breaker skips the slow tier")
        try await cache.close()
    }

    @Test("Reset connections: misses go to the loader, uploads are retried and land once the network heals")
    func resets() async throws {
        defer { self.proxy.close() }
        var lenient = CircuitBreaker.Configuration(failureThreshold: 100)
        lenient.skipsTiersSlowerThanLoads = false
        let cache = try await self.cache("reset.sqlite", breaker: lenient)
        self.proxy.inject(.reset)
        #expect(try await cache.value(forKey: "a") { "loaded" } == "loaded")
        #expect((cache.statistics.tiers["s3"]?.errors ?? 0) + (cache.statistics.tiers["s3"]?.timeouts ?? 0) >= 1)
        try await cache.set("kept", forKey: "b")
        try await Task.sleep(for: .milliseconds(300))
        self.proxy.inject(.none)
        try await self.flushEventually(cache)
        #expect(try await self.stored("v1/_keys/a") != nil, "the loaded value is uploaded")
        #expect(try await self.stored("v1/_keys/b") != nil)
        try await cache.close()
    }

    @Test("Scheduled 503 SlowDown and 500 answers: uploads are retried and land; a read is retried once")
    func scheduledErrors() async throws {
        defer { self.proxy.close() }
        let cache = try await self.cache("errors.sqlite")
        #expect(try await cache.value(forKey: "warmup") { "w" } == "w")
        try await cache.flush()
        self.proxy.inject(.answer(status: 503, code: "SlowDown", count: 3))
        try await cache.set("through throttling", forKey: "throttled")
        try await self.flushEventually(cache)
        #expect(self.proxy.answeredCount == 3)
        #expect(try await self.stored("v1/_keys/throttled") != nil)

        // A generous read timeout: this is about the retry, and on a loaded machine a GET, its
        // 500 and the retried GET were seen to take more than the default 1 s.
        let reader = try await self.cache("reader.sqlite", readTimeout: .seconds(30))
        try await reader.synchronizeInvalidations()
        self.proxy.inject(.answer(status: 500, code: "InternalError", count: 1))
        #expect(
            try await reader.value(forKey: "throttled") { "loader" } == "through throttling",
            "one retry of the GET reaches S3: \(String(describing: reader.statistics.tiers["s3"]))")
        #expect(self.proxy.answeredCount == 4)
        try await reader.close()
        try await cache.close()
    }

    @Test("ExpiredToken from the server: the client fetches new credentials once and the request succeeds")
    func expiredToken() async throws {
        defer { self.proxy.close() }
        let settings = try S3TestServer.settings()
        let provider = CountingProvider(settings.credentials)
        var configuration = try self.tier(provider: provider).client
        configuration.retry = .none
        // Not a test of deadlines: a loaded machine (large-value tests run beside it) must not cut
        // the answers short.
        configuration.requestTimeout = .seconds(15)
        let client = try S3Client(configuration: configuration)
        self.proxy.inject(.answer(status: 400, code: "ExpiredToken", count: 1))
        let put = await Result(catching: {
            try await client.createBucket()
            try await client.put(key: "v1/_keys/token", body: Array("fresh".utf8))
        })
        try await client.shutdown()
        try put.get()
        #expect(provider.invalidations == 1)
        #expect(try await self.stored("v1/_keys/token") == Array("fresh".utf8))
    }
}

extension Result where Failure == any Error {
    /// The outcome of `body`, so that a test can clean up before it looks.
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

/// Real credentials, counting how often the client asked to drop them.
final class CountingProvider: S3CredentialProvider {
    let fixed: S3Credentials
    private let count = Mutex(0)

    init(_ fixed: S3Credentials) { self.fixed = fixed }

    var invalidations: Int { self.count.withLock { $0 } }
    func credentials() async throws -> S3Credentials { self.fixed }
    func invalidate() async { self.count.withLock { $0 += 1 } }
}
