import Foundation
import Synchronization
import Testing

@testable import Panza

/// An entry of the memoized function with freshness policies, as the model knows it.
struct FreshEntry {
    var value: String
    var createdAtMilliseconds: Int64
    /// How long after its time to live the entry is kept: the policy of whoever stored it.
    var retentionMilliseconds: Int64
}

/// The policies of the callers of one key (`r`), each with its own view of a stale entry.
enum FreshPolicy: Int, CaseIterable, CustomStringConvertible {
    /// Stale-while-revalidate for 10 s, fail-safe for 60 s.
    case lenient
    /// No freshness policy: only fresh entries.
    case strict
    /// Fail-safe for 30 s, never served stale at once.
    case failSafeOnly

    var staleFor: Int64 { self == .lenient ? 10_000 : 0 }
    var failSafeFor: Int64 {
        switch self {
        case .lenient: 60_000
        case .strict: 0
        case .failSafeOnly: 30_000
        }
    }
    var retention: Int64 { max(self.staleFor, self.failSafeFor) }

    var freshness: Freshness? {
        switch self {
        case .lenient: Freshness(staleFor: .seconds(10), failSafeFor: .seconds(60))
        case .strict: nil
        case .failSafeOnly: Freshness(failSafeFor: .seconds(30))
        }
    }

    var description: String { ["lenient", "strict", "fail-safe only"][self.rawValue] }
}

/// The seams where mechanisms meet: loads in flight while writes and `close()` happen, background
/// refreshes and the writes that race them, callers of different freshness policies on one key as
/// the clock moves, a loader that hangs, nested memoized calls under one shared limiter.
extension Simulation {
    static let freshTimeToLive: Int64 = 1_000
    static let freshArguments = Array(0..<3)

    // MARK: Loads racing writes

    /// A load held in flight by a gated loader while a set, removal, bust of the key, of its id or
    /// of everything happens. Callers after the write must not join the old flight, and the old
    /// result must not be stored over (or after) the write.
    func loadRacingWriteStep() async throws {
        let memoized = self.random.below(2) == 0
        let argument = self.memoArgument()
        let logical = memoized ? "m:\(argument)" : self.plainKey()
        let key = memoized ? try self.memo(self.cache).key(argument) : CacheKey(rawValue: logical)
        enum Write: Int, CaseIterable { case none, set, remove, bustID, bustAll }
        var write = Write.allCases[self.random.below(Write.allCases.count)]
        if write == .bustID, !memoized { write = .remove }
        let callsAfter = self.random.below(2) == 0
        self.note("load of \(logical) in flight, then \(write)\(callsAfter ? ", then a call" : "")")
        try await self.startFromMiss(logical, key: key)

        let cache = self.cache
        let gate = Gate()
        let started = CallCounter()
        let first = "first-\(self.step)"
        let gated: @Sendable () async throws -> String = {
            started.increment()
            await gate.wait()
            return first
        }
        let firstCall: Task<String, any Error>
        if memoized {
            let f = cache.memoize(id: "m") { (_: Int) async throws -> String in try await gated() }
            firstCall = Task { try await f(argument) }
        } else {
            firstCall = Task { try await cache.value(forKey: logical, loader: gated) }
        }
        try await self.waitUntil(started, reaches: 1, "the gated loader of \(logical) never started")

        let written = "w-\(self.step)"
        switch write {
        case .none: break
        case .set: _ = try await cache.store(written, key: key, timeToLive: nil, replacing: true)
        case .remove: try await cache.remove(.remove(key))
        case .bustID: try await self.memo(cache).bustAll()
        case .bustAll: try await cache.bustAll()
        }
        switch write {
        case .none: break
        case .set: self.model[logical] = written
        case .remove: self.model[logical] = nil
        case .bustID: for argument in Self.memoArguments { self.model["m:\(argument)"] = nil }
        case .bustAll: self.forgetEverything()
        }

        // A call made after the write, with a loader of its own.
        var after: Task<String, any Error>?
        let afterLoads = CallCounter()
        let second = "second-\(self.step)"
        if callsAfter {
            let loader: @Sendable () async throws -> String = {
                afterLoads.increment()
                return second
            }
            if memoized {
                let f = cache.memoize(id: "m") { (_: Int) async throws -> String in try await loader() }
                after = Task { try await f(argument) }
            } else {
                after = Task { try await cache.value(forKey: logical, loader: loader) }
            }
        }
        if let after, write != .none {
            // Not joined to the gated flight: it answers while the gate is still shut.
            let value = try await self.bounded("a call after \(write) of \(logical) waited for the old flight") {
                try await after.value
            }
            let expected = write == .set ? written : second
            try self.check(
                value == expected && afterLoads.value == (write == .set ? 0 : 1),
                "after \(write) during a load, \(logical) = \(value) with \(afterLoads.value) loads, expected \(expected)"
            )
            if write != .set { self.model[logical] = second }
        }
        gate.open()
        let firstValue = try await self.bounded("the gated load of \(logical)") { try await firstCall.value }
        try self.check(firstValue == first, "the caller before \(write) got \(firstValue), not its flight's \(first)")
        if write == .none {
            self.model[logical] = first
            if let after {
                let value = try await self.bounded("a call joined to the flight of \(logical)") {
                    try await after.value
                }
                try self.check(
                    value == first && afterLoads.value == 0,
                    "a call joined to the flight of \(logical) got \(value) with \(afterLoads.value) loads"
                )
            }
        }
        let seen = try await self.read(logical, key: key)
        try self.check(
            seen == self.model[logical],
            "after a load raced \(write), \(logical) = \(seen ?? "nil"), model \(self.model[logical] ?? "nil")"
        )
        try self.check(
            await self.eventuallyTrue { cache.fence.watchedKeyCount == 0 },
            "\(cache.fence.watchedKeyCount) keys still watched after the load ended"
        )
    }

