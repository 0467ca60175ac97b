import Logging
import Synchronization

/// One read-through call: what its load needs, wherever the load runs (the caller's flight, a
/// background refresh).
struct LoadCall<Value: Codable & Sendable>: Sendable {
    let key: CacheKey
    let id: String
    let timeToLive: Duration?
    let limits: LoadLimits?
    let concurrencyKey: String?
    let policy: Freshness
    let modes: CacheModes
    let loader: @Sendable () async throws -> Value
}

/// What a read-through flight produced: an entry found in a tier (fresh or stale), or a loaded value.
enum Fetched<Value: Sendable>: Sendable {
    case found(Value, EntryTimes)
    case loaded(Value)

    var value: Value {
        switch self {
        case .found(let value, _), .loaded(let value): value
        }
    }
}

/// An entry past its time to live but within its stale period.
struct StaleEntry<Value: Sendable>: Sendable {
    let value: Value
    let times: EntryTimes
}

/// The conditions a background refresh's store lands on.
struct RefreshGuard: Sendable {
    /// Taken when the refresh started: a write of the key since then wins over the refresh.
    let ticket: VersionFence.Ticket
    /// When the refresh started: the refreshed value's creation time, so that a removal made
    /// after it started (here or on another machine) removes the refreshed value too.
    let createdAtMilliseconds: Int64
    /// The key's SQLite write stamp when the refresh took its lease (see ``SQLiteWrite/refreshStamp``).
    let sqliteStamp: Int64?
}

/// What memory holds for a key, for the read-through path.
enum MemoryEntry<Value: Sendable> {
    case fresh(Value, EntryTimes)
    case stale(StaleEntry<Value>)
    case miss
}

extension TieredCache {
    /// Looks `key` up in memory, with the entry's times. A fresh entry counts as a memory hit; a
    /// stale one as a miss (``CacheStatistics/staleHits`` counts it when it is served).
    func memoryEntry<Value: Sendable>(_ key: CacheKey, as _: Value.Type) throws -> MemoryEntry<Value> {
        guard let memory = self.memory else { return .miss }
        switch memory.lookup(key.rawValue, nowMilliseconds: self.clock.nowMilliseconds()) {
        case .hit(let stored, let storedBytes, let times):
            guard let value = stored as? Value else { throw Self.typeMismatch(stored, Value.self, key: key) }
            self.recorder.add(.memoryHits)
            self.configuration.trace?.record(key: key.rawValue, size: storedBytes, source: .memory, latency: .zero)
            return .fresh(value, times)
        case .stale(let stored, _, let times):
            self.recorder.add(.memoryMisses)
            guard let value = stored as? Value else { throw Self.typeMismatch(stored, Value.self, key: key) }
            return .stale(StaleEntry(value: value, times: times))
        case .expired:
            self.recorder.add(.expired)
            self.recorder.add(.memoryMisses)
            return .miss
        case .miss:
            self.recorder.add(.memoryMisses)
            return .miss
        }
    }

    /// Starts a background refresh when a fresh hit falls after ``Freshness/refreshAhead`` of
    /// the entry's fresh period.
    func refreshIfDue<Value>(_ call: LoadCall<Value>, times: EntryTimes) {
        guard let ratio = call.policy.refreshAhead,
            times.isRefreshDue(atMilliseconds: self.clock.nowMilliseconds(), ratio: ratio)
        else { return }
        self.startRefresh(call)
    }

    /// The stale entry's value when the policy serves it at once (within ``Freshness/staleFor``),
    /// having started a background refresh; `nil` otherwise.
    func staleWhileRevalidate<Value>(_ entry: StaleEntry<Value>, call: LoadCall<Value>) -> Value? {
        guard case .stale(let age) = entry.times.state(atMilliseconds: self.clock.nowMilliseconds()),
            age < call.policy.staleFor.wholeMilliseconds
        else { return nil }
        self.recorder.add(.staleHits)
        self.startRefresh(call)
        return entry.value
    }

    /// The stale entry, when the policy may answer with it a load that fails or is slow.
    func fallbackCandidate<Value>(_ entry: StaleEntry<Value>, call: LoadCall<Value>) -> StaleEntry<Value>? {
        guard case .stale(let age) = entry.times.state(atMilliseconds: self.clock.nowMilliseconds()),
            age < call.policy.retentionMilliseconds
        else { return nil }
        return entry
    }

