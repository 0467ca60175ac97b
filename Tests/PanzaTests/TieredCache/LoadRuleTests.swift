import Foundation
import Synchronization
import Testing

@testable import Panza

/// The load rule ("a result is kept only if nothing newer happened to its key while it loaded"),
/// the close fence, limits re-entrancy and the bounds of memory, each through the public API with
/// gated loaders.
@Suite(.timeLimit(.minutes(2)))
struct LoadRuleTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    @Test("A bust made while a load is in flight sticks: the next call loads again, the old result is not stored")
    func bustDuringLoadSticks() async throws {
        let cache = try await makeCache(in: self.directory)
        let gate = Gate()
        let calls = CallCounter()
        let f = cache.memoize(id: "f") { (x: Int) async throws -> String in
            let call = calls.increment()
            if call == 1 { await gate.wait() }
            return "answer \(call)"
        }
        let first = Task { try await f(1) }
        #expect(await eventually { calls.value == 1 })
        try await f.bust(1)
        // Called after the bust: a new flight, not the old one.
        #expect(try await f(1) == "answer 2")
        gate.open()
        #expect(try await first.value == "answer 1", "a caller before the bust gets the old flight's result")
        #expect(try await f(1) == "answer 2", "the old result was not stored over the new one")
        #expect(try await f.peek(1) == "answer 2")
        #expect(cache.statistics.discardedLoads == 1)
        try await cache.flush()
        try await cache.close()
        let reopened = try await makeCache(in: self.directory)
        #expect(try await reopened.value(forKey: try f.key(1).rawValue, as: String.self) == "answer 2")
        try await reopened.close()
    }

    @Test("An eviction or expiry pass during a load does not refuse its store: the value paid for reaches SQLite")
    func maintenanceDuringLoadKeepsTheResult() async throws {
        let clock = ManualCacheClock()
        let cache = try await makeCache(in: self.directory) { $0.clock = clock }
        try await cache.set("short-lived", forKey: "other", timeToLive: .seconds(1))
        try await cache.flush()
        clock.advance(by: .seconds(2))
        let gate = Gate()
        let started = CallCounter()
        let load = Task {
            try await cache.value(forKey: "k") { () async throws -> String in
                started.increment()
                await gate.wait()
                return "paid for"
            }
        }
        #expect(await eventually { started.value == 1 })
        // Another key's expired row is deleted meanwhile (a maintenance pass of any process).
        #expect(try await cache.sqliteTier!.removeExpired() == 1)
        gate.open()
        #expect(try await load.value == "paid for")
        try await cache.flush()
        #expect(cache.statistics.discardedLoads == 0)
        try await cache.close()
        let reader = try await makeCache(in: self.directory, memory: nil) { $0.clock = clock }
        #expect(try await reader.value(forKey: "k", as: String.self) == "paid for")
        try await reader.close()
    }

    @Test("A removal by another process during a load that found only a stale copy wins over the load")
    func otherProcessRemovalDuringLoadOverStaleCopy() async throws {
        let clock = ManualCacheClock()
        let cache = try await makeCache(in: self.directory) { $0.clock = clock }
        let other = try await makeCache(in: self.directory, memory: nil) { $0.clock = clock }
        let lenient = Freshness(staleFor: .seconds(3600))
        _ = try await cache.value(forKey: "k", timeToLive: .seconds(1), freshness: lenient) { "v1" }
        try await cache.flush()
        clock.advance(by: .seconds(2))
        // A caller without a stale policy: SQLite holds only a stale copy, so no miss stamp.
        let gate = Gate()
        let started = CallCounter()
        let load = Task {
            try await cache.value(forKey: "k", timeToLive: .seconds(1)) { () async throws -> String in
                started.increment()
                await gate.wait()
                return "v2"
            }
        }
        #expect(await eventually { started.value == 1 })
        try await other.removeValue(forKey: "k")
        gate.open()
        #expect(try await load.value == "v2")
        try await cache.flush()
        #expect(try await other.value(forKey: "k", as: String.self) == nil, "the load's result outlived the removal")
        try await cache.close()
        try await other.close()
    }

    @Test("Another process deleting a damaged copy during a load does not refuse the load's store")
    func otherProcessRepairDuringLoadKeepsTheResult() async throws {
        let cache = try await makeCache(in: self.directory)
        let other = try await makeCache(in: self.directory, memory: nil)
        let sqlite = try #require(cache.sqliteTier)
        let gate = Gate()
        let started = CallCounter()
        let load = Task {
            try await cache.value(forKey: "k") { () async throws -> String in
                started.increment()
                await gate.wait()
                return "paid for"
            }
        }
        #expect(await eventually { started.value == 1 })
        // Meanwhile a damaged row of the key appears (a torn write of some process) ...
        try await sqlite.applyWrites([
            SQLiteWrite(
                operation: .store(key: CacheKey(rawValue: "k"), blob: Array("damaged".utf8), expiresAtMilliseconds: nil)
            )
        ])
        // ... and another process finds it and deletes it: a repair, which invalidates nothing.
        #expect(try await other.value(forKey: "k", as: String.self) == nil)
        try await other.flush()
        #expect(try await sqlite.storedBlob(forKey: "k") == nil, "the damaged copy was not deleted")
        gate.open()
        #expect(try await load.value == "paid for")
        try await cache.flush()
        #expect(cache.statistics.discardedLoads == 0)
        #expect(try await other.value(forKey: "k", as: String.self) == "paid for", "the load's store was refused")
        try await cache.close()
        try await other.close()
    }

    @Test("A repair of a copy found expired deletes only that copy, never a newer value stored since")
    func repairDeletesOnlyTheCopyItFound() async throws {
        let clock = ManualCacheClock()
        let cache = try await makeCache(in: self.directory, memory: nil) { $0.clock = clock }
        let sqlite = try #require(cache.sqliteTier)
        try await cache.set("old", forKey: "k", timeToLive: .seconds(1))
        try await cache.flush()
        clock.advance(by: .seconds(2))
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        // Another process replaced the expired copy between that lookup and its repair: the
        // repair is applied after the newer row landed (as the lookup's queue would apply it).
        let (contentType, payload) = try ValueCoding.encode("new")
        let newer = BlobEnvelope(
            contentType: contentType, payload: payload, createdAtMilliseconds: clock.nowMilliseconds(),
            timeToLiveMilliseconds: 60_000
        ).encoded()
        try await sqlite.applyWrites([
            SQLiteWrite(
                operation: .store(
                    key: CacheKey(rawValue: "k"), blob: newer, expiresAtMilliseconds: clock.nowMilliseconds() + 60_000)),
            SQLiteWrite(
                operation: .remove(CacheKey(rawValue: "k")), createdBefore: clock.nowMilliseconds() - 2_000 + 1,
                isRepair: true),
        ])
        #expect(try await cache.value(forKey: "k", as: String.self) == "new", "the repair deleted a newer value")
        try await cache.close()
    }

    @Test("A soft timeout while the lookup waits for a slow remote tier leaves the load to start and store")
    func softTimeoutDuringRemoteRead() async throws {
        let clock = ManualCacheClock()
        let remote = RecordingTier()
        let cache = try await makeCache(in: self.directory) {
            $0.clock = clock
            $0.remote = remote
            $0.remoteReadTimeout = .seconds(30)
            $0.remoteCloseTimeout = .milliseconds(100)
        }
        let policy = Freshness(failSafeFor: .seconds(3600), softTimeout: .milliseconds(50))
        _ = try await cache.value(forKey: "k", timeToLive: .seconds(1), freshness: policy) { "old" }
        try await cache.flush()
        clock.advance(by: .seconds(2))
        remote.state.withLock { $0.readDelay = .milliseconds(300) }
        let calls = CallCounter()
        let caller = Task {
            try await cache.value(forKey: "k", timeToLive: .seconds(1), freshness: policy) {
                () async throws -> String in
                calls.increment()
                return "new"
            }
        }
        await clock.waitForSleepers(1)
        clock.advance(by: .milliseconds(60))
        #expect(try await caller.value == "old", "the soft timeout answers with the stale copy")
        // The flight was not cancelled with the caller's wait: its remote read ends, and it loads.
        #expect(await eventually { calls.value == 1 }, "no load started after the soft timeout")
        #expect(await eventually { (try? await cache.value(forKey: "k", as: String.self)) == "new" })
        #expect(cache.statistics.tiers["remote"]?.timeouts == 0)
        try? await cache.close()
    }

    @Test("A set made while a load is in flight wins over the load's result")
    func setDuringLoadWins() async throws {
        let cache = try await makeCache(in: self.directory)
        let gate = Gate()
        let started = CallCounter()
        let load = Task {
            try await cache.value(forKey: "k") { () async throws -> String in
                started.increment()
                await gate.wait()
                return "loaded"
            }
        }
        #expect(await eventually { started.value == 1 })
        try await cache.set("set", forKey: "k")
        gate.open()
        #expect(try await load.value == "loaded")
        #expect(try await cache.value(forKey: "k", as: String.self) == "set")
        try await cache.flush()
        try await cache.close()
        let reopened = try await makeCache(in: self.directory, memory: nil)
        #expect(try await reopened.value(forKey: "k", as: String.self) == "set")
        try await reopened.close()
    }

    @Test("A bust of everything during a load detaches the flight and refuses its store")
    func bustAllDuringLoad() async throws {
        let cache = try await makeCache(in: self.directory)
        let gate = Gate()
        let calls = CallCounter()
        let f = cache.memoize(id: "g") { (x: Int) async throws -> Int in
            let call = calls.increment()
            if call == 1 { await gate.wait() }
            return call
        }
        let first = Task { try await f(7) }
        #expect(await eventually { calls.value == 1 })
        try await cache.bustAll()
        #expect(try await f(7) == 2)
        gate.open()
        #expect(try await first.value == 1)
        #expect(try await f(7) == 2)
        #expect(cache.fence.watchedKeyCount == 0, "a load watches its key only while it runs")
        try await cache.close()
    }

    @Test("A write that races close() is either refused with .closed or applied: never accepted and lost")
    func writeRacingClose() async throws {
        for round in 0..<20 {
            let file = "race-\(round).sqlite"
            let cache = try await makeCache(in: self.directory, file: file)
            let accepted = AcceptedWrites()
            let writers = (0..<8).map { index in
                Task {
                    do {
                        try await cache.set("v\(index)", forKey: "k\(index)")
                        accepted.list.withLock { $0.append(index) }
                    } catch let error as PanzaError {
                        #expect(error.code == .closed)
                    }
                }
            }
            try await cache.close()
            for writer in writers { try await writer.value }
            let reopened = try await makeCache(in: self.directory, memory: nil, file: file)
            for index in accepted.list.withLock({ $0 }) {
                #expect(
                    try await reopened.value(forKey: "k\(index)", as: String.self) == "v\(index)",
                    "round \(round): set of k\(index) returned, then was lost")
            }
            try await reopened.close()
        }
    }

    @Test("A memoized load that calls another under one cache-wide concurrency limit does not deadlock")
    func nestedLoadsShareAPermit() async throws {
        let cache = try await makeCache(in: self.directory) { $0.loadLimits = .concurrency(2) }
        let inner = cache.memoize(id: "inner") { (x: Int) async throws -> Int in x * 2 }
        let outer = cache.memoize(id: "outer") { (x: Int) async throws -> Int in try await inner(x) + 1 }
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for x in 0..<8 { group.addTask { try await outer(x) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.sorted() == (0..<8).map { $0 * 2 + 1 })
        try await cache.close()
    }

    @Test("One concurrency limiter given cache-wide and per id takes one permit")
    func limiterGivenTwiceCountsOnce() async throws {
        let limits = LoadLimits.concurrency(1)
        let cache = try await makeCache(in: self.directory) { $0.loadLimits = limits }
        let f = cache.memoize(id: "twice", limits: limits) { (x: Int) async throws -> Int in x + 1 }
        #expect(try await f(1) == 2)
        try await cache.close()
    }

    @Test("A RateLimitedError is retried without any LoadLimits")
    func rateLimitedRetriedWithoutLimits() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let value = try await cache.value(forKey: "rl") { () async throws -> String in
            if calls.increment() < 3 { throw RateLimitedError(retryAfter: .milliseconds(1)) }
            return "ok"
        }
        #expect(value == "ok")
        #expect(calls.value == 3)
        #expect(cache.statistics.rateLimitRetries == 2)
        try await cache.close()
    }

    @Test("Memory charges the argument bytes its fast index keeps, and keeps no long arguments")
    func fastKeysAreCharged() async throws {
        let cache = try await makeCache(in: self.directory, memory: .init(maxEntries: 1_000, maxBytes: 1 << 20))
        let echo = cache.memoize(id: "echo") { (prompt: String) async throws -> Int in prompt.count }
        let prompt = String(repeating: "p", count: 600)
        for round in 0..<2 {
            _ = try await echo(prompt)
            _ = round
        }
        let charged = cache.statistics.memoryBytes
        #expect(charged >= 600, "the 600 argument bytes the fast index keeps are charged (\(charged))")
        let long = String(repeating: "q", count: 64 << 10)
        for index in 0..<40 {
            _ = try await echo(long + "\(index)")
            _ = try await echo(long + "\(index)")  // a hit, which would attach its 64 KiB arguments
        }
        #expect(cache.statistics.memoryBytes <= 1 << 20)
        #expect(cache.statistics.memoryBytes < 40 * 1024 + charged + 40 * 200, "long arguments are not kept")
        cache.memory?._checkInvariants()
        try await cache.close()
    }

    @Test("Reading a key with the wrong type below memory throws typeMismatch and deletes nothing")
    func wrongTypeBelowMemory() async throws {
        let writer = try await makeCache(in: self.directory)
        try await writer.set("text", forKey: "typed")
        try await writer.close()
        let reader = try await makeCache(in: self.directory)
        await #expect {
            try await reader.value(forKey: "typed", as: [Int].self)
        } throws: { ($0 as? PanzaError)?.code == .typeMismatch }
        try await reader.flush()
        #expect(try await reader.value(forKey: "typed", as: String.self) == "text")
        await #expect {
            try await reader.value(forKey: "typed", as: [Int].self)
        } throws: { ($0 as? PanzaError)?.code == .typeMismatch }
        try await reader.close()
    }

    @Test("A refresh decided at a stale hit does not overwrite a set made after that hit")
    func refreshDoesNotOverwriteSet() async throws {
        let clock = ManualCacheClock()
        let cache = try await makeCache(in: self.directory) {
            $0.clock = clock
            $0.defaultFreshness = Freshness(staleFor: .seconds(3600))
        }
        let gate = Gate()
        let calls = CallCounter()
        let loader: @Sendable () async throws -> String = {
            let call = calls.increment()
            if call == 2 { await gate.wait() }
            return "load \(call)"
        }
        #expect(try await cache.value(forKey: "r", timeToLive: .seconds(1), loader: loader) == "load 1")
        clock.advance(by: .seconds(2))
        // Stale: served at once, and a refresh starts.
        #expect(try await cache.value(forKey: "r", timeToLive: .seconds(1), loader: loader) == "load 1")
        #expect(await eventually { calls.value == 2 })
        try await cache.set("set", forKey: "r", timeToLive: .seconds(60))
        gate.open()
        await cache.waitForRefreshes()
        #expect(try await cache.value(forKey: "r", as: String.self) == "set")
        #expect(cache.statistics.discardedLoads == 1)
        try await cache.close()
    }

    @Test("A failed refresh backs off: the next stale hits do not start another at once")
    func refreshFailuresBackOff() async throws {
        let clock = ManualCacheClock()
        let cache = try await makeCache(in: self.directory) {
            $0.clock = clock
            $0.defaultFreshness = Freshness(staleFor: .seconds(3600))
        }
        let calls = CallCounter()
        let loader: @Sendable () async throws -> String = {
            if calls.increment() > 1 { throw CancellationError() }
            return "v"
        }
        _ = try await cache.value(forKey: "b", timeToLive: .seconds(1), loader: loader)
        clock.advance(by: .seconds(2))
        for _ in 0..<5 {
            #expect(try await cache.value(forKey: "b", timeToLive: .seconds(1), loader: loader) == "v")
            await cache.waitForRefreshes()
        }
        #expect(calls.value == 2, "one refresh failed; the others waited for its backoff")
        #expect(cache.statistics.backedOffLoads == 4)
        clock.advance(by: .seconds(2))
        _ = try await cache.value(forKey: "b", timeToLive: .seconds(1), loader: loader)
        await cache.waitForRefreshes()
        #expect(calls.value == 3, "after the backoff a refresh is tried again")
        try await cache.close()
    }
}

/// The writes a racing test saw accepted.
final class AcceptedWrites: Sendable {
    let list = Mutex<[Int]>([])
}
