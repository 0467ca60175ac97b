import Logging
import Synchronization

/// The load runner: one path for every load (a miss's and a background refresh's): limits,
/// timeouts, and a store that is conditional on nothing newer having happened to the key.
extension TieredCache {
    /// Calls the loader for `call` (within its limits and ``Freshness/hardTimeout``) and stores
    /// the result: what a miss's single flight runs.
    ///
    /// The load takes its ``StoreCondition`` when it starts: its result is dated from then, and
    /// is stored only if no write of its key, its namespace or everything came meanwhile (in this
    /// process, and in the SQLite file: by the stamp `sqliteStamp` the lookup read, else one read
    /// when the load starts).
    func load<Value: Codable & Sendable>(_ call: LoadCall<Value>, sqliteStamp: Int64?) async throws -> Value {
        try await self.load(
            call,
            condition: StoreCondition(
                ticket: self.fence.beginLoad(call.key), createdAtMilliseconds: self.clock.nowMilliseconds(),
                sqliteStamp: sqliteStamp))
    }

    /// ``load(_:sqliteStamp:)`` with a condition taken already (by a flight before its lookup);
    /// the load ends its ticket.
    func load<Value: Codable & Sendable>(_ call: LoadCall<Value>, condition: StoreCondition) async throws -> Value {
        if call.modes.cacheOnly {
            self.fence.endLoad(condition.ticket)
            throw PanzaError(
                code: .cacheOnlyMiss,
                message:
                    "cache-only mode is on and \(call.id.isEmpty ? "the key" : "memoized id '\(call.id)'") has no entry",
                key: call.key.rawValue
            )
        }
        if call.modes.printMisses {
            FileHandleOutput.standardError(
                "panza: cache miss: id=\(call.id.isEmpty ? "-" : call.id) key=\(call.key.rawValue)\n"
            )
        }
        self.logger.debug("panza: cache miss, loading", metadata: ["id": "\(call.id)", "key": "\(call.key)"])
        var condition = condition
        if condition.sqliteStamp == nil, let sqlite = self.sqliteTier, await self.sqliteHoldsQueuedWrites(of: call.key)
        {
            // No lookup read the key's stamp (SQLite held a stale copy, a write of the key was
            // still queued, or the flight answered with a copy this caller may not be served):
            // read it now, before the loader runs, so that a removal by another process of the
            // file during the load wins over it. When it cannot be read, the fence alone decides.
            condition.sqliteStamp = try? await sqlite.writeStamp(forKey: call.key)
        }
        let settled = condition
        return try await self.withHardTimeout(call) {
            // Inside the timed body: with completesInBackground, the store may come after the
            // caller stopped waiting, and the ticket must watch the key until then.
            defer { self.fence.endLoad(settled.ticket) }
            return try await self.loadAndStore(call, condition: settled)
        }
    }

    /// How long a load waits for this process's queued writes of its key to reach the SQLite
    /// file before it reads the key's stamp (a bust just before a call, say); past it, the fence
    /// alone decides.
    static let stampWait: Duration = .milliseconds(250)

    /// Whether the SQLite file holds every write of `key` this process queued (their stamps are in
    /// it), waiting for them at most ``stampWait``.
    private func sqliteHoldsQueuedWrites(of key: CacheKey) async -> Bool {
        guard let slot = self.slots.first(where: { $0.tier is SQLiteTier }) else { return false }
        guard let pending = slot.pending, let lane = slot.lane else { return true }
        if (try? await pending.shadow(forKey: key)) == WriteShadow.none { return true }
        let target = lane.queue.lastSequence()
        return await Deadline.completes(within: Self.stampWait) {
            _ = try? await lane.drainer.waitUntilApplied(target)
        }
    }

    /// Calls the loader within its limits, records how it went, and stores its result.
    ///
    /// - Parameter condition: the conditions its store lands on (see ``StoreCondition``).
    func loadAndStore<Value: Codable & Sendable>(
        _ call: LoadCall<Value>,
        condition: StoreCondition
    ) async throws -> Value {
        let id = call.id
        let loadStart = ContinuousClock.now
        let idCounters = id.isEmpty || self.metricsReporter == nil ? nil : self.counters(forID: id)
        idCounters?.loads.add(1, ordering: .relaxed)
        let value: Value
        do {
            value = try await self.limitedLoad(
                limits: call.limits, concurrencyKey: call.concurrencyKey, loader: call.loader)
        } catch {
            self.recorder.add(.loadFailures)
            idCounters?.loadFailures.add(1, ordering: .relaxed)
            self.metricsReporter?.recordLoad(id: id, duration: ContinuousClock.now - loadStart)
            throw error
        }
        let loadDuration = ContinuousClock.now - loadStart
        self.metricsReporter?.recordLoad(id: id, duration: loadDuration)
        self.loaderLatency.record(loadDuration)
        let size: Int
        do {
            size = try await self.store(
                value, key: call.key, timeToLive: call.timeToLive, replacing: false, freshness: call.policy,
                condition: condition)
        } catch let error as PanzaError where error.code == .encodingFailed || error.code == .valueTooLarge {
            // The call was paid for: its result reaches the caller even if it cannot be kept.
            self.recorder.add(.unstorableResults)
            self.warnUnstorable(id: id, error: error)
            size = 0
        } catch let error as PanzaError where error.code == .closed {
            // The cache closed while the call ran: the result still reaches its caller.
            size = 0
        }
        self.configuration.trace?.record(
            key: call.key.rawValue,
            size: size,
            source: .loader,
            latency: ContinuousClock.now - loadStart
        )
        return value
    }