    /// A load in flight while another cache on the file (another process) sets or removes the
    /// key and flushes: the load's caller gets its result, and the file keeps the other cache's
    /// write (a removal by its stamp, a store by its newer creation time).
    func loadRacingOtherProcessStep() async throws {
        let logical = self.plainKey()
        let removes = self.random.below(2) == 0
        self.note("load of \(logical) in flight while the other cache \(removes ? "removes" : "sets") it")
        try await self.startFromMiss(logical, key: CacheKey(rawValue: logical))
        let cache = self.cache
        let gate = Gate()
        let started = CallCounter()
        let first = "first-\(self.step)"
        let load = Task {
            try await cache.value(forKey: logical) { () async throws -> String in
                started.increment()
                await gate.wait()
                return first
            }
        }
        try await self.waitUntil(started, reaches: 1, "the gated loader of \(logical) never started")
        let written = "other-\(self.step)"
        if removes {
            try await self.other.removeValue(forKey: logical)
        } else {
            try await self.other.set(written, forKey: logical)
        }
        try await self.flushUntilDone(self.other)
        gate.open()
        let value = try await self.bounded("the gated load of \(logical)") { try await load.value }
        try self.check(value == first, "the load's caller got \(value), not \(first)")
        try await self.flushUntilDone(cache)
        let sqlite = try #require(cache.tiers.first as? SQLiteTier)
        let key = CacheKey(rawValue: logical)
        let stored = try await sqlite.storedBlob(forKey: logical).map { try Self.decode($0, key) }
        let expected: String? = removes ? nil : written
        try self.check(
            stored == expected,
            "the load that raced another process's \(removes ? "removal" : "set") left \(stored ?? "nil") in SQLite"
        )
        // This cache's memory kept its own load (processes do not invalidate each other's memory):
        // from here the model follows the file.
        cache.memory?.remove(logical)
        self.model[logical] = expected
    }

