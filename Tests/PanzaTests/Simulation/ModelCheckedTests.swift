import Foundation
import Synchronization
import Testing

@testable import Panza

/// A seeded, reproducible randomized test of the whole cache against a reference model, in the
/// spirit of FoundationDB's simulation and TigerBeetle's VOPR.
///
/// Each step is drawn from the seed: sets, reads, read-throughs, removals, memoized calls, busts
/// of one call, of an id and of everything, flushes, close and reopen, groups of concurrent
/// operations on colliding keys, and a child process that writes the same file and is killed with
/// SIGKILL. The seams between mechanisms are driven too (`Simulation+Seams.swift`): loads held
/// in flight by gated loaders while sets, removals, busts and `close()` happen; background
/// refreshes, and refreshes racing writes; callers with different freshness policies on one key
/// as the injected clock moves; a loader that hangs past its hard timeout; memoized calls nested
/// under shared concurrency limits. The remote tier fails a seeded fraction of its applies, and a
/// second cache on the same file and bucket (memory off, as another process) reads alongside.
/// After each step the test checks what a user relies on:
/// - a read returns the model's value (or, during a concurrent group, one of the values the group
///   could linearize to);
/// - after a removal or bust returns, neither cache returns an older value;
/// - after `flush()`, memory, SQLite and the remote tier hold the model's value for every key, and
///   a reopened cache serves it; what a killed child flushed is there.
///
/// `PANZA_MODEL_SEED=N` reruns one seed; `PANZA_MODEL_SEEDS` (count) and `PANZA_MODEL_STEPS` make
/// the long run (`scripts/model-check`).
@Suite(.timeLimit(.minutes(60)))
struct ModelCheckedTests {
    @Test("Randomized operations against a reference model never serve a busted, replaced or lost value")
    func randomized() async throws {
        let environment = ProcessInfo.processInfo.environment
        let steps = environment["PANZA_MODEL_STEPS"].flatMap(Int.init) ?? 500
        let seeds: [UInt64]
        if let seed = environment["PANZA_MODEL_SEED"].flatMap(UInt64.init) {
            seeds = [seed]
        } else {
            let count = environment["PANZA_MODEL_SEEDS"].flatMap(Int.init) ?? 3
            let base = environment["PANZA_MODEL_BASE_SEED"].flatMap(UInt64.init) ?? 20_261_126
            seeds = (0..<UInt64(count)).map { base + $0 }
        }
        var operations = 0
        for seed in seeds {
            print("panza model check: seed \(seed), \(steps) steps (rerun with PANZA_MODEL_SEED=\(seed))")
            let directory = try TemporaryDirectory()
            let simulation = try await Simulation(seed: seed, directory: directory)
            do {
                try await simulation.run(steps: steps)
            } catch let violation as ModelViolation {
                Issue.record("seed \(seed): \(violation)")
                await simulation.shutDown()
                return
            }
            operations += simulation.operations
        }
        print("panza model check: \(seeds.count) seed(s), \(operations) operations, no violation")
    }
}

/// What the model caught, with the seed's recent history.
struct ModelViolation: Error, CustomStringConvertible {
    var step: Int
    var message: String
    var history: [String]

    var description: String {
        "step \(self.step): \(self.message)\n  last operations:\n    "
            + self.history.suffix(12).joined(separator: "\n    ")
    }
}

private final class LoadCounter: Sendable {
    let count = Atomic<Int>(0)
}

/// One run of the simulation. Not shared across tasks except through `Sendable` members.
final class Simulation {
    static let plainKeys = (0..<8).map { "k\($0)" }
    static let memoArguments = Array(0..<5)
    static let childKeys = (0..<16).map { "c-\($0)" }