    /// Logs, once per memoize id (or once for plain keys), that a loader's result could not be stored.
    func warnUnstorable(id: String, error: PanzaError) {
        guard self.unstorableWarned.withLock({ $0.insert(id).inserted }) else { return }
        self.logger.warning(
            "panza: a result was returned but not cached (further ones of this id are only counted)",
            metadata: ["id": "\(id.isEmpty ? "-" : id)", "error": "\(error)"]
        )
    }

    /// Calls `loader` within the cache's and the id's limits, again after a ``RateLimitedError``.
    private func limitedLoad<Value>(
        limits: LoadLimits?,
        concurrencyKey: String?,
        loader: @Sendable () async throws -> Value
    ) async throws -> Value {
        let all = [self.configuration.loadLimits, limits].compactMap { $0 }
        // Without limits, a RateLimitedError is retried as LoadLimits does by default.
        let maxRetries = all.map(\.maxRateLimitRetries).min() ?? LoadLimits().maxRateLimitRetries
        var attempt = 0
        while true {
            var waited = Duration.zero
            var rateLimiters: [ObjectIdentifier] = []
            for limit in all {
                // One limiter given twice (cache-wide and per id) counts once.
                if let rateLimiter = limit.rateLimiter, !rateLimiters.contains(ObjectIdentifier(rateLimiter)) {
                    rateLimiters.append(ObjectIdentifier(rateLimiter))
                    waited += try await rateLimiter.acquireMeasured(cost: limit.cost)
                }
            }
            // A limiter whose permit this task already holds (a load inside a load) is not waited
            // for again, and one limiter given twice takes one permit: see docs/limits.md.
            var concurrencyLimiters: [ConcurrencyLimiter] = []
            for limiter in all.compactMap(\.concurrencyLimiter)
            where !HeldPermits.current.contains(ObjectIdentifier(limiter))
                && !concurrencyLimiters.contains(where: { $0 === limiter })
            {
                concurrencyLimiters.append(limiter)
            }
            do {
                let (value, concurrencyWait) = try await Self.withPermits(
                    concurrencyLimiters[...],
                    key: concurrencyKey
                ) {
                    self.recorder.add(.loads)
                    return try await loader()
                }
                waited += concurrencyWait
                self.recordThrottle(waited)
                return value
            } catch let error as RateLimitedError {
                self.recordThrottle(waited)
                attempt += 1
                guard attempt <= maxRetries else { throw error }
                self.recorder.add(.rateLimitRetries)
                let pause = error.retryAfter ?? .milliseconds(100) * (1 << min(attempt - 1, 10))
                self.logger.info(
                    "panza: loader was rate limited; retrying",
                    metadata: ["attempt": "\(attempt)", "pause": "\(pause)"]
                )
                let rateLimiters = all.compactMap(\.rateLimiter)
                if rateLimiters.isEmpty {
                    try await Task.sleep(for: pause)
                } else {
                    for rateLimiter in rateLimiters { await rateLimiter.pause(for: pause) }
                }
            }
        }
    }

    /// Runs `body` holding a permit of every limiter, taken in order. Returns the time spent waiting.
    private static func withPermits<Value>(
        _ limiters: ArraySlice<ConcurrencyLimiter>,
        key: String?,
        _ body: () async throws -> Value
    ) async throws -> (Value, Duration) {
        guard let first = limiters.first else { return (try await body(), .zero) }
        let clock = ContinuousClock()
        let start = clock.now
        let waited = try await first.acquire(key: key) ? clock.now - start : .zero
        defer { first.release(key: key) }
        let (value, innerWait) = try await HeldPermits.$current.withValue(
            HeldPermits.current.union([ObjectIdentifier(first)])
        ) {
            try await withPermits(limiters.dropFirst(), key: key, body)
        }
        return (value, waited + innerWait)
    }

    private func recordThrottle(_ waited: Duration) {
        guard waited > .zero else { return }
        self.recorder.add(.throttledWaits)
        let (seconds, attoseconds) = waited.components
        self.recorder.add(.throttledNanoseconds, Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }

    /// Runs `body` (a load and its store) within ``Freshness/hardTimeout``.
    ///
    /// - Throws: ``PanzaError/Code/timedOut`` when the timeout passed first; the body is then
    ///   cancelled, or goes on in the background with ``Freshness/completesInBackground``.
    func withHardTimeout<Value>(
        _ call: LoadCall<Value>,
        _ body: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        guard let hardTimeout = call.policy.hardTimeout else { return try await body() }
        if let value = try await Deadline.value(
            within: hardTimeout, clock: self.clock, cancelsOnTimeout: !call.policy.completesInBackground, body)
        {
            return value
        }
        self.recorder.add(.hardTimeouts)
        throw PanzaError(
            code: .timedOut,
            message: "the load did not finish within its hard timeout (\(hardTimeout))"
                + (call.policy.completesInBackground ? "; it goes on in the background" : "; it was cancelled"),
            key: call.key.rawValue
        )
    }
}

/// The concurrency limiters whose permits the current task holds, so that a load running inside
/// another load (a memoized function calling another) does not wait for a second permit of a
/// limiter its caller holds: with every permit held by outer loads, it would wait for ever.
enum HeldPermits {
    @TaskLocal static var current: Set<ObjectIdentifier> = []
}