    /// A load in flight and a write of another key race `close()`: close returns, the write is
    /// either refused with `.closed` or found after reopening, and the load's late result is not
    /// stored.
    func closeDuringLoadStep() async throws {
        let logical = self.plainKey()
        var other = self.plainKey()
        if other == logical {
            other = Self.plainKeys[(Self.plainKeys.firstIndex(of: logical)! + 1) % Self.plainKeys.count]
        }
        self.note("load of \(logical) in flight and a set of \(other) race close(), then reopen")
        try await self.startFromMiss(logical, key: CacheKey(rawValue: logical))
        let cache = self.cache
        let gate = Gate()
        let started = CallCounter()
        let load = Task {
            try await cache.value(forKey: logical) { () async throws -> String in
                started.increment()
                await gate.wait()
                return "late-\(logical)"
            }
        }
        try await self.waitUntil(started, reaches: 1, "the gated loader of \(logical) never started")
        let value = "racing-close-\(self.step)"
        let set = Task { try await cache.set(value, forKey: other) }
        _ = try await self.bounded("close() with a load in flight") {
            try await cache.close()
            return true
        }
        try await self.other.close()
        do {
            try await set.value
            self.model[other] = value
        } catch let error as PanzaError where error.code == .closed {
            // Refused: the model keeps what it had.
        }
        gate.open()
        do {
            let loaded = try await self.bounded("the load that outlived close()") { try await load.value }
            try self.check(loaded == "late-\(logical)", "the load that outlived close() returned \(loaded)")
        } catch let error as PanzaError where error.code == .closed {
            // The caller may be told the cache closed under it.
        }
        try await self.reopenCaches()
        for key in Self.plainKeys {
            let seen = try await self.cache.value(forKey: key, as: String.self)
            try self.check(
                seen == self.model[key],
                "after a close that raced a load, \(key) = \(seen ?? "nil"), model \(self.model[key] ?? "nil")"
            )
        }
    }

    // MARK: Freshness

    /// A call of `r` by a caller of a random policy, after the clock moved: fresh, stale, fallback
    /// and gone entries, loaders that fail, background refreshes and their per-key backoff.
    func freshnessStep() async throws {
        let advance = [0, 333, 777, 1_511, 4_099, 12_007, 45_013, 90_001][self.random.below(8)]
        self.clock.advance(by: .milliseconds(advance))
        let argument = Self.freshArguments[self.random.below(Self.freshArguments.count)]
        let policy = FreshPolicy.allCases[self.random.below(FreshPolicy.allCases.count)]
        let fails = self.random.below(4) == 0
        let now = self.clock.nowMilliseconds()
        let loads = CallCounter()
        let loaded = "r\(argument)-\(self.step)"
        let f = self.freshMemo(self.cache, policy, value: loaded, loads: loads, fails: fails)
        let outcome: Result<String, any Error>
        do {
            outcome = .success(try await self.bounded("r(\(argument))") { try await f(argument) })
        } catch let violation as ModelViolation {
            throw violation
        } catch {
            outcome = .failure(error)
        }
        await self.cache.waitForRefreshes()
        let calls = loads.value
        self.note(
            "clock +\(advance) ms, r(\(argument)) \(policy)\(fails ? " failing" : "") -> \(Self.describe(outcome)) (loads \(calls))"
        )
        try self.judge(argument, policy: policy, fails: fails, now: now, outcome: outcome, calls: calls, loaded: loaded)
    }