    let seed: UInt64
    let directory: TemporaryDirectory
    var random: SplitMix64
    let remote = RecordingTier()
    /// The caches' clock (every tier's, SQLite's too): it moves only when a step moves it.
    let clock = ManualCacheClock()
    /// One concurrency limiter, given cache-wide and to the nested memoized functions.
    let limits = LoadLimits.concurrency(2)
    var cache: TieredCache
    var other: TieredCache
    /// The model: logical key ("k3", "m:2") to its value; absent means "not stored".
    var model: [String: String] = [:]
    /// What the last killed child flushed.
    var childModel: [String: String] = [:]
    /// The model of the memoized function with freshness policies (`Simulation+Seams.swift`).
    var freshModel: [Int: FreshEntry] = [:]
    /// When a load of a freshness key last failed, and no load of it has succeeded since: its
    /// failure backoff may be in effect (for at most 30 s of the clock).
    var lastFailure: [Int: Int64] = [:]
    var history: [String] = []
    var step = 0
    var operations = 0

    init(seed: UInt64, directory: TemporaryDirectory) async throws {
        self.seed = seed
        self.directory = directory
        self.random = SplitMix64(seed: seed)
        self.remote.state.withLock {
            $0.failureRate = 0.15
            $0.random = SplitMix64(seed: seed ^ 0x5EED)
        }
        self.cache = try await Self.open(
            directory, remote: self.remote, memory: true, clock: self.clock, limits: self.limits)
        self.other = try await Self.open(
            directory, remote: self.remote, memory: false, clock: self.clock, limits: self.limits)
    }

    static func open(
        _ directory: TemporaryDirectory, remote: RecordingTier, memory: Bool, clock: ManualCacheClock,
        limits: LoadLimits
    ) async throws -> TieredCache {
        try await makeCache(in: directory, memory: memory ? .init(maxEntries: 6, maxBytes: 1 << 20) : nil) {
            $0.remote = remote
            $0.clock = clock
            $0.loadLimits = limits
            $0.writeBehind = .init(
                maxPendingWrites: 16,
                maxBatchSize: 8,
                maxAttempts: 1_000,
                retryBackoff: .milliseconds(1),
                maxRetryBackoff: .milliseconds(10),
                outboxPollInterval: .milliseconds(20)
            )
            $0.remoteCloseTimeout = .milliseconds(50)
        }
    }

    func memo(_ cache: TieredCache, loads: LoadCounterBox? = nil) -> Memoized<Int, String> {
        let step = self.step
        return cache.memoize(id: "m") { (x: Int) async throws -> String in
            loads?.counter.count.add(1, ordering: .relaxed)
            return "m\(x)-\(step)"
        }
    }

    func run(steps: Int) async throws {
        for step in 0..<steps {
            self.step = step
            try await self.randomStep()
        }
        try await self.flushAndCheck()
        try await self.shutDown(checked: true)
    }

    func shutDown() async {
        try? await self.cache.close()
        try? await self.other.close()
    }

    private func shutDown(checked: Bool) async throws {
        try await self.cache.close()
        try await self.other.close()
        let dropped = self.cache.statistics.droppedWrites + self.other.statistics.droppedWrites
        try self.check(dropped == 0, "\(dropped) writes went to the dead letters")
    }

    // MARK: Steps

    private func randomStep() async throws {
        let roll = self.random.below(125)
        switch roll {
        case 0..<18: try await self.setStep()
        case 18..<34: try await self.getStep()
        case 34..<42: try await self.getOrLoadStep()
        case 42..<50: try await self.removeStep()
        case 50..<58: try await self.memoCallStep()
        case 58..<62: try await self.memoBustStep()
        case 62..<64: try await self.memoBustAllStep()
        case 64..<66: try await self.bustAllStep()
        case 66..<72: try await self.flushAndCheck()
        case 72..<75: try await self.reopenStep()
        case 75..<77: try await self.setDoNotReuseStep()
        case 77..<78: try await self.killedChildStep()
        case 78..<100: try await self.concurrentGroupStep()
        case 100..<106: try await self.loadRacingWriteStep()
        case 106..<113: try await self.freshnessStep()
        case 113..<115: try await self.refreshRacingWriteStep()
        case 115..<117: try await self.hangingLoaderStep()
        case 117..<120: try await self.nestedLimitsStep()
        case 120..<122: try await self.closeDuringLoadStep()
        default: try await self.loadRacingOtherProcessStep()
        }
    }

    private func setStep() async throws {
        let key = self.plainKey()
        let value = "v\(self.step)"
        self.note("set \(key) \(value)")
        try await self.cache.set(value, forKey: key)
        self.model[key] = value
    }

