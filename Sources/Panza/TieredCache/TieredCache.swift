import Foundation
public import Logging
import Synchronization

/// A chain of cache tiers (memory, SQLite, remote) with read-through, write-behind, single-flight
/// loads and memoization.
///
/// ```swift
/// var configuration = TieredCache.Configuration()
/// configuration.memory = .init(maxEntries: 10_000, maxBytes: 64 << 20)
/// configuration.sqlite = .init(path: "cache.sqlite", maxBytes: 1 << 30)
/// let cache = try await TieredCache(configuration: configuration)
/// let forecast = try await cache.value(forKey: "oslo") { try await api.forecast("Oslo") }
/// ```
///
/// Reads go down the chain and fill the tiers above on a hit. Writes land in memory before `set`
/// returns and reach the tiers below from write-behind queues, in batches. Concurrent requests for
/// the same missing key share one lookup of the lower tiers and one loader call.
public final class TieredCache: Sendable {
    /// The longest key accepted, in UTF-8 bytes.
    public static let maximumKeyLength = 1024

    /// The configuration the cache was opened with.
    public let configuration: Configuration
    let memory: MemoryTier?
    /// ``memory`` and ``recorder`` without reference counting, for the memoize fast path: a retain
    /// of an object that every hit shares is an atomic write to one cache line, which the cores
    /// would pass back and forth on every hit. The cache holds both strongly for its whole life.
    let unretainedMemory: Unmanaged<MemoryTier>?
    let unretainedRecorder: Unmanaged<StatisticsRecorder>
    /// The tiers below memory, in chain order, with how each is written.
    let slots: [TierSlot]
    /// The in-memory write-behind queues, one per tier written from memory, in chain order.
    let lanes: [Lane]
    /// Drains the SQLite outbox into the remote tier, when both exist and the remote is writable.
    let outbox: (queue: OutboxWriteQueue, drainer: QueueDrainer)?
    /// Versions every write, guards fills from lower tiers and the stores of loads, and is where
    /// the cache closes (see ``VersionFence``).
    let fence: VersionFence
    let recorder: StatisticsRecorder
    let logger: Logger
    /// The loads in flight, one per key; a write of a key detaches its flight.
    let singleFlight: SingleFlight
    /// The clock of creation and expiry times and of loader timeouts (``Configuration/clock``).
    let clock: any CacheClock
    /// The background refreshes of this cache (see ``Freshness``).
    let refreshes: RefreshScheduler
    /// The SQLite tier, whose leases keep one refresh of a key at a time across processes.
    let sqliteTier: SQLiteTier?
    /// The SQLite tier and its write queue, when its inline readers can answer memory misses on
    /// the caller's thread (``localHit(_:as:refreshAhead:)``).
    let localReads: LocalReads?
    /// This cache's name in refresh leases.
    let refreshHolder = "\(ProcessInfo.processInfo.processIdentifier)-\(UInt64.random(in: 1...UInt64.max))"
    let drainerTasks: [Task<Void, Never>]
    let outboxTask: Task<Void, Never>?
    private let currentModes: Mutex<CacheModes>
    /// Whether any bust mode is on: read on every memory hit, so kept apart from `currentModes`.
    let bustModeActive: Atomic<Bool>
    /// The numbers of memoized functions in the memory tier's fast keys, by canonical key prefix
    /// (id and arity): one per function, whichever ``Memoized`` wraps it.
    let fastKeyFunctions = Mutex<[[UInt8]: UInt32]>([:])
    /// Memoize ids whose unstorable results were already logged.
    let unstorableWarned = Mutex<Set<String>>([])
    /// Reports through swift-metrics; `nil` when ``Configuration/metrics`` is `nil`.
    let metricsReporter: MetricsReporter?
    /// The counters of each memoized id, made by ``memoize(id:timeToLive:freshness:limits:concurrencyKey:key:rawKey:_:)``.
    let idCounters = IdCounterRegistry()
    /// The periodic metrics report.
    let metricsTask = Mutex<Task<Void, Never>?>(nil)
    /// How long loads take, against which remote reads are judged slow.
    let loaderLatency: LoaderLatency
    /// ``Configuration/trace``, kept apart: the memory hit path reads it.
    let trace: AccessTrace?
    /// Reads the shared tier's invalidations (busts made by other caches); `nil` without one.
    let invalidationFollower: InvalidationFollower?

    /// A cache with a memory tier and a SQLite file at `path`, with the default settings: the
    /// counterpart of Python panza's `SQLiteCache(path)`.
    ///
    /// ```swift
    /// let cache = try await TieredCache(path: "cache.sqlite")
    /// ```
    ///
    /// - Throws: what ``init(configuration:logger:)`` throws.
    public convenience init(path: String, logger: Logger? = nil) async throws {
        var configuration = Configuration()
        configuration.sqlite = .init(path: path)
        try await self.init(configuration: configuration, logger: logger)
    }