    /// A stale hit's background refresh, held by a gated loader while the key is set or busted:
    /// the write wins.
    func refreshRacingWriteStep() async throws {
        guard
            let argument = Self.freshArguments.first(where: {
                !self.possiblyBackingOff($0, at: self.clock.nowMilliseconds())
            })
        else { return }
        let key = try self.freshMemo(self.cache, .lenient, value: "", loads: CallCounter(), fails: false).key(argument)
        enum Write: Int, CaseIterable { case set, bust, bustID }
        let write = Write.allCases[self.random.below(Write.allCases.count)]
        self.note("r(\(argument)) stored, stale, its refresh held while \(write)")
        // A fresh entry of the lenient policy, then stale within its staleFor.
        try await self.cache.remove(.remove(key))
        let stored = "r\(argument)-\(self.step)"
        let setup = self.freshMemo(self.cache, .lenient, value: stored, loads: CallCounter(), fails: false)
        try self.check(try await setup(argument) == stored, "r(\(argument)) after a bust did not load")
        self.freshModel[argument] = FreshEntry(
            value: stored, createdAtMilliseconds: self.clock.nowMilliseconds(),
            retentionMilliseconds: FreshPolicy.lenient.retention)
        self.clock.advance(by: .milliseconds(1_511))

        let gate = Gate()
        let loads = CallCounter()
        let refreshed = "refreshed-\(self.step)"
        let held = self.cache.memoize(
            id: "r", timeToLive: .milliseconds(Self.freshTimeToLive), freshness: FreshPolicy.lenient.freshness
        ) { (_: Int) async throws -> String in
            loads.increment()
            await gate.wait()
            return refreshed
        }
        let stale = try await self.bounded("a stale hit of r(\(argument))") { try await held(argument) }
        try self.check(stale == stored, "the stale hit of r(\(argument)) returned \(stale), not \(stored)")
        try await self.waitUntil(loads, reaches: 1, "the stale hit of r(\(argument)) started no refresh")
        let now = self.clock.nowMilliseconds()
        switch write {
        case .set:
            let value = "set-\(self.step)"
            _ = try await self.cache.store(
                value, key: key, timeToLive: .milliseconds(Self.freshTimeToLive), replacing: true)
            self.freshModel[argument] = FreshEntry(value: value, createdAtMilliseconds: now, retentionMilliseconds: 0)
        case .bust:
            try await held.bust(argument)
            self.freshModel[argument] = nil
        case .bustID:
            try await held.bustAll()
            self.freshModel = [:]
        }
        gate.open()
        await self.cache.waitForRefreshes()
        // A strict caller: the write's value while fresh, else a load of its own.
        let strictLoads = CallCounter()
        let again = "again-\(self.step)"
        let strict = self.freshMemo(self.cache, .strict, value: again, loads: strictLoads, fails: false)
        let value = try await self.bounded("r(\(argument)) after the refresh") { try await strict(argument) }
        if let entry = self.freshModel[argument] {
            try self.check(
                value == entry.value && strictLoads.value == 0,
                "a refresh overwrote \(write): r(\(argument)) = \(value), model \(entry.value)")
        } else {
            try self.check(
                value == again && strictLoads.value == 1,
                "a refresh's result outlived \(write): r(\(argument)) = \(value) with \(strictLoads.value) loads")
            self.freshModel[argument] = FreshEntry(value: again, createdAtMilliseconds: now, retentionMilliseconds: 0)
        }
    }

    // MARK: Hanging loaders and nested limits

    /// A loader that never returns, past its hard timeout: the caller gets `.timedOut`, the key
    /// loads again at once, and the hung load's late result is never stored.
    func hangingLoaderStep() async throws {
        let argument = self.random.below(2)
        self.note("h(\(argument)) hangs past its hard timeout")
        let policy = Freshness(hardTimeout: .seconds(2))
        let hang = Gate()
        let started = CallCounter()
        let finished = CallCounter()
        let hung = self.cache.memoize(id: "h", freshness: policy) { (_: Int) async throws -> String in
            started.increment()
            await hang.wait()
            finished.increment()
            return "late"
        }
        try await hung.bust(argument)
        let done = CallCounter()
        let call = Task {
            defer { done.increment() }
            return try await hung(argument)
        }
        try await self.waitUntil(started, reaches: 1, "the hanging loader never started")
        // Move the clock until the hard timeout passes (its sleeper may not be registered yet).
        for _ in 0..<100 where done.value == 0 {
            self.clock.advance(by: .milliseconds(500))
            _ = await eventually(timeout: .milliseconds(20)) { done.value == 1 }
        }
        do {
            let value = try await self.bounded("the call of a hanging loader") { try await call.value }
            throw ModelViolation(step: self.step, message: "a hanging loader answered \(value)", history: self.history)
        } catch let error as PanzaError where error.code == .timedOut {}
        let loads = CallCounter()
        let fresh = "h\(argument)-\(self.step)"
        let again = self.cache.memoize(id: "h", freshness: policy) { (_: Int) async throws -> String in
            loads.increment()
            return fresh
        }
        let value = try await self.bounded("a call after a hung load") { try await again(argument) }
        try self.check(value == fresh && loads.value == 1, "after a hung load, h(\(argument)) = \(value)")
        hang.open()
        try await self.waitUntil(finished, reaches: 1, "the hung loader did not return after its gate opened")
        let cache = self.cache
        try self.check(
            await self.eventuallyTrue { cache.fence.watchedKeyCount == 0 },
            "the hung load still watches \(cache.fence.watchedKeyCount) keys after it returned"
        )
        let held = try await again.peek(argument)
        try self.check(held == fresh, "the hung load's late result replaced h(\(argument)): \(held ?? "nil")")
    }