    /// Waits for the key's load (joining one in flight), answering with `fallback` when the load
    /// passes ``Freshness/softTimeout`` or fails within ``Freshness/failSafeFor``.
    func loadFallingBack<Value>(on fallback: StaleEntry<Value>?, call: LoadCall<Value>) async throws -> Value {
        let wait: @Sendable () async throws -> Value = {
            let outcome: Fetched<Value> = try await self.singleFlight.run(
                key: call.key.rawValue,
                onJoin: { self.recorder.add(.coalescedWaits) },
                lookup: {
                    // A fresh entry may be there by now: stored by a load that finished since this
                    // caller looked, or, below memory, by another process's refresh.
                    if case .fresh(let value, let times) = try self.memoryEntry(call.key, as: Value.self) {
                        return .found(value, times)
                    }
                    return try await self.lowerLookupEntry(call.key, as: Value.self, acceptingStale: false).map {
                        .found($0.value, $0.times)
                    }
                },
                load: { .loaded(try await self.load(call)) }
            )
            return outcome.value
        }
        guard let fallback else { return try await wait() }
        do {
            guard let softTimeout = call.policy.softTimeout else { return try await wait() }
            // Stopping the wait leaves the load running: it belongs to the flight, and stores.
            if let value = try await Deadline.value(
                within: softTimeout, clock: self.clock, cancelsOnTimeout: true, wait)
            {
                return value
            }
            self.recorder.add(.softTimeouts)
            self.recorder.add(.staleHits)
            return fallback.value
        } catch {
            guard call.policy.allowsFailSafe(for: error),
                case .stale(let age) = fallback.times.state(atMilliseconds: self.clock.nowMilliseconds()),
                age < call.policy.failSafeFor.wholeMilliseconds
            else { throw error }
            self.recorder.add(.failSafeActivations)
            self.logger.warning(
                "panza: load failed; answered with the stale entry (fail-safe)",
                metadata: [
                    "id": "\(call.id)", "key": "\(call.key)", "error": "\(error)",
                    "expiredForMilliseconds": "\(age)",
                ]
            )
            return fallback.value
        }
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

    /// Starts a background refresh of the call's key, unless one of this cache runs already.
    func startRefresh<Value>(_ call: LoadCall<Value>) {
        guard !call.modes.cacheOnly, !self.isClosedNow else { return }
        let key = call.key.rawValue
        self.refreshes.withLock { tasks in
            guard tasks[key] == nil else { return }
            tasks[key] = Task {
                await self.refresh(call)
                _ = self.refreshes.withLock { $0.removeValue(forKey: key) }
            }
        }
    }

    /// Reloads the call's key and stores the result unless the key was written or removed since
    /// the refresh started; one process of those sharing the SQLite file at a time.
    private func refresh<Value>(_ call: LoadCall<Value>) async {
        let key = call.key
        var stamp: Int64?
        if let sqlite = self.sqliteTier {
            let now = self.clock.nowMilliseconds()
            let leaseLength = (call.policy.hardTimeout ?? .seconds(60)) + .seconds(5)
            do {
                guard
                    let taken = try await sqlite.acquireRefreshLease(
                        key: key, holder: self.refreshHolder, now: now, until: now + leaseLength.wholeMilliseconds)
                else {
                    self.logger.debug(
                        "panza: refresh left to the process that holds its lease", metadata: ["key": "\(key)"])
                    return
                }
                stamp = taken
            } catch {
                self.recorder.add(.refreshFailures)
                self.logger.warning(
                    "panza: background refresh could not take its lease; the stale entry stays",
                    metadata: ["key": "\(key)", "error": "\(error)"])
                return
            }
        }
        let startedAt = self.clock.nowMilliseconds()
        let leaseStamp = stamp
        do {
            _ = try await self.withHardTimeout(call) {
                let ticket = self.fence.beginRead()
                defer { self.fence.endRead(ticket) }
                return try await self.loadAndStore(
                    call,
                    refresh: RefreshGuard(ticket: ticket, createdAtMilliseconds: startedAt, sqliteStamp: leaseStamp))
            }
            self.recorder.add(.refreshes)
        } catch {
            self.recorder.add(.refreshFailures)
            self.logger.warning(
                "panza: background refresh failed; the stale entry stays",
                metadata: ["id": "\(call.id)", "key": "\(key)", "error": "\(error)"])
        }
        if stamp != nil, let sqlite = self.sqliteTier {
            try? await sqlite.releaseRefreshLease(key: key, holder: self.refreshHolder)
        }
    }

    /// Returns once the background refreshes (see ``Freshness``) running now have ended, their
    /// results stored or their failures counted: for tests, and for programs that want a
    /// refresh's value in place before they go on.
    public func waitForRefreshes() async {
        let tasks = self.refreshes.withLock { Array($0.values) }
        for task in tasks { await task.value }
    }

    /// Cancels the background refreshes (on close).
    func cancelRefreshes() {
        let tasks = self.refreshes.withLock { tasks in
            defer { tasks = [:] }
            return Array(tasks.values)
        }
        for task in tasks { task.cancel() }
    }
}