    /// Opens the configured tiers.
    ///
    /// - Parameters:
    ///   - configuration: the tiers and their settings.
    ///   - logger: where Panza logs (misses at `debug`, retries and fallbacks at `info` and
    ///     `warning`, lost writes at `error`); by default nothing is logged.
    /// - Throws: ``PanzaError`` when a tier cannot be opened (for SQLite, naming the path).
    public init(configuration: Configuration, logger: Logger? = nil) async throws {
        try configuration.validate()
        let logger = logger ?? configuration.deprecatedLogger ?? .panzaDisabled
        self.configuration = configuration
        self.trace = configuration.trace
        self.clock = configuration.clock
        self.logger = logger
        let memory = try configuration.memory.map { try MemoryTier(configuration: $0) }
        self.memory = memory
        self.unretainedMemory = memory.map { Unmanaged.passUnretained($0) }
        let fence = VersionFence()
        self.fence = fence
        let singleFlight = SingleFlight()
        self.singleFlight = singleFlight
        let tierNames = [configuration.sqlite.map { _ in SQLiteTier.tierName }, configuration.remote?.name]
        let recorder = StatisticsRecorder(tierNames: tierNames.compactMap { $0 })
        self.recorder = recorder
        self.unretainedRecorder = Unmanaged.passUnretained(recorder)
        let chain = try await CacheChain.open(
            configuration: configuration, logger: logger, recorder: recorder
        ) { invalidations, lanes in
            Self.applyInvalidations(
                invalidations, memory: memory, lanes: lanes, fence: fence, flights: singleFlight)
        }
        self.sqliteTier = chain.sqlite
        self.slots = chain.slots
        self.lanes = chain.lanes
        self.outbox = chain.outbox
        self.localReads = chain.localReads
        self.invalidationFollower = chain.invalidationFollower
        self.loaderLatency = chain.loaderLatency
        self.refreshes = RefreshScheduler()
        self.drainerTasks = chain.lanes.map { lane in Task { await lane.drainer.run() } }
        self.outboxTask = chain.outbox.map { outbox in Task { await outbox.drainer.run() } }
        self.currentModes = Mutex(configuration.modes)
        self.bustModeActive = Atomic(configuration.modes.bust != .none)
        self.metricsReporter = configuration.metrics.map { MetricsReporter(label: $0.label, factory: $0.factory) }
        if let reporter = self.metricsReporter, let interval = configuration.metrics?.interval {
            // The task holds what it reports from, never the cache: a weak reference would give the
            // cache a side table, and every retain of it on the hit path would take the slow path.
            let source = self.statisticsSource
            let registry = self.idCounters
            let task = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    guard !Task.isCancelled else { return }
                    reporter.report(source.snapshot(), ids: registry.all)
                }
            }
            self.metricsTask.withLock { $0 = task }
        }
    }

    /// Pushes the counters to swift-metrics now (the cache also does it every
    /// ``Configuration/MetricsReporting/interval`` and when it closes).
    public func reportMetrics() {
        self.metricsReporter?.report(self.statistics, ids: self.idCounters.all)
    }

    /// The counters of memoized id `id`, made on first use.
    func counters(forID id: String) -> IdCounters {
        self.idCounters.counters(forID: id)
    }

    /// What ``statistics`` reads.
    private var statisticsSource: StatisticsSource {
        StatisticsSource(recorder: self.recorder, lanes: self.lanes, slots: self.slots, memory: self.memory)
    }

    deinit {
        self.metricsTask.withLock { $0?.cancel() }
        self.invalidationFollower?.stop()
        for lane in self.lanes {
            lane.queue.close()
            lane.drainer.close()
        }
        self.outbox?.drainer.abandon()
    }

    /// The tiers below memory, in chain order.
    public var tiers: [any CacheTier] { self.slots.map(\.tier) }

    /// The bust, cache-only and print-misses modes in force. Changes apply to the next call.
    public var modes: CacheModes {
        get { self.currentModes.withLock { $0 } }
        set {
            self.currentModes.withLock { modes in
                modes = newValue
                self.bustModeActive.store(newValue.bust != .none, ordering: .relaxed)
            }
        }
    }

    /// What the cache has done since it opened.
    public var statistics: CacheStatistics {
        self.statisticsSource.snapshot()
    }

    // MARK: Plain keys

    /// Stores `value` under `key` in every tier.
    ///
    /// With write-behind (the default) the value is in memory when this returns and reaches the
    /// tiers below shortly after; call ``flush()`` to wait for them. When a tier's queue is full
    /// (``Configuration/WriteBehind``), `set` waits for room; cancelling the task ends the wait.
    ///
    /// - Parameters:
    ///   - value: any `Encodable` value; its declared type picks how it is stored.
    ///   - key: 1 to ``maximumKeyLength`` UTF-8 bytes.
    ///   - timeToLive: how long the entry lives; `nil` for ``Configuration/defaultTimeToLive``.
    ///     Zero or less means "do not reuse": nothing is stored, and the value that `key` held
    ///     before is removed, since it was replaced. Below a millisecond rounds up to 1 ms.
    /// - Throws: ``PanzaError/Code/invalidKey``, ``PanzaError/Code/valueTooLarge``,
    ///   ``PanzaError/Code/encodingFailed``, ``PanzaError/Code/closed``, `CancellationError`.
    public func set<Value: Encodable & Sendable>(
        _ value: Value,
        forKey key: String,
        timeToLive: Duration? = nil
    ) async throws {
        try await self.store(value, key: try Self.plainKey(key), timeToLive: timeToLive, replacing: true)
    }

    /// Returns the value stored under `key`, or `nil` on a miss.
    ///
    /// A value below memory that does not decode as `Value` is a miss: it is counted in
    /// ``CacheStatistics/undecodableValues`` and removed from the local tiers.
    ///
    /// - Throws: ``PanzaError/Code/typeMismatch`` when the memory tier holds a value of another type
    ///   under `key` (this process stored it as another type).
    public func value<Value: Decodable & Sendable>(
        forKey key: String,
        as type: Value.Type = Value.self
    ) async throws -> Value? {
        try await self.lookup(try Self.plainKey(key), as: type)
    }

    /// Returns the value stored under `key`, or calls `loader`, stores its result and returns it.
    ///
    /// Concurrent calls for the same key share one lookup and one loader call. A loader error
    /// reaches every waiting caller and is not stored.
    ///
    /// - Parameters:
    ///   - key: 1 to ``maximumKeyLength`` UTF-8 bytes.
    ///   - timeToLive: how long the loaded value lives; `nil` for ``Configuration/defaultTimeToLive``.
    ///   - freshness: stale-while-revalidate, fail-safe, loader timeouts and refresh-ahead for this
    ///     call (see ``Freshness``); `nil` for ``Configuration/defaultFreshness``.
    ///   - limits: rate and concurrency limits on the loader call, on top of
    ///     ``Configuration/loadLimits``.
    ///   - loader: the expensive call; its result is returned even when it cannot be stored.
    /// - Throws: the loader's error, or ``PanzaError/Code/cacheOnlyMiss`` in cache-only mode;
    ///   ``PanzaError/Code/timedOut`` when the load passed ``Freshness/hardTimeout`` with no stale
    ///   value to fall back on; ``PanzaError/Code/invalidConfiguration`` for an invalid `freshness`.
    public func value<Value: Codable & Sendable>(
        forKey key: String,
        timeToLive: Duration? = nil,
        freshness: Freshness? = nil,
        limits: LoadLimits? = nil,
        loader: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        try freshness?.validate()
        return try await self.readThrough(
            key: try Self.plainKey(key),
            id: "",
            timeToLive: timeToLive,
            limits: limits,
            freshness: freshness,
            loader: loader
        )
    }

    /// Removes `key` from every tier. Returns once every tier applied the removal (for a remote
    /// tier below SQLite: once the removal is in the SQLite outbox, which hides the remote copy).
    ///
    /// From the moment it is called, no read of this cache returns the removed value, even while
    /// a tier is still applying the removal.
    public func removeValue(forKey key: String) async throws {
        try await self.remove(.remove(try Self.plainKey(key)))
    }

    /// Removes every entry from every tier. Returns once every tier applied the removal.
    ///
    /// From the moment it is called, no read of this cache returns an entry written before it.
    public func bustAll() async throws {
        try await self.remove(.removeAll)
    }

    // MARK: Invalidations from other caches

    /// Reads the shared tier's new invalidations (busts made by caches on other machines) now,
    /// instead of at the next ``InvalidationSharing/invalidationPollInterval``, and applies them to
    /// memory and SQLite.
    ///
    /// - Returns: how many invalidations were applied.
    /// - Throws: the shared tier's failure; ``PanzaError/Code/invalidConfiguration`` when the
    ///   remote tier shares no invalidations (or is not read).
    @discardableResult
    public func synchronizeInvalidations() async throws -> Int {
        try self.checkOpen()
        guard let follower = self.invalidationFollower else {
            throw PanzaError(
                code: .invalidConfiguration, message: "the cache has no readable remote tier that shares invalidations")
        }
        return try await follower.pollNow()
    }

    // MARK: Keys

    static func plainKey(_ key: String) throws -> CacheKey {
        guard !key.isEmpty, key.utf8.count <= maximumKeyLength else {
            throw PanzaError(
                code: .invalidKey,
                message: "a key must have 1 to \(maximumKeyLength) UTF-8 bytes, not \(key.utf8.count)",
                key: String(key.prefix(80))
            )
        }
        return CacheKey(rawValue: key)
    }

    /// Whether ``close()`` was called (the fence's flag: see ``VersionFence/close()``).
    var isClosedNow: Bool { self.fence.isClosed }

    /// Fails fast once the cache is closed. Writes are refused by the fence itself, in the
    /// critical section in which they would be queued; this check only spares a closed cache work.
    func checkOpen() throws {
        if self.fence.isClosed {
            throw PanzaError(code: .closed, message: "the cache is closed")
        }
    }
}
