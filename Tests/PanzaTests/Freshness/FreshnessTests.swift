import Foundation
import Synchronization
import Testing

@testable import Panza

/// Stale-while-revalidate, fail-safe, soft and hard timeouts and refresh-ahead, on a manual
/// clock: time moves only when a test moves it, and nothing sleeps.
@Suite(.timeLimit(.minutes(2)))
struct FreshnessTests {
    let directory: TemporaryDirectory
    let clock = ManualCacheClock(nowMilliseconds: 1_800_000_000_000)

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    func cache(memory: MemoryTier.Configuration? = .init(), file: String = "cache.sqlite") async throws -> TieredCache {
        try await makeCache(in: self.directory, memory: memory, file: file) { $0.clock = self.clock }
    }

    /// A loader whose answers a test scripts: each call takes the next answer, optionally waiting
    /// on a gate first.
    final class ScriptedLoader: Sendable {
        enum Answer: Sendable {
            case value(String)
            case failure(String)
            case gated(Gate, String)
            /// Waits until cancelled, then records it.
            case hangs
        }

        private let answers: Mutex<[Answer]>
        let calls = CallCounter()
        /// A gate per call, opened when the call starts.
        private let started = (0..<8).map { _ in Gate() }
        let cancelled = Atomic<Bool>(false)

        init(_ answers: [Answer]) { self.answers = Mutex(answers) }

        /// Returns once call `number` (from 1) has started.
        func waitForCall(_ number: Int) async { await self.started[number - 1].wait() }

        func callAsFunction() async throws -> String {
            let number = self.calls.increment()
            let answer = self.answers.withLock { $0.isEmpty ? .failure("no more answers") : $0.removeFirst() }
            if number <= self.started.count { self.started[number - 1].open() }
            switch answer {
            case .value(let value): return value
            case .failure(let message): throw TestError(message: message)
            case .gated(let gate, let value):
                await gate.wait()
                return value
            case .hangs:
                while !Task.isCancelled { await Task.yield() }
                self.cancelled.store(true, ordering: .relaxed)
                throw CancellationError()
            }
        }
    }

    @Test("Stale-while-revalidate: a stale entry is returned at once, one refresh replaces it in every tier")
    func staleWhileRevalidate() async throws {
        let policy = Freshness(staleFor: .seconds(3600))
        let cache = try await self.cache()
        let gate = Gate()
        let loader = ScriptedLoader([.value("v1"), .gated(gate, "v2")])
        #expect(try await cache.load(under: policy, from: loader) == "v1")
        self.clock.advance(by: .seconds(61))
        // Fifty callers while the refresh is held: all get v1 at once, one refresh runs.
        for _ in 0..<50 {
            #expect(try await cache.load(under: policy, from: loader) == "v1")
        }
        await loader.waitForCall(2)
        #expect(loader.calls.value == 2)
        gate.open()
        await cache.waitForRefreshes()
        let statistics = cache.statistics
        #expect(statistics.staleHits == 50)
        #expect(statistics.refreshes == 1)
        #expect(try await cache.load(under: policy, from: loader) == "v2")
        #expect(loader.calls.value == 2)
        try await cache.close()
        // SQLite holds the refreshed value, fresh for 60 s from the refresh.
        let reader = try await self.cache()
        #expect(try await reader.value(forKey: "k", as: String.self) == "v2")
        try await reader.close()
    }