    /// Memoized calls whose loads call another memoized function, concurrently, with one
    /// concurrency limiter given cache-wide and to both functions.
    func nestedLimitsStep() async throws {
        let arguments = (0..<3).map { _ in self.random.below(4) }
        self.note("nested o(x) -> n(x) at once for \(arguments), one limiter of 2")
        let step = self.step
        let limits = self.limits
        let inner = self.cache.memoize(id: "n", limits: limits) { (x: Int) async throws -> String in "n\(x)-\(step)" }
        let outer = self.cache.memoize(id: "o", limits: limits) { (x: Int) async throws -> String in
            "o(" + (try await inner(x)) + ")"
        }
        let values = try await self.bounded("nested memoized calls under one limiter (a deadlock?)") {
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for argument in arguments { group.addTask { (argument, try await outer(argument)) } }
                return try await group.reduce(into: [Int: String]()) { $0[$1.0] = $1.1 }
            }
        }
        for (argument, value) in values {
            let innerValue = self.model["n:\(argument)"] ?? "n\(argument)-\(step)"
            let expected = self.model["o:\(argument)"] ?? "o(\(innerValue))"
            try self.check(value == expected, "o(\(argument)) = \(value), expected \(expected)")
            self.model["o:\(argument)"] = value
            if self.model["n:\(argument)"] == nil, value == "o(\(innerValue))" {
                self.model["n:\(argument)"] = innerValue
            }
        }
    }

    // MARK: The freshness model

    func freshMemo(
        _ cache: TieredCache, _ policy: FreshPolicy, value: String, loads: CallCounter, fails: Bool
    ) -> Memoized<Int, String> {
        cache.memoize(id: "r", timeToLive: .milliseconds(Self.freshTimeToLive), freshness: policy.freshness) {
            (_: Int) async throws -> String in
            loads.increment()
            if fails { throw TestError(message: "the loader is down") }
            return value
        }
    }

    func possiblyBackingOff(_ argument: Int, at now: Int64) -> Bool {
        self.lastFailure[argument].map { now - $0 < RefreshScheduler.maximumBackoff } ?? false
    }

    /// Judges one call of `r` against the model, and updates the model.
    private func judge(
        _ argument: Int, policy: FreshPolicy, fails: Bool, now: Int64, outcome: Result<String, any Error>, calls: Int,
        loaded: String
    ) throws {
        let storedNow = FreshEntry(value: loaded, createdAtMilliseconds: now, retentionMilliseconds: policy.retention)
        let backingOff = self.possiblyBackingOff(argument, at: now)
        let failed: Bool
        if case .failure(let error) = outcome {
            try self.check(error is TestError, "r(\(argument)) threw \(error)")
            failed = true
        } else {
            failed = false
        }
        let value = try? outcome.get()
        let entry = self.freshModel[argument]
        let age = entry.map { now - $0.createdAtMilliseconds - Self.freshTimeToLive }
        let context =
            "r(\(argument)) for a \(policy) caller, model \(entry.map { "\($0.value) expired \(age!) ms ago" } ?? "nil")"
        if let entry, let age, age < 0 {
            // Fresh.
            try self.check(
                value == entry.value && calls == 0, "\(context): got \(Self.describe(outcome)), \(calls) loads")
        } else if let entry, let age, age < entry.retentionMilliseconds, age < policy.staleFor {
            // Stale within this caller's staleFor: served at once, refreshed in the background.
            try self.check(
                value == entry.value && calls <= 1, "\(context): got \(Self.describe(outcome)), \(calls) loads")
            if calls == 0 {
                try self.check(backingOff, "\(context): a stale hit started no refresh and the key is not backing off")
            } else if fails {
                self.lastFailure[argument] = now
            } else {
                self.freshModel[argument] = storedNow
                self.lastFailure[argument] = nil
            }
        } else if let entry, let age, age < entry.retentionMilliseconds, age < policy.retention {
            // Beyond staleFor, within what this caller may fall back on: a load.
            let mayFailSafe = age < policy.failSafeFor
            if calls == 0 {
                try self.check(
                    backingOff && mayFailSafe && value == entry.value,
                    "\(context): got \(Self.describe(outcome)) without a load")
            } else if fails {
                try self.check(
                    calls == 1 && (mayFailSafe ? value == entry.value : failed),
                    "\(context): a failed load gave \(Self.describe(outcome))")
                self.lastFailure[argument] = now
            } else {
                try self.check(
                    value == loaded && calls == 1, "\(context): got \(Self.describe(outcome)), \(calls) loads")
                self.freshModel[argument] = storedNow
                self.lastFailure[argument] = nil
            }
        } else {
            // Nothing this caller may be served: a load, whose failure reaches the caller.
            try self.check(calls == 1, "\(context): \(calls) loads")
            if fails {
                try self.check(failed, "\(context): a failed load gave \(Self.describe(outcome))")
            } else {
                try self.check(value == loaded, "\(context): got \(Self.describe(outcome))")
                self.freshModel[argument] = storedNow
            }
        }
    }

    /// After a flush: SQLite holds the model's entry of every `r` key the model does not call gone.
    func checkFreshEntries(sqlite: SQLiteTier) async throws {
        let now = self.clock.nowMilliseconds()
        for argument in Self.freshArguments {
            let key = try self.freshMemo(self.cache, .strict, value: "", loads: CallCounter(), fails: false).key(
                argument)
            let stored = try await sqlite.storedBlob(forKey: key.rawValue).map { try Self.decode($0, key) }
            guard let entry = self.freshModel[argument] else {
                try self.check(stored == nil, "SQLite holds r(\(argument)) = \(stored ?? "") after flush, model nil")
                continue
            }
            let retained = now < entry.createdAtMilliseconds + Self.freshTimeToLive + entry.retentionMilliseconds
            if retained {
                try self.check(
                    stored == entry.value,
                    "SQLite holds r(\(argument)) = \(stored ?? "nil") after flush, model \(entry.value)")
            }
        }
    }

    // MARK: Helpers

    func forgetEverything() {
        self.model = [:]
        self.childModel = [:]  // the child's keys are gone too
        self.freshModel = [:]
    }

    func reopenCaches() async throws {
        self.cache = try await Self.open(
            self.directory, remote: self.remote, memory: true, clock: self.clock, limits: self.limits)
        self.other = try await Self.open(
            self.directory, remote: self.remote, memory: false, clock: self.clock, limits: self.limits)
    }

    /// Removes the key, so that a step starts from a miss.
    private func startFromMiss(_ logical: String, key: CacheKey) async throws {
        guard self.model[logical] != nil else { return }
        try await self.cache.remove(.remove(key))
        self.model[logical] = nil
    }

    private func read(_ logical: String, key: CacheKey) async throws -> String? {
        try await self.cache.lookup(key, as: String.self)
    }

    /// Waits (at most 20 s) until `counter` reaches `count`, else a violation.
    private func waitUntil(_ counter: CallCounter, reaches count: Int, _ message: String) async throws {
        try self.check(await eventually(timeout: .seconds(20)) { counter.value >= count }, message)
    }

    private func eventuallyTrue(_ condition: @escaping () -> Bool) async -> Bool {
        await eventually(timeout: .seconds(20)) { condition() }
    }

    /// Runs `body` for at most 60 s: what does not finish by then is a finding (a deadlock, a call
    /// that waits forever), not a hung test.
    private func bounded<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) async throws
        -> T
    {
        guard
            let value = try await Deadline.value(
                within: .seconds(60), clock: SystemCacheClock(), cancelsOnTimeout: true, body)
        else {
            throw ModelViolation(step: self.step, message: "\(what): did not finish within 60 s", history: self.history)
        }
        return value
    }

    private static func describe(_ outcome: Result<String, any Error>) -> String {
        switch outcome {
        case .success(let value): value
        case .failure(let error): "error \(error)"
        }
    }
}
