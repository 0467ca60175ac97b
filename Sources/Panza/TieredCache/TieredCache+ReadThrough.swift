import Logging
import Synchronization

/// The read-through path: memory, then one flight per key (the tiers below, then the load), and
/// every result judged for the receiving caller by ``ServeDecision``.
extension TieredCache {
    /// The read-through path shared by ``value(forKey:timeToLive:freshness:limits:loader:)`` and
    /// memoized calls.
    ///
    /// Memory, then the tiers below (one lookup per key at a time), then the loader (one call per
    /// key at a time). With a ``Freshness`` policy, an entry past its time to live may answer: at
    /// once within ``Freshness/staleFor`` (and a background refresh starts), or when the load
    /// fails or passes ``Freshness/softTimeout``.
    ///
    /// - Parameters:
    ///   - memoryChecked: the caller already looked in memory and missed.
    ///   - localChecked: the caller already tried ``localHit(_:as:refreshAhead:)``.
    @usableFromInline
    func readThrough<Value: Codable & Sendable>(
        key: CacheKey,
        id: String,
        timeToLive: Duration?,
        memoryChecked: Bool = false,
        localChecked: Bool = false,
        limits: LoadLimits? = nil,
        concurrencyKey: String? = nil,
        freshness: Freshness? = nil,
        loader: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        try self.checkOpen()
        let modes = self.modes
        let bust = modes.busts(id: id)
        let call = LoadCall(
            key: key, id: id, timeToLive: timeToLive, limits: limits, concurrencyKey: concurrencyKey,
            policy: freshness ?? self.configuration.defaultFreshness ?? .none, modes: modes, loader: loader)
        if !bust, !memoryChecked {
            switch try self.memoryEntry(key, as: Value.self) {
            case .fresh(let value, let times):
                return try await self.serve(value, times: times, call: call)
            case .stale(let entry):
                // A stale copy in memory: served at once within staleFor; otherwise the load's
                // flight first looks for a fresh copy below (another process's refresh), and the
                // load may fall back on the stale one.
                return try await self.serve(entry.value, times: entry.times, call: call)
            case .miss:
                if !localChecked, let value = self.localHit(key, as: Value.self, refreshAhead: call.policy.refreshAhead)
                {
                    return value
                }
            }
        }
        switch try await self.flight(call, bust: bust, acceptingStale: call.policy.servesStale) {
        case .loaded(let value):
            return value
        case .found(let value, let times):
            return try await self.serve(value, times: times, call: call)
        }
    }

    /// Serves a copy found (in memory, below, or from another caller's flight) to `call`'s caller
    /// as ``ServeDecision`` decides for the caller's own policy.
    private func serve<Value>(_ value: Value, times: EntryTimes, call: LoadCall<Value>) async throws -> Value {
        switch ServeDecision.decide(times, for: call.policy, atMilliseconds: self.clock.nowMilliseconds()) {
        case .fresh:
            return value
        case .freshRefreshDue:
            self.startRefresh(call)
            return value
        case .staleServable:
            self.recorder.add(.staleHits)
            self.startRefresh(call)
            return value
        case .fallbackOnly:
            return try await self.loadFallingBack(on: StaleEntry(value: value, times: times), call: call)
        case .unusable:
            return try await self.loadFallingBack(on: nil, call: call)
        }
    }

    /// The key's flight: the tiers below, then the load, shared by concurrent callers.
    ///
    /// - Parameter acceptingStale: whether the lookup may answer with an entry past its time to
    ///   live (the receiver judges it with ``serve(_:times:call:)``).
    private func flight<Value>(
        _ call: LoadCall<Value>, bust: Bool, acceptingStale: Bool
    ) async throws -> Fetched<Value> {
        let stamp = MissStampBox()
        let key = call.key
        // The load's ticket is taken before the lookup that may miss, so that a write made after
        // the lookup read SQLite's stamp is newer than the ticket too.
        let ticket = LoadTicketBox()
        return try await self.singleFlight.run(
            key: key.rawValue,
            namespace: key.namespace,
            onJoin: { self.recorder.add(.coalescedWaits) },
            lookup: {
                ticket.take(
                    StoreCondition(
                        ticket: self.fence.beginLoad(key), createdAtMilliseconds: self.clock.nowMilliseconds()))
                var handedOver = false
                defer { if !handedOver { ticket.release(self.fence) } }
                guard !bust else {
                    handedOver = true
                    return nil
                }
                // A flight of this key that ended between this caller's look in memory and the
                // start of this flight left its value in memory: without this second look, the
                // loader would run again for a value just loaded.
                if let stored = self.freshInMemory(key, as: Value.self) {
                    self.recorder.add(.coalescedWaits)
                    return .found(stored.value, stored.times)
                }
                guard
                    let found = try await self.lowerLookupEntry(
                        key, as: Value.self, acceptingStale: acceptingStale, missStamp: stamp)
                else {
                    handedOver = true
                    return nil
                }
                return .found(found.value, found.times)
            },
            load: {
                guard var condition = ticket.handOver() else {
                    return .loaded(try await self.load(call, sqliteStamp: stamp.value))
                }
                condition.sqliteStamp = stamp.value
                return .loaded(try await self.load(call, condition: condition))
            }
        )
    }

