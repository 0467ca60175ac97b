import Foundation
import Panza
import PanzaS3
import Testing

/// Several machines on one bucket, each a real process with its own SQLite file: busts reach every
/// machine through the bucket's invalidation log, and signed entries flow between them.
@Suite(.timeLimit(.minutes(3)))
struct SharedBucketTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    /// One HMAC key shared by the machines of these tests.
    static let teamKeys = "team-1:" + Data(repeating: 7, count: 32).base64EncodedString()

    func machine(_ name: String, bucket: String, pollMilliseconds: Int, keys: String? = teamKeys) throws
        -> ChildProcess
    {
        let settings = try S3TestServer.settings()
        return try ChildProcess.start(
            ["shared", self.directory.path(name + ".sqlite"), settings.endpoint, bucket, "\(pollMilliseconds)"]
                + (keys.map { [$0] } ?? []))
    }

    /// Asks `child` until `condition` holds for the answer, for at most `within`; returns the
    /// last answer and how long it took.
    func poll(
        _ child: ChildProcess, _ command: String, within: Duration, until condition: (String) -> Bool
    ) async throws -> (answer: String, elapsed: Duration) {
        let clock = ContinuousClock()
        let start = clock.now
        while true {
            let answer = try #require(await child.ask(command))
            if condition(answer) || clock.now - start > within { return (answer, clock.now - start) }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test(
        "An id bust and a key bust on one machine reach the others within the poll interval, and a newly opened one at once"
    )
    func bustsReachEveryMachine() async throws {
        let bucket = S3TestServer.uniqueBucket("shared")
        let a = try self.machine("a", bucket: bucket, pollMilliseconds: 300)
        let b = try self.machine("b", bucket: bucket, pollMilliseconds: 300)
        defer {
            a.kill(signal: SIGKILL)
            b.kill(signal: SIGKILL)
        }
        // A computes two forecasts and shares them; B and C are served A's values from S3 (signed).
        let osloByA = try #require(await a.ask("forecast Oslo"))
        let bergenByA = try #require(await a.ask("forecast Bergen"))
        #expect(await a.ask("flush") == "ok")
        #expect(await b.ask("forecast Oslo") == osloByA)
        #expect(await b.ask("forecast Bergen") == bergenByA)
        let c = try self.machine("c", bucket: bucket, pollMilliseconds: 0)
        #expect(await c.ask("forecast Oslo") == osloByA, "C's SQLite file now holds A's Oslo")
        #expect(await c.ask("quit") == "bye")
        _ = try await c.wait()
        #expect(try #require(await b.ask("stats")).contains("loads=0"), "B never called its loader")

        // A busts the whole id. B, which holds both entries in memory and SQLite, stops serving
        // them within the poll interval (300 ms; the bound below is generous for a loaded machine).
        #expect(await a.ask("bust-id") == "ok")
        #expect(await a.ask("flush") == "ok")
        let (osloAfter, elapsed) = try await self.poll(b, "forecast Oslo", within: .seconds(10)) { $0 != osloByA }
        #expect(osloAfter != osloByA, "B still serves a busted entry after \(elapsed)")
        #expect(osloAfter.hasPrefix("Oslo#\(b.process.processIdentifier)#"), "B computed it anew: \(osloAfter)")
        #expect(await b.ask("forecast Bergen") != bergenByA)
        #expect(try #require(await b.ask("stats")).contains("applied="))

        // C, closed during the bust, is opened again on its SQLite file that still holds A's Oslo,
        // and never polls on its own: its first lookup waits for the log and does not serve it.
        let c2 = try self.machine("c", bucket: bucket, pollMilliseconds: 0)
        defer { c2.kill(signal: SIGKILL) }
        let osloByC = try #require(await c2.ask("forecast Oslo"))
        #expect(osloByC != osloByA, "a newly opened machine served an entry busted while it was closed")

        // A key bust: B's new Bergen is shared; A busts that one key; B stops serving it, and its
        // Oslo stays.
        #expect(await b.ask("flush") == "ok")
        let bergenByB = try #require(await b.ask("forecast Bergen"))
        let osloByB = try #require(await b.ask("forecast Oslo"))
        #expect(await a.ask("forecast Bergen") == bergenByB, "A is served B's Bergen from S3")
        #expect(await a.ask("bust Bergen") == "ok")
        #expect(await a.ask("flush") == "ok")
        let (bergenAfter, _) = try await self.poll(b, "forecast Bergen", within: .seconds(10)) { $0 != bergenByB }
        #expect(bergenAfter != bergenByB, "B still serves a key busted on A")
        #expect(await b.ask("forecast Oslo") == osloByB, "a key bust removes that key only")

        // bustAll on B reaches A.
        let osloOnA = try #require(await a.ask("forecast Oslo"))
        #expect(await b.ask("bust-all") == "ok")
        #expect(await b.ask("flush") == "ok")
        let (osloAfterAll, _) = try await self.poll(a, "forecast Oslo", within: .seconds(10)) { $0 != osloOnA }
        #expect(osloAfterAll != osloOnA, "A still serves an entry after bustAll on B")
    }

    @Test(
        "After a bustAll in the bucket's log, new processes serve what their SQLite file and the bucket hold, with 0 loads"
    )
    func newProcessesServeWhatTheyHold() async throws {
        let bucket = S3TestServer.uniqueBucket("shared")
        let cities = (0..<6).map { "City\($0)" }
        // A busts everything (the log now holds a bustAll), then computes and shares the cities.
        let a = try self.machine("a", bucket: bucket, pollMilliseconds: 0)
        #expect(await a.ask("bust-all") == "ok")
        #expect(await a.ask("flush") == "ok")
        var computed: [String] = []
        for city in cities { computed.append(try #require(await a.ask("forecast \(city)"))) }
        #expect(await a.ask("flush") == "ok")
        #expect(await a.ask("quit") == "bye")
        _ = try await a.wait()
        // New processes on A's SQLite file, one after another: each is served by SQLite.
        for round in 0..<3 {
            let again = try self.machine("a", bucket: bucket, pollMilliseconds: 0)
            defer { again.kill(signal: SIGKILL) }
            for (city, value) in zip(cities, computed) {
                #expect(await again.ask("forecast \(city)") == value, "round \(round): \(city) was loaded again")
            }
            #expect(try #require(await again.ask("stats")).contains("loads=0"))
            #expect(await again.ask("quit") == "bye")
            _ = try await again.wait()
        }
        // Another machine (its own SQLite file) is served by the bucket.
        let b = try self.machine("b", bucket: bucket, pollMilliseconds: 0)
        defer { b.kill(signal: SIGKILL) }
        for (city, value) in zip(cities, computed) {
            #expect(await b.ask("forecast \(city)") == value, "the other machine loaded \(city) again")
        }
        let stats = try #require(await b.ask("stats"))
        #expect(stats.contains("loads=0") && stats.contains("s3hits=\(cities.count)"), "\(stats)")
    }

    @Test("An unsigned machine's objects are refused by signed machines, counted, and never copied into their SQLite")
    func unsignedMachinesAreRefused() async throws {
        let bucket = S3TestServer.uniqueBucket("shared")
        let rogue = try self.machine("rogue", bucket: bucket, pollMilliseconds: 0, keys: nil)
        defer { rogue.kill(signal: SIGKILL) }
        let forged = try #require(await rogue.ask("forecast Oslo"))
        #expect(await rogue.ask("flush") == "ok")
        let team = try self.machine("team", bucket: bucket, pollMilliseconds: 0)
        defer { team.kill(signal: SIGKILL) }
        let served = try #require(await team.ask("forecast Oslo"))
        #expect(served != forged)
        #expect(try #require(await team.ask("stats")).contains("untrusted=1"))
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000) }

    @Test("A value made before a bust elsewhere is neither uploaded nor served after it")
    func valuesOlderThanABustStayOut() async throws {
        let bucket = S3TestServer.uniqueBucket("shared")
        var configuration = try S3TestServer.tierConfiguration(bucket: bucket)
        configuration.invalidationPollInterval = nil
        let a = try S3Tier(configuration: configuration)
        let b = try S3Tier(configuration: configuration)
        let key = CacheKey(namespace: "f", rawValue: "f/" + String(repeating: "ab", count: 32))
        func envelope(_ text: String, madeAt: Int64) -> [UInt8] {
            BlobEnvelope(contentType: .text, payload: Array(text.utf8), createdAtMilliseconds: madeAt).encoded()
        }
        // B computed a value a minute ago; A busts the id now; B's upload comes after the bust.
        try await a.apply([.removeNamespace("f")])
        _ = try await b.newInvalidations()
        try await b.apply([
            .store(key: key, blob: envelope("old", madeAt: Self.now() - 60_000), expiresAtMilliseconds: nil)
        ])
        #expect(try await a.allObjectKeys().isEmpty, "a value made before the bust was uploaded after it")
        // A value made after the bust is shared.
        try await b.apply([.store(key: key, blob: envelope("new", madeAt: Self.now() + 1), expiresAtMilliseconds: nil)])
        #expect(try await a.blob(forKey: key) != nil)
        // A key bust; then an object made before it lands (an upload racing the bust): not served.
        try await a.apply([.remove(key)])
        let client = try S3TestServer.client(bucket: bucket)
        try await client.put(key: b.objectKey(for: key), body: envelope("raced", madeAt: Self.now() - 60_000))
        let invalidations = try await b.newInvalidations()
        #expect(invalidations.map(\.scope) == [.key(key)], "B learns of the key bust")
        #expect(try await b.blob(forKey: key) == nil, "an object made before the key bust was served")
        // Plain keys of any length and bytes travel through the log intact.
        let longKey = String(repeating: "k/ü %", count: 200)
        try await a.apply([.remove(CacheKey(rawValue: longKey))])
        #expect(try await b.newInvalidations().map(\.scope) == [.key(CacheKey(rawValue: longKey))])
        try await a.close()
        try await b.close()
    }

    @Test("An idle cache sends one LIST per poll interval, and nothing else")
    func idlePollCost() async throws {
        let empty = "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"
        let server = try LoopbackHTTPServer.canned(status: 200, body: empty)
        defer { server.close() }
        let settings = try S3TestServer.settings()
        var tier = S3Tier.Configuration(
            bucket: "idle", prefix: "v1", endpoint: server.endpoint, credentials: settings.credentials)
        tier.invalidationPollInterval = .milliseconds(100)
        var configuration = TieredCache.Configuration()
        configuration.sqlite = .init(path: self.directory.path("idle.sqlite"))
        configuration.remote = try S3Tier(configuration: tier)
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        // Watch until the cache has polled a few times (a loaded machine only polls less often).
        let clock = ContinuousClock()
        let start = clock.now
        while server.requests.count < 4, clock.now - start < .seconds(20) {
            try await Task.sleep(for: .milliseconds(50))
        }
        let elapsed = clock.now - start
        try await cache.close()
        let requests = server.requests
        #expect(requests.count >= 4, "the cache did not keep polling")
        #expect(requests.count <= Int(elapsed / .milliseconds(100)) + 2, "\(requests.count) requests in \(elapsed)")
        #expect(requests.allSatisfy { $0.method == "GET" && $0.target.contains("list-type=2") })
        #expect(requests.allSatisfy { $0.target.contains("prefix=v1%2F_invalidations%2F") })
    }

    @Test("A bucket that does not exist yet has an empty invalidation log, not a failing one")
    func noBucketYet() async throws {
        var tier = try S3TestServer.tierConfiguration(bucket: S3TestServer.uniqueBucket("new"))
        tier.invalidationPollInterval = nil
        var configuration = TieredCache.Configuration()
        configuration.sqlite = .init(path: self.directory.path("new-bucket.sqlite"))
        configuration.remote = try S3Tier(configuration: tier)
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        #expect(try await cache.synchronizeInvalidations() == 0)
        #expect(cache.statistics.invalidationPollFailures == 0)
        // The first write creates the bucket; a bust in it then reaches a second cache.
        try await cache.set("v", forKey: "k")
        try await cache.removeValue(forKey: "k")
        try await cache.flush()
        let other = try S3Tier(configuration: tier)
        #expect(try await other.newInvalidations().map(\.scope) == [.key(CacheKey(rawValue: "k"))])
        try await other.close()
        try await cache.close()
    }
}