    private func setDoNotReuseStep() async throws {
        let key = self.plainKey()
        self.note("set \(key) with time to live 0")
        try await self.cache.set("never-\(self.step)", forKey: key, timeToLive: .zero)
        self.model[key] = nil
        // A set is write-behind: this cache hides the old value at once, others after a flush.
        let value = try await self.cache.value(forKey: key, as: String.self)
        try self.check(value == nil, "\(key) = \(value ?? "") right after a set that must not be reused")
    }

    private func getStep() async throws {
        let key = self.plainKey()
        let value = try await self.cache.value(forKey: key, as: String.self)
        self.note("get \(key) -> \(value ?? "nil")")
        try self.check(value == self.model[key], "read \(key) = \(value ?? "nil"), model \(self.model[key] ?? "nil")")
    }

    private func getOrLoadStep() async throws {
        let key = self.plainKey()
        let loads = LoadCounterBox()
        let loaded = "l\(self.step)"
        let value = try await self.cache.value(forKey: key) { () async throws -> String in
            loads.counter.count.add(1, ordering: .relaxed)
            return loaded
        }
        let calls = loads.counter.count.load(ordering: .relaxed)
        self.note("value-or-load \(key) -> \(value) (loads \(calls))")
        if let expected = self.model[key] {
            try self.check(
                value == expected && calls == 0,
                "read-through \(key) = \(value) with \(calls) loads, model \(expected)"
            )
        } else {
            try self.check(
                value == loaded && calls == 1,
                "read-through of missing \(key) = \(value) with \(calls) loads"
            )
            self.model[key] = loaded
        }
    }

    private func removeStep() async throws {
        let key = self.plainKey()
        self.note("remove \(key)")
        try await self.cache.removeValue(forKey: key)
        self.model[key] = nil
        try await self.expectOther(key, nil)
    }

    private func memoCallStep() async throws {
        let argument = self.memoArgument()
        let loads = LoadCounterBox()
        let value = try await self.memo(self.cache, loads: loads)(argument)
        let calls = loads.counter.count.load(ordering: .relaxed)
        self.note("memo m(\(argument)) -> \(value) (loads \(calls))")
        let key = "m:\(argument)"
        if let expected = self.model[key] {
            try self.check(
                value == expected && calls == 0,
                "memo m(\(argument)) = \(value) with \(calls) calls, model \(expected)"
            )
        } else {
            try self.check(
                value == "m\(argument)-\(self.step)" && calls == 1,
                "memo of missing m(\(argument)) = \(value)"
            )
            self.model[key] = value
        }
    }

    private func memoBustStep() async throws {
        let argument = self.memoArgument()
        self.note("bust m(\(argument))")
        try await self.memo(self.cache).bust(argument)
        self.model["m:\(argument)"] = nil
        let seen = try await self.memo(self.other).peek(argument)
        try self.check(seen == nil, "the other cache read busted m(\(argument)) = \(seen ?? "")")
    }

    private func memoBustAllStep() async throws {
        self.note("bustAll m")
        try await self.memo(self.cache).bustAll()
        for argument in Self.memoArguments { self.model["m:\(argument)"] = nil }
        for argument in Self.memoArguments {
            let seen = try await self.memo(self.other).peek(argument)
            try self.check(seen == nil, "the other cache read m(\(argument)) = \(seen ?? "") after bustAll of m")
        }
    }

    private func bustAllStep() async throws {
        self.note("bustAll")
        try await self.cache.bustAll()
        self.forgetEverything()
        for key in Self.childKeys { try await self.expectOther(key, nil) }
        for key in Self.plainKeys { try await self.expectOther(key, nil) }
    }

