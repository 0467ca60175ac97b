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
}

/// An entry past its time to live but within its stale period.
struct StaleEntry<Value: Sendable>: Sendable {
    let value: Value
    let times: EntryTimes
}

/// What memory holds for a key, for the read-through path.
enum MemoryEntry<Value: Sendable> {
    case fresh(Value, EntryTimes)
    case stale(StaleEntry<Value>)
    case miss
}

/// Background refreshes: decided when a stale or due hit is served, run as any load is (one
/// load path: ``TieredCache/loadAndStore(_:condition:)``), one per key across the processes that
/// share the SQLite file.
extension TieredCache {
    /// Starts a background refresh of the call's key, unless one of this cache runs already, the
    /// cache is closed, cache-only mode is on or the key's last refresh failed within its backoff.
    ///
    /// The refresh's ticket and creation time are taken here, when it is decided: a write of the
    /// key after the hit that started it wins over it.
    func startRefresh<Value>(_ call: LoadCall<Value>) {
        guard !call.modes.cacheOnly, !self.isClosedNow else { return }
        let now = self.clock.nowMilliseconds()
        if self.refreshes.isBackingOff(call.key, atMilliseconds: now) {
            self.recorder.add(.backedOffLoads)
            return
        }
        let ticket = self.fence.beginLoad(call.key)
        let condition = StoreCondition(ticket: ticket, createdAtMilliseconds: now, sqliteStamp: nil)
        // The refresh ends its ticket: after its store, or when it gives up before its load.
        let started = self.refreshes.start(call.key) {
            await self.refresh(call, condition: condition)
        }
        if !started { self.fence.endLoad(ticket) }
    }

    /// Reloads the call's key and stores the result unless the key was written or removed since
    /// the refresh was decided; one process of those sharing the SQLite file at a time. A refresh
    /// runs at most its ``Freshness/hardTimeout`` (60 s without one), then is cancelled.
    private func refresh<Value>(_ call: LoadCall<Value>, condition: StoreCondition) async {
        let key = call.key
        let limit = call.policy.hardTimeout ?? .seconds(60)
        var condition = condition
        if let sqlite = self.sqliteTier {
            let now = self.clock.nowMilliseconds()
            let leaseLength = limit + .seconds(5)
            do {
                guard
                    let taken = try await sqlite.acquireRefreshLease(
                        key: key, holder: self.refreshHolder, now: now, until: now + leaseLength.wholeMilliseconds)
                else {
                    self.fence.endLoad(condition.ticket)
                    self.logger.debug(
                        "panza: refresh left to the process that holds its lease", metadata: ["key": "\(key)"])
                    return
                }
                condition.sqliteStamp = taken
            } catch {
                self.fence.endLoad(condition.ticket)
                self.recorder.add(.refreshFailures)
                self.refreshes.recordFailure(key, error: error, atMilliseconds: self.clock.nowMilliseconds())
                self.logger.warning(
                    "panza: background refresh could not take its lease; the stale entry stays",
                    metadata: ["key": "\(key)", "error": "\(error)"])
                return
            }
        }
        let settled = condition
        do {
            guard
                try await Deadline.value(
                    within: limit, clock: self.clock, cancelsOnTimeout: true,
                    {
                        // A loader that ignores cancellation may store after the timeout: the
                        // ticket watches the key until then.
                        defer { self.fence.endLoad(settled.ticket) }
                        return try await self.loadAndStore(call, condition: settled)
                    }) != nil
            else {
                self.recorder.add(.hardTimeouts)
                throw PanzaError(
                    code: .timedOut, message: "the refresh did not finish within \(limit)", key: key.rawValue)
            }
            self.recorder.add(.refreshes)
            self.refreshes.recordSuccess(key)
        } catch {
            self.recorder.add(.refreshFailures)
            self.refreshes.recordFailure(key, error: error, atMilliseconds: self.clock.nowMilliseconds())
            self.logger.warning(
                "panza: background refresh failed; the stale entry stays",
                metadata: ["id": "\(call.id)", "key": "\(key)", "error": "\(error)"])
        }
        if condition.sqliteStamp != nil, let sqlite = self.sqliteTier {
            try? await sqlite.releaseRefreshLease(key: key, holder: self.refreshHolder)
        }
    }

    /// Returns once the background refreshes (see ``Freshness``) running now have ended, their
    /// results stored or their failures counted: for tests, and for programs that want a
    /// refresh's value in place before they go on.
    public func waitForRefreshes() async {
        for task in self.refreshes.running { await task.value }
    }
}