    /// The value of a flight that looks for fresh copies only, as the caller may be served it:
    /// a copy that another caller's flight found and that this caller may not be served is not
    /// returned; the caller waits for a flight of its own (at most three), then loads.
    private func freshFlightValue<Value>(_ call: LoadCall<Value>) async throws -> Value {
        for _ in 0..<3 {
            switch try await self.flight(call, bust: false, acceptingStale: false) {
            case .loaded(let value):
                return value
            case .found(let value, let times):
                let decision = ServeDecision.decide(
                    times, for: call.policy, atMilliseconds: self.clock.nowMilliseconds())
                if decision.servesAtOnce {
                    if decision == .staleServable { self.recorder.add(.staleHits) }
                    if decision != .fresh { self.startRefresh(call) }
                    return value
                }
            }
        }
        return try await self.load(call, sqliteStamp: nil)
    }

    /// Waits for the key's load (joining one in flight), answering with `fallback` when the load
    /// passes ``Freshness/softTimeout`` or fails within ``Freshness/failSafeFor``.
    ///
    /// While the key's last load failed within its backoff period, a caller with a fallback it
    /// may be served after a failure gets it at once: an outage does not make every call of a hot
    /// key wait for a load that is expected to fail.
    func loadFallingBack<Value>(on fallback: StaleEntry<Value>?, call: LoadCall<Value>) async throws -> Value {
        let wait: @Sendable () async throws -> Value = { try await self.freshFlightValue(call) }
        guard let fallback else { return try await wait() }
        let now = self.clock.nowMilliseconds()
        // The policy is asked about the error of the failure that started the backoff: a caller
        // whose fail-safe excludes that error loads, as it would have without the backoff.
        if let failure = self.refreshes.backoffError(call.key, atMilliseconds: now),
            ServeDecision.mayServeAfterFailure(fallback.times, for: call.policy, error: failure, atMilliseconds: now)
        {
            self.recorder.add(.backedOffLoads)
            self.recorder.add(.failSafeActivations)
            return fallback.value
        }
        do {
            let value: Value
            if let softTimeout = call.policy.softTimeout {
                // Stopping the wait leaves the flight running, uncancelled: a lookup still reading
                // a slow remote tier goes on to its load, which stores (cancelling it would leave
                // every such caller on the stale copy, with no load ever started).
                guard
                    let loaded = try await Deadline.value(
                        within: softTimeout, clock: self.clock, cancelsOnTimeout: false, wait)
                else {
                    self.recorder.add(.softTimeouts)
                    self.recorder.add(.staleHits)
                    return fallback.value
                }
                value = loaded
            } else {
                value = try await wait()
            }
            self.refreshes.recordSuccess(call.key)
            return value
        } catch {
            let now = self.clock.nowMilliseconds()
            if !(error is CancellationError) {
                self.refreshes.recordFailure(call.key, error: error, atMilliseconds: now)
            }
            guard
                ServeDecision.mayServeAfterFailure(fallback.times, for: call.policy, error: error, atMilliseconds: now)
            else { throw error }
            self.recorder.add(.failSafeActivations)
            self.logger.warning(
                "panza: load failed; answered with the stale entry (fail-safe)",
                metadata: ["id": "\(call.id)", "key": "\(call.key)", "error": "\(error)"]
            )
            return fallback.value
        }
    }
}

/// The ticket a flight's leader takes before its lookup, handed to its load on a miss.
final class LoadTicketBox: @unchecked Sendable {
    /// Written by the leader's lookup, read by the load task it starts afterwards.
    private var condition: StoreCondition?

    func take(_ condition: StoreCondition) { self.condition = condition }

    /// Ends the ticket when the lookup answered (or failed) instead of a load.
    func release(_ fence: VersionFence) {
        if let condition = self.condition { fence.endLoad(condition.ticket) }
        self.condition = nil
    }

    /// The ticket, for the load that now owns it (and ends it).
    func handOver() -> StoreCondition? {
        defer { self.condition = nil }
        return self.condition
    }
}