    /// Flushes (retrying while the remote's injected failures reach it), then checks every tier.
    func flushAndCheck() async throws {
        self.note("flush")
        try await self.flushUntilDone(self.cache)
        let sqlite = try #require(self.cache.tiers.first as? SQLiteTier)
        for key in Self.plainKeys {
            try await self.checkEverywhere(logical: key, key: CacheKey(rawValue: key), sqlite: sqlite)
        }
        for argument in Self.memoArguments {
            let key = try self.memo(self.cache).key(argument)
            try await self.checkEverywhere(logical: "m:\(argument)", key: key, sqlite: sqlite)
        }
        try await self.checkFreshEntries(sqlite: sqlite)
        for key in Self.childKeys {
            let value = try await self.other.value(forKey: key, as: String.self)
            try self.check(
                value == self.childModel[key],
                "\(key) = \(value ?? "nil") after the child's flush, expected \(self.childModel[key] ?? "nil")"
            )
        }
    }

    private func checkEverywhere(logical: String, key: CacheKey, sqlite: SQLiteTier) async throws {
        let expected = self.model[logical]
        if case .hit(let value, _, _) = self.cache.memory?.lookup(
            key.rawValue,
            nowMilliseconds: self.clock.nowMilliseconds()
        ) {
            try self.check(
                value as? String == expected,
                "memory holds \(logical) = \(value), model \(expected ?? "nil")"
            )
        }
        let stored = try await sqlite.storedBlob(forKey: key.rawValue).map { try Self.decode($0, key) }
        try self.check(
            stored == expected,
            "SQLite holds \(logical) = \(stored ?? "nil") after flush, model \(expected ?? "nil")"
        )
        let remote = try self.remote.storedBlob(key.rawValue).map { try Self.decode($0, key) }
        try self.check(
            remote == expected,
            "the remote holds \(logical) = \(remote ?? "nil") after flush, model \(expected ?? "nil")"
        )
        let seen = try await self.other.value(forKey: key.rawValue, as: String.self)
        if key.namespace.isEmpty {
            try self.check(
                seen == expected,
                "the other cache reads \(logical) = \(seen ?? "nil") after flush, model \(expected ?? "nil")"
            )
        }
    }

    private func reopenStep() async throws {
        let flushFirst = self.random.below(2) == 0
        self.note("close and reopen (flush first: \(flushFirst))")
        if flushFirst { try await self.flushUntilDone(self.cache) }
        try await self.cache.close()
        try await self.other.close()
        try await self.reopenCaches()
        for key in Self.plainKeys {
            let value = try await self.cache.value(forKey: key, as: String.self)
            try self.check(
                value == self.model[key],
                "after reopen \(key) = \(value ?? "nil"), model \(self.model[key] ?? "nil")"
            )
        }
    }

