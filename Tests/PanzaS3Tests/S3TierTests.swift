import Foundation
import Panza
import PanzaS3
import Testing

/// The S3 tier in a TieredCache, against a real S3 server.
@Suite(.timeLimit(.minutes(2)))
struct S3TierTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    func cache(
        file: String,
        tier: S3Tier.Configuration,
        memory: Bool = true,
        writeMode: TieredCache.Configuration.WriteMode = .writeBehind
    ) async throws -> TieredCache {
        var configuration = TieredCache.Configuration()
        configuration.writeMode = writeMode
        // These tests are about what S3 answers, not about how fast: a loaded CI machine must not
        // turn an answer into a read timeout (the blackhole test sets its own).
        configuration.remoteReadTimeout = .seconds(30)
        configuration.remoteBreaker.skipsTiersSlowerThanLoads = false
        // Two caches on one file take turns at the outbox; the second looks again this often.
        configuration.writeBehind.outboxPollInterval = .milliseconds(100)
        configuration.memory = memory ? .init() : nil
        configuration.sqlite = .init(path: self.directory.path(file))
        configuration.remote = try S3Tier(configuration: tier)
        configuration.modes = CacheModes()
        configuration.remoteCloseTimeout = .seconds(2)
        return try await TieredCache(configuration: configuration)
    }

    @Test("Two machines, one bucket: the second is served from S3 without calling its loader")
    func sharingAcrossMachines() async throws {
        let tier = try S3TestServer.tierConfiguration(bucket: S3TestServer.uniqueBucket())
        let first = try await self.cache(file: "machine-a.sqlite", tier: tier)
        let calls = CallCounter()
        let forecastA = first.memoize(id: "forecast") { (city: String, days: Int) async throws -> String in
            calls.increment()
            return "\(city) for \(days) days: mild"
        }
        #expect(try await forecastA("Oslo", 3) == "Oslo for 3 days: mild")
        try await first.flush()
        try await first.close()

        let second = try await self.cache(file: "machine-b.sqlite", tier: tier)
        let forecastB = second.memoize(id: "forecast") { (city: String, days: Int) async throws -> String in
            calls.increment()
            return "wrong"
        }
        #expect(try await forecastB("Oslo", 3) == "Oslo for 3 days: mild")
        #expect(calls.value == 1)
        #expect(second.statistics.tiers["s3"]?.hits == 1)
        try await second.close()
    }

    @Test("Objects are laid out as {prefix}/{id}/{hash}, plain keys under {prefix}/_keys/")
    func objectLayout() async throws {
        let bucket = S3TestServer.uniqueBucket()
        let configuration = try S3TestServer.tierConfiguration(bucket: bucket, prefix: "team/v1")
        let cache = try await self.cache(file: "cache.sqlite", tier: configuration)
        let f = cache.memoize(id: "llm") { (prompt: String) async throws -> String in prompt.uppercased() }
        _ = try await f("hi")
        try await cache.set("plain", forKey: "a key/with slash")
        try await cache.flush()
        let tier = try #require(cache.tiers.last as? S3Tier)
        let keys = Set(try await tier.allObjectKeys())
        let memoKey = try f.key("hi").rawValue
        #expect(keys == ["team/v1/\(memoKey)", "team/v1/_keys/a%20key%2Fwith%20slash"])
        #expect(try await tier.client.head(key: "team/v1/_panza") != nil, "the prefix marker")
        // The object holds the same envelope bytes as SQLite.
        let sqlite = try #require(cache.tiers.first as? SQLiteTier)
        #expect(try await tier.client.get(key: "team/v1/\(memoKey)") == (try await sqlite.storedBlob(forKey: memoKey)))
        try await cache.close()
    }

    @Test("bust and bustAll reach S3 as invalidations: one request each, whatever the number of objects")
    func busting() async throws {
        let tierConfiguration = try S3TestServer.tierConfiguration(bucket: S3TestServer.uniqueBucket())
        let cache = try await self.cache(file: "cache.sqlite", tier: tierConfiguration)
        let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in x }
        let g = cache.memoize(id: "g") { (x: Int) async throws -> Int in x }
        for x in 0..<5 { _ = try await f(x) }
        _ = try await g(1)
        try await cache.flush()
        let tier = try #require(cache.tiers.last as? S3Tier)
        #expect(try await tier.allObjectKeys().count == 6)
        // A reader on another file sees what is shared, and stops seeing what is busted.
        let reader = try S3Tier(configuration: tierConfiguration)
        func shared(_ memoized: Memoized<Int, Int>, _ x: Int) async throws -> Bool {
            _ = try await reader.newInvalidations()
            return try await reader.blob(forKey: try memoized.key(x)) != nil
        }
        #expect(try await shared(f, 0))
        #expect(try await shared(f, 1))
        #expect(try await shared(g, 1))
        try await f.bust(0)
        try await cache.flush()
        #expect(try await tier.allObjectKeys().count == 5, "a key bust deletes its object")
        #expect(try await !shared(f, 0))
        #expect(try await shared(f, 1))
        try await f.bustAll()
        try await cache.flush()
        #expect(try await !shared(f, 1), "an id bust hides the id's objects")
        #expect(try await shared(g, 1), "and no other id's")
        _ = try await f(1)
        try await cache.flush()
        #expect(try await shared(f, 1), "the id's new generation is shared")
        try await cache.bustAll()
        try await cache.flush()
        #expect(try await !shared(f, 1))
        #expect(try await !shared(g, 1))
        let log = try await tier.client.listAll(prefix: "v1/_invalidations/")
        #expect(log.count == 3, "one log entry per bust: \(log)")
        try await reader.close()
        try await cache.close()
    }

    @Test("With S3 down, callers are served by the loader and local tiers; strict mode shows the error")
    func deadEndpoint() async throws {
        let settings = try S3TestServer.settings()
        var tier = S3Tier.Configuration(
            bucket: "panza-dead", endpoint: "http://127.0.0.1:9", credentials: settings.credentials)
        tier.client.retry = .none
        tier.client.connectTimeout = .milliseconds(500)
        let cache = try await self.cache(file: "cache.sqlite", tier: tier, memory: false)
        #expect(try await cache.value(forKey: "k") { "loaded" } == "loaded")
        #expect(try await cache.value(forKey: "k", as: String.self) == "loaded")  // from SQLite
        #expect(cache.statistics.tiers["s3"]?.errors == 1)
        await #expect(throws: S3Error.self) { try await cache.flush() }
        try await cache.close()

        tier.strict = true
        let strict = try await self.cache(file: "strict.sqlite", tier: tier, memory: false)
        let error = await #expect(throws: S3Error.self) { _ = try await strict.value(forKey: "k") { "loaded" } }
        #expect(error?.code == .transport)
        try await strict.close()
    }

    @Test("Uploads pending when a process is killed with SIGKILL are sent by the next process")
    func uploadsSurviveSIGKILL() async throws {
        let settings = try S3TestServer.settings()
        let bucket = S3TestServer.uniqueBucket()
        let path = self.directory.path("cache.sqlite")
        let child = try ChildProcess.start(["s3-write-and-wait", path, "200", "http://127.0.0.1:9", bucket])
        #expect(await child.waitForLine("persisted"), "the worker did not persist its writes")
        child.kill(signal: SIGKILL)

        var configuration = TieredCache.Configuration()
        configuration.sqlite = .init(path: path)
        configuration.remote = try S3Tier(
            configuration: S3Tier.Configuration(
                bucket: bucket, prefix: "v1", endpoint: settings.endpoint, credentials: settings.credentials))
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        try await cache.flush()
        let tier = try #require(cache.tiers.last as? S3Tier)
        #expect(try await tier.allObjectKeys().count == 200)
        let sqlite = try #require(cache.tiers.first as? SQLiteTier)
        #expect(try await sqlite.outboxCount() == 0)
        try await cache.close()
    }

    @Test("Two caches on one file upload one outbox in order: the bucket ends with the last write of each key")
    func sharedOutboxOrder() async throws {
        let tier = try S3TestServer.tierConfiguration(bucket: S3TestServer.uniqueBucket())
        // Write-through: each write is in the file (and its outbox) before the next one is made, as
        // when two processes take turns; what is under test is the order of the uploads.
        let first = try await self.cache(file: "shared.sqlite", tier: tier, writeMode: .writeThrough)
        let second = try await self.cache(file: "shared.sqlite", tier: tier, writeMode: .writeThrough)
        var random = SplitMix64(seed: 8)
        var expected: [String: String] = [:]
        for step in 0..<300 {
            let cache = random.below(2) == 0 ? first : second
            let key = "k\(random.below(12))"
            if random.below(3) == 0 {
                try await cache.removeValue(forKey: key)
                expected[key] = nil
            } else {
                try await cache.set("v\(step)", forKey: key)
                expected[key] = "v\(step)"
            }
            if step % 25 == 0 { try await cache.flush() }
        }
        try await first.flush()
        try await second.flush()
        let s3 = try #require(first.tiers.last as? S3Tier)
        let objects = Set(try await s3.allObjectKeys())
        #expect(objects == Set(expected.keys.map { "v1/_keys/\($0)" }))
        for (key, value) in expected {
            let blob = try #require(try await s3.blob(forKey: CacheKey(rawValue: key)))
            let stored = try BlobEnvelope.decode(blob).payload
            #expect(stored == Array(value.utf8), "\(key): the bucket holds an older write")
        }
        try await first.close()
        try await second.close()
    }

    @Test(
        "A blackholed endpoint: a miss reaches the loader after the read timeout, then at once once the breaker opens")
    func blackholedEndpoint() async throws {
        let server = try LoopbackHTTPServer.blackhole()
        defer { server.close() }
        let settings = try S3TestServer.settings()
        var tier = S3Tier.Configuration(
            bucket: S3TestServer.uniqueBucket(),
            prefix: "v1",
            endpoint: "http://127.0.0.1:\(server.port)",
            credentials: settings.credentials
        )
        tier.client.retry = .none
        // Far beyond the read timeout: a miss that reached its loader stopped waiting because of the
        // read timeout (counted as a timeout), not because the request failed (counted as an error).
        tier.client.requestTimeout = .seconds(30)
        var configuration = TieredCache.Configuration()
        configuration.sqlite = .init(path: self.directory.path("blackhole.sqlite"))
        configuration.remote = try S3Tier(configuration: tier)
        configuration.modes = CacheModes()
        configuration.remoteReadTimeout = .milliseconds(300)
        configuration.remoteBreaker = .init(failureThreshold: 2, openDuration: .seconds(60))
        configuration.remoteCloseTimeout = .milliseconds(100)
        let cache = try await TieredCache(configuration: configuration)
        for index in 0..<2 {
            #expect(try await cache.value(forKey: "k\(index)") { "loaded" } == "loaded")
            // Not a wall-clock bound (a loaded machine stretches any): the loader answered while
            // the request to the blackholed endpoint was still waiting, cut by the read timeout.
            #expect(cache.statistics.tiers["s3"]?.timeouts == index + 1, "a miss waited for the blackholed endpoint")
            #expect(cache.statistics.tiers["s3"]?.errors == 0)
        }
        #expect(cache.statistics.tiers["s3"]?.breaker == .open)
        for index in 2..<12 {
            #expect(try await cache.value(forKey: "k\(index)") { "loaded" } == "loaded")
        }
        #expect(cache.statistics.tiers["s3"]?.timeouts == 2)
        #expect(cache.statistics.tiers["s3"]?.skipped == 10)
        #expect(try await cache.value(forKey: "k0", as: String.self) == "loaded", "the local tiers kept the result")
        try? await cache.close()  // the uploads stay in the outbox
    }

    @Test(
        "A prefix that could reach other entries is refused",
        arguments: ["", "/v1", "v1/", "a//b", ".", "a/../b", "a/./b"])
    func invalidPrefix(prefix: String) throws {
        #expect(throws: S3Error.self) {
            try S3Tier(configuration: S3TestServer.tierConfiguration(bucket: "b", prefix: prefix))
        }
    }

    @Test("A read-only S3 tier is read but never written")
    func readOnly() async throws {
        let bucket = S3TestServer.uniqueBucket()
        var tier = try S3TestServer.tierConfiguration(bucket: bucket)
        let writer = try await self.cache(file: "writer.sqlite", tier: tier)
        try await writer.set("shared", forKey: "k")
        try await writer.flush()
        try await writer.close()

        tier.policy = .readOnly
        let reader = try await self.cache(file: "reader.sqlite", tier: tier)
        #expect(try await reader.value(forKey: "k", as: String.self) == "shared")
        try await reader.set("local only", forKey: "mine")
        try await reader.flush()
        let s3 = try #require(reader.tiers.last as? S3Tier)
        #expect(try await s3.allObjectKeys() == ["v1/_keys/k"])
        try await reader.close()
    }

    @Test("S3 refusals are permanent failures (dead letters at once); outages, throttling and credentials are not")
    func failureClassification() async throws {
        let tier = try S3Tier(configuration: S3TestServer.tierConfiguration(bucket: "classification"))
        func http(_ status: Int, _ code: String) -> S3Error {
            S3Error(code: .http, message: "refused", s3Code: code, httpStatus: status)
        }
        #expect(tier.isPermanentFailure(http(400, "InvalidArgument")))
        #expect(tier.isPermanentFailure(http(400, "KeyTooLongError")))
        #expect(tier.isPermanentFailure(http(400, "EntityTooLarge")))
        #expect(!tier.isPermanentFailure(http(503, "SlowDown")))
        #expect(!tier.isPermanentFailure(http(500, "InternalError")))
        #expect(!tier.isPermanentFailure(http(429, "TooManyRequests")))
        #expect(!tier.isPermanentFailure(http(400, "RequestTimeout")))
        #expect(!tier.isPermanentFailure(http(403, "RequestTimeTooSkewed")))
        #expect(!tier.isPermanentFailure(http(400, "ExpiredToken")))
        #expect(!tier.isPermanentFailure(http(403, "AccessDenied")), "a policy can be fixed; retried up to maxAttempts")
        #expect(!tier.isPermanentFailure(S3Error(code: .transport, message: "connection refused")))
        #expect(!tier.isPermanentFailure(CancellationError()))
        try await tier.close()
    }
}