    @Test("Without a policy, an entry past its time to live is a miss, though kept for callers that accept it")
    func staleIsAMissWithoutPolicy() async throws {
        let cache = try await self.cache()
        let loader = ScriptedLoader([.value("v1"), .value("v2")])
        _ = try await cache.value(forKey: "k", timeToLive: .seconds(60), freshness: Freshness(staleFor: .seconds(600)))
        {
            try await loader()
        }
        self.clock.advance(by: .seconds(61))
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        #expect(try await cache.value(forKey: "k", timeToLive: .seconds(60)) { try await loader() } == "v2")
        #expect(cache.statistics.staleHits == 0)
        // Past the stale period, even a caller that accepts stale entries loads.
        self.clock.advance(by: .seconds(61 + 600))
        let late = ScriptedLoader([.value("v3")])
        #expect(
            try await cache.value(forKey: "k", timeToLive: .seconds(60), freshness: Freshness(staleFor: .seconds(600)))
            {
                try await late()
            } == "v3")
        try await cache.close()
    }

    @Test("Fail-safe: a failed load answers with the stale entry within failSafeFor, and the error after it")
    func failSafe() async throws {
        let policy = Freshness(
            failSafeFor: .seconds(3600), failSafeExcludes: { ($0 as? TestError)?.message == "fatal" })
        let cache = try await self.cache()
        let loader = ScriptedLoader([.value("v1"), .failure("down"), .failure("fatal"), .failure("down")])
        _ = try await cache.load(under: policy, from: loader)
        self.clock.advance(by: .seconds(61))
        #expect(try await cache.load(under: policy, from: loader) == "v1")
        #expect(cache.statistics.failSafeActivations == 1)
        #expect(cache.statistics.loadFailures == 1)
        // Within the key's backoff after a failure, a fail-safe caller gets the stale entry without
        // a load (an outage does not make every call wait for a load expected to fail).
        #expect(try await cache.load(under: policy, from: loader) == "v1")
        #expect(cache.statistics.backedOffLoads == 1)
        self.clock.advance(by: .seconds(2))
        await #expect(throws: TestError(message: "fatal")) {
            try await cache.load(under: policy, from: loader)
        }
        self.clock.advance(by: .seconds(3600))
        await #expect(throws: TestError(message: "down")) {
            try await cache.load(under: policy, from: loader)
        }
        #expect(cache.statistics.failSafeActivations == 2)
        try await cache.close()
    }

    @Test(
        "During a key's backoff, a caller whose fail-safe excludes the last failure's error loads instead of the stale entry"
    )
    func backoffAsksAboutTheLastError() async throws {
        let policy = Freshness(
            failSafeFor: .seconds(3600), failSafeExcludes: { ($0 as? TestError)?.message == "fatal" })
        let cache = try await self.cache()
        let loader = ScriptedLoader([.value("v1"), .failure("fatal"), .value("v2")])
        _ = try await cache.load(under: policy, from: loader)
        self.clock.advance(by: .seconds(61))
        await #expect(throws: TestError(message: "fatal")) {
            try await cache.load(under: policy, from: loader)
        }
        // Still within the backoff: the error that started it is one the policy never covers.
        #expect(try await cache.load(under: policy, from: loader) == "v2")
        #expect(cache.statistics.backedOffLoads == 0)
        #expect(cache.statistics.failSafeActivations == 0)
        try await cache.close()
    }

    @Test("Fail-safe from SQLite: a new process with a stale copy on disk answers with it when the API is down")
    func failSafeFromSQLite() async throws {
        let policy = Freshness(failSafeFor: .seconds(3600))
        let writer = try await self.cache()
        _ = try await writer.value(forKey: "k", timeToLive: .seconds(60), freshness: policy) { "v1" }
        try await writer.close()
        self.clock.advance(by: .seconds(120))
        let reader = try await self.cache(memory: nil)
        let loader = ScriptedLoader([.failure("down")])
        #expect(try await reader.load(under: policy, from: loader) == "v1")
        #expect(reader.statistics.failSafeActivations == 1)
        try await reader.close()
    }

    @Test("Soft timeout: a slow load answers with the stale entry, then finishes and stores in the background")
    func softTimeout() async throws {
        let policy = Freshness(failSafeFor: .seconds(3600), softTimeout: .milliseconds(200))
        let cache = try await self.cache()
        let gate = Gate()
        let loader = ScriptedLoader([.value("v1"), .gated(gate, "v2")])
        _ = try await cache.load(under: policy, from: loader)
        self.clock.advance(by: .seconds(61))
        let call = await cache.startLoad(under: policy, from: loader, untilCall: 2)
        await self.clock.waitForSleepers(1)
        self.clock.advance(by: .milliseconds(200))
        #expect(try await call.value == "v1")
        #expect(cache.statistics.softTimeouts == 1)
        gate.open()
        // The next call joins the load if it still runs, or finds its stored result.
        #expect(try await cache.load(under: policy, from: loader) == "v2")
        #expect(loader.calls.value == 2)
        try await cache.close()
    }

    @Test("Hard timeout: the caller gets timedOut and the loader is cancelled; with fail-safe, the stale entry")
    func hardTimeout() async throws {
        let cache = try await self.cache()
        let policy = Freshness(hardTimeout: .seconds(10))
        let loader = ScriptedLoader([.hangs])
        let call = await cache.startLoad(under: policy, from: loader, untilCall: 1)
        await self.clock.waitForSleepers(1)
        self.clock.advance(by: .seconds(10))
        await #expect {
            try await call.value
        } throws: { ($0 as? PanzaError)?.code == .timedOut }
        #expect(cache.statistics.hardTimeouts == 1)
        #expect(await eventually { loader.cancelled.load(ordering: .relaxed) }, "the loader was not cancelled")

        let safe = Freshness(failSafeFor: .seconds(3600), hardTimeout: .seconds(10))
        _ = try await cache.value(forKey: "s", timeToLive: .seconds(60), freshness: safe) { "old" }
        self.clock.advance(by: .seconds(61))
        let hanging = ScriptedLoader([.hangs])
        let fallback = Task {
            try await cache.load("s", under: safe, from: hanging)
        }
        await hanging.waitForCall(1)
        await self.clock.waitForSleepers(1)
        self.clock.advance(by: .seconds(10))
        #expect(try await fallback.value == "old")
        #expect(cache.statistics.failSafeActivations == 1)
        try await cache.close()
    }

    @Test("Hard timeout with completesInBackground: the load goes on and stores its result")
    func hardTimeoutCompletesInBackground() async throws {
        let cache = try await self.cache()
        let policy = Freshness(hardTimeout: .seconds(10), completesInBackground: true)
        let gate = Gate()
        let loader = ScriptedLoader([.gated(gate, "late")])
        let call = await cache.startLoad(under: policy, from: loader, untilCall: 1)
        await self.clock.waitForSleepers(1)
        self.clock.advance(by: .seconds(10))
        await #expect { try await call.value } throws: { ($0 as? PanzaError)?.code == .timedOut }
        gate.open()
        #expect(try await eventually { try await cache.value(forKey: "k", as: String.self) == "late" })
        #expect(loader.calls.value == 1)
        try await cache.close()
    }

    @Test("Refresh-ahead: a hit in the last 20% of the fresh period refreshes in the background, memoized or not")
    func refreshAhead() async throws {
        let policy = Freshness(refreshAhead: 0.8)
        let cache = try await self.cache()
        let loader = ScriptedLoader([.value("v1"), .value("v2"), .value("m1"), .value("m2")])
        _ = try await cache.load(ttl: .seconds(100), under: policy, from: loader)
        self.clock.advance(by: .seconds(79))
        #expect(try await cache.load(ttl: .seconds(100), under: policy, from: loader) == "v1")
        await cache.waitForRefreshes()
        #expect(loader.calls.value == 1)
        self.clock.advance(by: .seconds(2))
        #expect(try await cache.load(ttl: .seconds(100), under: policy, from: loader) == "v1")
        await cache.waitForRefreshes()
        #expect(loader.calls.value == 2)
        #expect(try await cache.load(ttl: .seconds(100), under: policy, from: loader) == "v2")

        let memoized = cache.memoize(id: "ahead", timeToLive: .seconds(100), freshness: policy) { (_: Int) in
            try await loader()
        }
        #expect(try await memoized(1) == "m1")
        self.clock.advance(by: .seconds(81))
        #expect(try await memoized(1) == "m1")
        await cache.waitForRefreshes()
        #expect(try await memoized(1) == "m2")
        #expect(cache.statistics.refreshes == 2)
        try await cache.close()
    }

    @Test("A refresh that fails keeps the stale entry, is counted, and the next stale hit tries again")
    func failedRefresh() async throws {
        let policy = Freshness(staleFor: .seconds(3600))
        let cache = try await self.cache()
        let loader = ScriptedLoader([.value("v1"), .failure("down"), .value("v2")])
        _ = try await cache.load(under: policy, from: loader)
        self.clock.advance(by: .seconds(61))
        #expect(try await cache.load(under: policy, from: loader) == "v1")
        await cache.waitForRefreshes()
        #expect(cache.statistics.refreshFailures == 1)
        // Within the key's backoff no refresh starts; after it, the next stale hit tries again.
        #expect(try await cache.load(under: policy, from: loader) == "v1")
        await cache.waitForRefreshes()
        #expect(cache.statistics.backedOffLoads == 1)
        self.clock.advance(by: .seconds(2))
        #expect(try await cache.load(under: policy, from: loader) == "v1")
        await cache.waitForRefreshes()
        #expect(cache.statistics.refreshes == 1)
        #expect(try await cache.load(under: policy, from: loader) == "v2")
        try await cache.close()
    }

    @Test("A refresh never lands over a set or a removal made while it loaded")
    func refreshYieldsToNewerWrites() async throws {
        let policy = Freshness(staleFor: .seconds(3600))
        let cache = try await self.cache()
        for (key, write) in [("set", true), ("removed", false)] {
            let gate = Gate()
            let loader = ScriptedLoader([.value("v1"), .gated(gate, "refreshed")])
            _ = try await cache.load(key, under: policy, from: loader)
            self.clock.advance(by: .seconds(61))
            #expect(try await cache.load(key, under: policy, from: loader) == "v1")
            await loader.waitForCall(2)
            if write {
                try await cache.set("newer", forKey: key)
            } else {
                try await cache.removeValue(forKey: key)
            }
            gate.open()
            await cache.waitForRefreshes()
            #expect(try await cache.value(forKey: key, as: String.self) == (write ? "newer" : nil))
        }
        try await cache.close()
        let reader = try await self.cache()
        #expect(try await reader.value(forKey: "set", as: String.self) == "newer")
        #expect(try await reader.value(forKey: "removed", as: String.self) == nil)
        try await reader.close()
    }

    @Test(
        "Two caches on one SQLite file: one refresh of a key at a time (a lease), and a newer write of the other wins")
    func refreshLeaseAcrossCaches() async throws {
        let policy = Freshness(staleFor: .seconds(3600))
        let first = try await self.cache(memory: nil)
        let second = try await self.cache(memory: nil)
        _ = try await first.value(forKey: "k", timeToLive: .seconds(60), freshness: policy) { "v1" }
        try await first.flush()
        self.clock.advance(by: .seconds(61))
        let gate = Gate()
        let loader = ScriptedLoader([.gated(gate, "refreshed")])
        #expect(try await first.load(under: policy, from: loader) == "v1")
        await loader.waitForCall(1)
        let other = ScriptedLoader([.value("other")])
        #expect(try await second.load(under: policy, from: other) == "v1")
        await second.waitForRefreshes()
        #expect(other.calls.value == 0, "the second cache refreshed a key whose lease the first holds")
        // The second cache stores a newer value while the first still loads: it stays.
        try await second.set("newer", forKey: "k", timeToLive: .seconds(60))
        try await second.flush()
        gate.open()
        await first.waitForRefreshes()
        try await first.flush()
        #expect(first.statistics.refreshes == 1)
        #expect(try await first.value(forKey: "k", as: String.self) == "newer")
        try await first.close()
        try await second.close()
    }

    @Test("Two processes on one SQLite file, both serving a stale entry: one refreshes it, the other does not")
    func refreshLeaseAcrossProcesses() async throws {
        let path = self.directory.path("cache.sqlite")
        let writer = try await self.cache()
        _ = try await writer.value(
            forKey: "k", timeToLive: .seconds(60), freshness: Freshness(staleFor: .seconds(3600))
        ) {
            "v1"
        }
        try await writer.close()
        // Both processes' clocks stand 61 s later: the entry is stale for them.
        let later = "\(self.clock.nowMilliseconds() + 61_000)"
        let first = try ChildProcess.start(["refresh", path, later])
        let second = try ChildProcess.start(["refresh", path, later])
        #expect(await first.ask("get k") == "v1")
        #expect(await first.ask("loading") == "loading", "the first process did not start its refresh")
        #expect(await second.ask("get k") == "v1")
        #expect(await second.ask("settle") == "loads=0 refreshes=0", "the second process refreshed too")
        #expect(await first.ask("go") == "ok")
        #expect(await first.ask("settle") == "loads=1 refreshes=1")
        #expect(await first.ask("quit") == "bye")
        #expect(await second.ask("quit") == "bye")
        _ = try await first.wait()
        _ = try await second.wait()
        self.clock.advance(by: .seconds(62))
        let reader = try await self.cache()
        let refreshed = try await reader.value(forKey: "k", as: String.self)
        #expect(refreshed?.hasPrefix("refreshed-") == true, "\(refreshed ?? "nil")")
        try await reader.close()
    }

    @Test("A caller cancelled while it waits for a load stops at once; the load stores its result for the others")
    func cancelledCaller() async throws {
        let policy = Freshness(failSafeFor: .seconds(3600), softTimeout: .seconds(5))
        let cache = try await self.cache()
        let gate = Gate()
        let loader = ScriptedLoader([.value("v1"), .gated(gate, "v2")])
        _ = try await cache.load(under: policy, from: loader)
        self.clock.advance(by: .seconds(61))
        let call = await cache.startLoad(under: policy, from: loader, untilCall: 2)
        call.cancel()
        await #expect(throws: CancellationError.self) { try await call.value }
        gate.open()
        #expect(try await eventually { try await cache.value(forKey: "k", as: String.self) == "v2" })
        #expect(loader.calls.value == 2)
        try await cache.close()
    }

    @Test("The stale period travels in the envelope: a second cache honours the writer's policy")
    func stalePeriodInEnvelope() async throws {
        let writer = try await self.cache()
        _ = try await writer.value(forKey: "k", timeToLive: .seconds(60), freshness: Freshness(staleFor: .seconds(600)))
        {
            "v1"
        }
        try await writer.close()
        let blob = try #require(
            try await SQLiteTier.open(configuration: .init(path: self.directory.path("cache.sqlite"))).storedBlob(
                forKey: "k"))
        let envelope = try BlobEnvelope.decode(blob)
        #expect(envelope.timeToLiveMilliseconds == 60_000)
        #expect(envelope.staleForMilliseconds == 600_000)
        self.clock.advance(by: .seconds(61))
        let reader = try await self.cache()
        let loader = ScriptedLoader([.value("v2")])
        #expect(
            try await reader.value(forKey: "k", timeToLive: .seconds(60), freshness: Freshness(staleFor: .seconds(600)))
            {
                try await loader()
            } == "v1")
        await reader.waitForRefreshes()
        #expect(loader.calls.value == 1)
        try await reader.close()
    }

    @Test("The SQLite tier expires entries by the cache's clock, not the wall clock")
    func sqliteExpiresByTheCacheClock() async throws {
        // A clock years behind the wall clock: by the wall clock every entry has long expired.
        let past = ManualCacheClock(nowMilliseconds: 1_000_000_000_000)
        let cache = try await makeCache(in: self.directory, memory: nil, file: "past.sqlite") { $0.clock = past }
        try await cache.set("kept", forKey: "k", timeToLive: .seconds(60))
        try await cache.flush()
        #expect(try await cache.value(forKey: "k", as: String.self) == "kept")
        #expect(
            try await cache.sqliteTier!.removeExpired() == 0, "maintenance deleted an entry fresh by the cache's clock")
        past.advance(by: .seconds(61))
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        #expect(try await cache.sqliteTier!.removeExpired() == 1)
        try await cache.close()
    }

    @Test("Invalid policies are refused with a clear error")
    func invalidPolicies() async throws {
        let cache = try await self.cache()
        for policy in [
            Freshness(staleFor: .seconds(-1)), Freshness(softTimeout: .zero), Freshness(hardTimeout: .seconds(-1)),
            Freshness(refreshAhead: 1.0), Freshness(refreshAhead: 0),
        ] {
            await #expect {
                try await cache.value(forKey: "k", freshness: policy) { "v" }
            } throws: { ($0 as? PanzaError)?.code == .invalidConfiguration }
        }
        var configuration = TieredCache.Configuration()
        configuration.defaultFreshness = Freshness(refreshAhead: 2)
        await #expect { try await TieredCache(configuration: configuration) } throws: {
            ($0 as? PanzaError)?.code == .invalidConfiguration
        }
        try await cache.close()
    }
}

extension TieredCache {
    /// The read-through call these tests make: `key`, living `ttl`, under `policy`, loaded by `loader`.
    fileprivate func load(
        _ key: String = "k",
        ttl: Duration = .seconds(60),
        under policy: Freshness,
        from loader: FreshnessTests.ScriptedLoader
    ) async throws -> String {
        try await self.value(forKey: key, timeToLive: ttl, freshness: policy) { try await loader() }
    }

    /// Starts ``load(_:ttl:under:from:)`` in a task and returns it once the loader has been called
    /// `call` times in all (the load under test is running).
    fileprivate func startLoad(
        under policy: Freshness,
        from loader: FreshnessTests.ScriptedLoader,
        untilCall call: Int
    ) async -> Task<String, any Error> {
        let task = Task { try await self.load(under: policy, from: loader) }
        await loader.waitForCall(call)
        return task
    }
}
