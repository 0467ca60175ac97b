import Synchronization

/// A snapshot of what a ``TieredCache`` has done since it opened.
public struct CacheStatistics: Hashable, Sendable, Codable {
    /// Lookups of one tier.
    public struct TierCounts: Hashable, Sendable, Codable {
        /// Lookups this tier answered.
        public var hits: Int = 0
        /// Lookups this tier did not answer (including expired and corrupt entries).
        public var misses: Int = 0
        /// Lookups that failed with an error and were treated as misses.
        public var errors: Int = 0
        /// Lookups that passed ``TieredCache/Configuration/remoteReadTimeout`` and were treated as
        /// misses (the read went on in the background).
        public var timeouts: Int = 0
        /// Lookups that skipped the tier because its circuit breaker was open.
        public var skipped: Int = 0
        /// Reads that answered, but more slowly than the cache's loads typically take (counted
        /// toward opening the breaker; see ``CircuitBreaker/Configuration/skipsTiersSlowerThanLoads``).
        public var slow: Int = 0
        /// The tier's circuit breaker, for the remote tier; `nil` for SQLite.
        public var breaker: CircuitBreaker.State? = nil

        /// Counts of one tier; all zero by default.
        public init(hits: Int = 0, misses: Int = 0, errors: Int = 0, timeouts: Int = 0, skipped: Int = 0, slow: Int = 0)
        {
            self.hits = hits
            self.misses = misses
            self.errors = errors
            self.timeouts = timeouts
            self.skipped = skipped
            self.slow = slow
        }

        /// `hits / (hits + misses)`, or 0 before the first lookup.
        public var hitRatio: Double {
            let total = self.hits + self.misses
            return total == 0 ? 0 : Double(self.hits) / Double(total)
        }
    }

    /// The memory tier.
    public var memory = TierCounts()
    /// The tiers below memory, by ``CacheTier/name``, in chain order.
    public var tiers: [String: TierCounts] = [:]
    /// Loader (or memoized function) calls.
    public var loads = 0
    /// Loader calls that threw.
    public var loadFailures = 0
    /// Callers that waited for an identical call already in flight instead of starting their own.
    public var coalescedWaits = 0
    /// Blobs that failed verification; each was treated as a miss and removed.
    public var corruptBlobs = 0
    /// Entries found expired (and removed).
    public var expired = 0
    /// Values stored by `set`, loaders and memoized calls.
    public var writes = 0
    /// Write-behind batches applied to tiers below memory.
    public var writeBatches = 0
    /// Write-behind batches that failed and were retried.
    public var writeFailures = 0
    /// Operations waiting in the in-memory write-behind queues right now (the SQLite outbox is
    /// counted by `panza stats`).
    public var pendingWrites = 0
    /// Envelope bytes waiting in the in-memory write-behind queues right now.
    public var pendingBytes = 0
    /// Writes that failed for good and were moved to the dead letters since the cache opened.
    public var droppedWrites = 0
    /// Envelope bytes written to tiers below memory (each tier counted).
    public var bytesWritten = 0
    /// Envelope bytes read from tiers below memory.
    public var bytesRead = 0
    /// Entries held by the memory tier.
    public var memoryEntries = 0
    /// Bytes held by the memory tier.
    public var memoryBytes = 0
    /// Entries evicted from the memory tier to respect its bounds.
    public var memoryEvictions = 0
    /// Loader calls that waited for a rate or concurrency limit.
    public var throttledWaits = 0
    /// Seconds loader calls spent waiting for limits, summed.
    public var throttledSeconds = 0.0
    /// Loader calls repeated after the loader threw ``RateLimitedError``.
    public var rateLimitRetries = 0
    /// Loader results that were returned to their callers but could not be stored (they could
    /// not be encoded, or exceeded ``TieredCache/Configuration/maxValueBytes``).
    public var unstorableResults = 0
    /// Stored values that did not decode as the type asked for (written by another program, or
    /// under another type): each was a miss, and was removed from the local tiers.
    public var undecodableValues = 0
    /// Objects of a shared tier refused because their signature did not verify (unsigned, signed
    /// with an unknown key, for another object key or bucket, or tampered with): each was a miss,
    /// was never copied into the local tiers and was left in place.
    public var untrustedBlobs = 0
    /// Invalidations made by other caches (busts on other machines) applied to the local tiers.
    public var invalidationsApplied = 0
    /// Polls of the shared tier's invalidations that failed (local entries were served meanwhile).
    public var invalidationPollFailures = 0
    /// Calls answered with an entry past its time to live, within ``Freshness/staleFor``
    /// (stale-while-revalidate) or after a soft timeout.
    public var staleHits = 0
    /// Background refreshes whose load succeeded (stale-while-revalidate,
    /// ``Freshness/refreshAhead``); the value is stored unless a newer write overtook it.
    public var refreshes = 0
    /// Background refreshes whose load failed or timed out; the stale entry was kept.
    public var refreshFailures = 0
    /// Calls whose load failed and that were answered with a stale entry instead
    /// (``Freshness/failSafeFor``).
    public var failSafeActivations = 0
    /// Calls that stopped waiting for a load after ``Freshness/softTimeout`` and got a stale entry.
    public var softTimeouts = 0
    /// Loads given up after ``Freshness/hardTimeout``.
    public var hardTimeouts = 0
    /// Loads (misses' and refreshes') whose result was returned but not stored, because a write
    /// of their key (a `set`, a removal, a bust) came while they ran: a result is kept only if
    /// nothing newer happened to its key while it loaded.
    public var discardedLoads = 0
    /// Background refreshes and fail-safe loads not started because the key's last attempt failed
    /// within its backoff period (the stale entry was served).
    public var backedOffLoads = 0
}