    /// A child process writes the same file, flushes, keeps writing and is killed with SIGKILL.
    private func killedChildStep() async throws {
        let childSeed = self.seed &* 31 &+ UInt64(self.step)
        self.note("child writes c-*, flushes, SIGKILL (seed \(childSeed))")
        let child = try ChildProcess.start(["model-ops", self.directory.path("cache.sqlite"), "\(childSeed)", "40"])
        // A child that never flushes is a finding, not a hung test.
        let pid = child.process.processIdentifier
        let watchdog = Task {
            try await Task.sleep(for: .seconds(60))
            kill(pid, SIGKILL)
        }
        defer { watchdog.cancel() }
        guard let line = await child.waitForLine(startingWith: "flushed ") else {
            let result = try await child.wait()
            throw ModelViolation(
                step: self.step,
                message: "the child did not flush within 60 s (status \(result.status)): \(result.error)",
                history: self.history
            )
        }
        try await Task.sleep(for: .milliseconds(Int(self.random.below(20))))
        child.kill(signal: SIGKILL)
        for pair in line.dropFirst("flushed ".count).split(separator: ";") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { self.childModel[parts[0]] = parts[1] == "nil" ? nil : parts[1] }
        }
        for key in Self.childKeys {
            let value = try await self.other.value(forKey: key, as: String.self)
            try self.check(
                value == self.childModel[key],
                "\(key) = \(value ?? "nil") after SIGKILL, the child flushed \(self.childModel[key] ?? "nil")"
            )
        }
    }

    /// Two to four operations at once on three colliding keys.
    private func concurrentGroupStep() async throws {
        enum Kind: CaseIterable { case set, get, remove, load }
        struct Planned: Sendable {
            var kind: Int
            var key: String
            var value: String
        }
        let count = 2 + self.random.below(3)
        let plan = (0..<count).map { index in
            Planned(kind: self.random.below(4), key: "k\(self.random.below(3))", value: "g\(self.step)-\(index)")
        }
        self.note(
            "concurrently: "
                + plan.map { "\(["set", "get", "remove", "load"][$0.kind]) \($0.key) \($0.value)" }.joined(
                    separator: ", "
                )
        )
        let cache = self.cache
        // Each result: the value read (for get and load), and whether a load stored its value.
        let results = try await withThrowingTaskGroup(of: (Int, String?, Bool).self) { group in
            for (index, planned) in plan.enumerated() {
                group.addTask {
                    switch planned.kind {
                    case 0:
                        try await cache.set(planned.value, forKey: planned.key)
                        return (index, nil, false)
                    case 1:
                        return (index, try await cache.value(forKey: planned.key, as: String.self), false)
                    case 2:
                        try await cache.removeValue(forKey: planned.key)
                        return (index, nil, false)
                    default:
                        let loaded = LoadCounterBox()
                        let value = try await cache.value(forKey: planned.key) { () async throws -> String in
                            loaded.counter.count.add(1, ordering: .relaxed)
                            return planned.value
                        }
                        return (index, value, loaded.counter.count.load(ordering: .relaxed) > 0)
                    }
                }
            }
            var results: [(Int, String?, Bool)] = []
            for try await result in group { results.append(result) }
            return results.sorted { $0.0 < $1.0 }
        }
        for key in Set(plan.map(\.key)) {
            let indices = plan.indices.filter { plan[$0].key == key }
            var writes: [String?] = []
            for index in indices {
                switch plan[index].kind {
                case 0: writes.append(plan[index].value)
                case 2: writes.append(nil)
                case 3 where results[index].2: writes.append(plan[index].value)
                default: break
                }
            }
            let before = self.model[key]
            let possible = Set(
                [before] + writes + indices.filter { plan[$0].kind == 3 }.map { Optional(plan[$0].value) }
            )
            for index in indices where plan[index].kind == 1 || plan[index].kind == 3 {
                let read = results[index].1
                try self.check(
                    possible.contains(read),
                    "a concurrent read of \(key) returned \(read ?? "nil"), possible \(possible)"
                )
            }
            let after = try await self.cache.value(forKey: key, as: String.self)
            let finals: Set<String?> = writes.isEmpty ? [before] : Set(writes)
            try self.check(finals.contains(after), "after the group \(key) = \(after ?? "nil"), possible \(finals)")
            self.model[key] = after
        }
    }

    // MARK: Helpers

    func flushUntilDone(_ cache: TieredCache) async throws {
        for _ in 0..<2_000 {
            do {
                try await cache.flush()
                return
            } catch let error as PanzaError where error.code == .writeDropped {
                throw ModelViolation(step: self.step, message: "flush: \(error)", history: self.history)
            } catch {
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        throw ModelViolation(step: self.step, message: "flush never succeeded", history: self.history)
    }

    func expectOther(_ key: String, _ expected: String?) async throws {
        let seen = try await self.other.value(forKey: key, as: String.self)
        try self.check(
            seen == expected,
            "the other cache reads \(key) = \(seen ?? "nil"), expected \(expected ?? "nil")"
        )
    }

    func plainKey() -> String { Self.plainKeys[self.random.below(Self.plainKeys.count)] }

    func memoArgument() -> Int { Self.memoArguments[self.random.below(Self.memoArguments.count)] }

    func note(_ text: String) {
        self.operations += 1
        self.history.append("\(self.step): \(text)")
        if self.history.count > 64 { self.history.removeFirst(32) }
    }

    func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw ModelViolation(step: self.step, message: message(), history: self.history) }
    }

    static func decode(_ blob: [UInt8], _ key: CacheKey) throws -> String {
        try ValueCoding.decode(String.self, from: BlobEnvelope.decode(blob), key: key.rawValue)
    }
}

/// Counts loader calls from any task.
final class LoadCounterBox: Sendable {
    fileprivate let counter = LoadCounter()
}