/// Lock-free counters behind ``CacheStatistics``.
final class StatisticsRecorder: Sendable {
    enum Counter: Int, CaseIterable {
        case memoryHits, memoryMisses, loads, loadFailures, coalescedWaits, corruptBlobs, expired, writes
        case writeBatches, writeFailures, bytesWritten, bytesRead, memoryEvictions
        case throttledWaits, throttledNanoseconds, rateLimitRetries, droppedWrites, unstorableResults
        case undecodableValues, untrustedBlobs, invalidationsApplied, invalidationPollFailures
        case staleHits, refreshes, refreshFailures, failSafeActivations, softTimeouts, hardTimeouts
        case discardedLoads, backedOffLoads
    }

    /// Every counter, striped by CPU: the cache's counters first (indexed by ``Counter``), then six
    /// per tier (hits, misses, errors, timeouts, skipped, slow). Hits on several cores then share
    /// no cache line, and bumping a counter retains nothing.
    private let counters: StripedCounters
    let tierNames: [String]

    private static let perTier = 6
    /// The index of the first tier's first counter (after the cache's own).
    private let firstTierCounter = Counter.allCases.count

    init(tierNames: [String]) {
        self.tierNames = tierNames
        self.counters = StripedCounters(count: Counter.allCases.count + tierNames.count * Self.perTier)
    }

    @inline(__always)
    func add(_ counter: Counter, _ amount: Int = 1) { self.counters.add(counter.rawValue, amount) }

    func tierHit(_ tier: Int) { self.addTier(tier, 0) }
    func tierMiss(_ tier: Int) { self.addTier(tier, 1) }
    func tierError(_ tier: Int) { self.addTier(tier, 2) }
    func tierTimeout(_ tier: Int) { self.addTier(tier, 3) }
    func tierSkip(_ tier: Int) { self.addTier(tier, 4) }
    func tierSlow(_ tier: Int) { self.addTier(tier, 5) }

    func value(_ counter: Counter) -> Int { self.counters.load(counter.rawValue) }

    @inline(__always)
    private func addTier(_ tier: Int, _ offset: Int) {
        self.counters.add(self.firstTierCounter + tier * Self.perTier + offset)
    }

    private func tierValue(_ tier: Int, _ offset: Int) -> Int {
        self.counters.load(self.firstTierCounter + tier * Self.perTier + offset)
    }

    func snapshot() -> CacheStatistics {
        var statistics = CacheStatistics()
        statistics.memory = .init(hits: self.value(.memoryHits), misses: self.value(.memoryMisses))
        for (index, name) in self.tierNames.enumerated() {
            statistics.tiers[name] = .init(
                hits: self.tierValue(index, 0),
                misses: self.tierValue(index, 1),
                errors: self.tierValue(index, 2),
                timeouts: self.tierValue(index, 3),
                skipped: self.tierValue(index, 4),
                slow: self.tierValue(index, 5)
            )
        }
        statistics.unstorableResults = self.value(.unstorableResults)
        statistics.undecodableValues = self.value(.undecodableValues)
        statistics.untrustedBlobs = self.value(.untrustedBlobs)
        statistics.invalidationsApplied = self.value(.invalidationsApplied)
        statistics.invalidationPollFailures = self.value(.invalidationPollFailures)
        statistics.loads = self.value(.loads)
        statistics.loadFailures = self.value(.loadFailures)
        statistics.coalescedWaits = self.value(.coalescedWaits)
        statistics.corruptBlobs = self.value(.corruptBlobs)
        statistics.expired = self.value(.expired)
        statistics.writes = self.value(.writes)
        statistics.writeBatches = self.value(.writeBatches)
        statistics.writeFailures = self.value(.writeFailures)
        statistics.bytesWritten = self.value(.bytesWritten)
        statistics.bytesRead = self.value(.bytesRead)
        statistics.memoryEvictions = self.value(.memoryEvictions)
        statistics.throttledWaits = self.value(.throttledWaits)
        statistics.throttledSeconds = Double(self.value(.throttledNanoseconds)) / 1e9
        statistics.rateLimitRetries = self.value(.rateLimitRetries)
        statistics.droppedWrites = self.value(.droppedWrites)
        statistics.staleHits = self.value(.staleHits)
        statistics.refreshes = self.value(.refreshes)
        statistics.refreshFailures = self.value(.refreshFailures)
        statistics.failSafeActivations = self.value(.failSafeActivations)
        statistics.softTimeouts = self.value(.softTimeouts)
        statistics.hardTimeouts = self.value(.hardTimeouts)
        statistics.discardedLoads = self.value(.discardedLoads)
        statistics.backedOffLoads = self.value(.backedOffLoads)
        return statistics
    }
}
