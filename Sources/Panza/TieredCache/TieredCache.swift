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
    /// Versions every write and guards fills from lower tiers.
    let fence: VersionFence
    let recorder: StatisticsRecorder
    let logger: Logger
    let singleFlight = SingleFlight()
    /// The clock of creation and expiry times and of loader timeouts (``Configuration/clock``).
    let clock: any CacheClock
    /// Keys being refreshed in the background by this cache, and the refresh tasks (cancelled on
    /// close).
    let refreshes = Mutex<[String: Task<Void, Never>]>([:])
    /// The SQLite tier, whose leases keep one refresh of a key at a time across processes.
    let sqliteTier: SQLiteTier?
    /// The SQLite tier and its write queue, when its inline readers can answer memory misses on
    /// the caller's thread (``localHit(_:as:refreshAhead:)``).
    let localReads: LocalReads?
    /// This cache's name in refresh leases.
    let refreshHolder = "\(ProcessInfo.processInfo.processIdentifier)-\(UInt64.random(in: 1...UInt64.max))"
    private let drainerTasks: [Task<Void, Never>]
    private let outboxTask: Task<Void, Never>?
    private let currentModes: Mutex<CacheModes>
    /// Whether any bust mode is on: read on every memory hit, so kept apart from `currentModes`.
    let bustModeActive: Atomic<Bool>
    let isClosed = Atomic<Bool>(false)
    /// The numbers of memoized functions in the memory tier's fast keys, by canonical key prefix
    /// (id and arity): one per function, whichever ``Memoized`` wraps it.
    private let fastKeyFunctions = Mutex<[[UInt8]: UInt32]>([:])
    /// Memoize ids whose unstorable results were already logged.
    private let unstorableWarned = Mutex<Set<String>>([])
    /// Reports through swift-metrics; `nil` when ``Configuration/metrics`` is `nil`.
    let metricsReporter: MetricsReporter?
    /// The counters of each memoized id, made by ``memoize(id:timeToLive:freshness:limits:concurrencyKey:key:rawKey:_:)``.
    private let idCounters = IdCounterRegistry()
    /// The periodic metrics report.
    private let metricsTask = Mutex<Task<Void, Never>?>(nil)
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
        var sqlite: SQLiteTier?
        if let sqliteConfiguration = configuration.sqlite {
            sqlite = try await SQLiteTier.open(configuration: sqliteConfiguration, logger: logger)
        }
        self.sqliteTier = sqlite
        let remote = configuration.remote
        let recorder = StatisticsRecorder(tierNames: [sqlite?.name, remote?.name].compactMap { $0 })
        self.recorder = recorder
        self.unretainedRecorder = Unmanaged.passUnretained(recorder)
        let writeBehind = configuration.writeBehind
        let timing = configuration.drainTiming ?? .continuous

        // A writable remote below SQLite is written through the SQLite outbox (durable); without
        // SQLite, through an in-memory queue like SQLite itself.
        var makeOutbox: (queue: OutboxWriteQueue, drainer: QueueDrainer)?
        if let sqlite, let remote, remote.isWritable {
            let queue = OutboxWriteQueue(outbox: sqlite, remote: remote, lease: writeBehind.outboxLease)
            let drainer = QueueDrainer(
                queue: queue,
                configuration: writeBehind.drainConfiguration(
                    maxBackoff: .seconds(30),
                    pollInterval: writeBehind.outboxPollInterval
                ),
                timing: timing,
                statistics: recorder,
                logger: logger
            )
            makeOutbox = (queue, drainer)
        }
        let outbox = makeOutbox
        self.outbox = outbox
        var slots: [TierSlot] = []
        var lanes: [Lane] = []
        if let sqlite {
            let replicates = outbox != nil
            let lane = Lane(
                tier: sqlite,
                replicates: replicates,
                guardsFills: true,
                writeBehind: writeBehind,
                timing: timing,
                statistics: recorder,
                logger: logger,
                applier: { batch in
                    try await sqlite.applyWrites(
                        batch.map {
                            SQLiteWrite(
                                operation: $0.operation, replicate: $0.replicate, fillStamp: $0.fillStamp,
                                pending: $0.pending, createdBefore: $0.createdBefore,
                                madeAtMilliseconds: $0.madeAtMilliseconds, refreshStamp: $0.refreshStamp)
                        }
                    )
                },
                onApplied: { batch in
                    if batch.contains(where: \.replicate) { outbox?.drainer.notify() }
                }
            )
            lanes.append(lane)
            slots.append(
                TierSlot(tier: sqlite, index: slots.count, lane: lane, pending: lane.queue) { key in
                    // Only memory is above SQLite: the entry is decoded as it is read, from
                    // SQLite's buffers (a large one chunk by chunk), never copied out as one blob.
                    try await sqlite.lookup(forKey: key, decodingUpTo: configuration.maxValueBytes)
                }
            )
        }
        let loaderLatency = LoaderLatency()
        self.loaderLatency = loaderLatency
        if let remote {
            let breaker = configuration.remoteBreaker
            let remoteIndex = slots.count
            let readGuard = RemoteReadGuard(
                tierName: remote.name,
                timeout: configuration.remoteReadTimeout,
                breaker: breaker,
                logger: logger,
                now: { [clock = configuration.clock] in .milliseconds(clock.nowMilliseconds()) },
                slowerThan: {
                    guard breaker.skipsTiersSlowerThanLoads, let typical = loaderLatency.typical else { return nil }
                    return max(typical, breaker.minimumSlowRead)
                },
                onSlowRead: { recorder.tierSlow(remoteIndex) }
            )
            // A tier that hands envelopes over in pieces is decoded as they arrive (large values are
            // never held in their stored form); any other is read whole.
            let remoteRead = (remote as? any PieceWiseReading).map {
                TierSlot.piecewiseRead($0, maxPayloadBytes: configuration.maxValueBytes)
            }
            if let outbox {
                slots.append(
                    TierSlot(
                        tier: remote, index: slots.count, lane: nil, pending: outbox.queue, readGuard: readGuard,
                        read: remoteRead)
                )
            } else if remote.isWritable {
                let lane = Lane(
                    tier: remote,
                    replicates: false,
                    guardsFills: false,
                    writeBehind: writeBehind,
                    timing: timing,
                    statistics: recorder,
                    logger: logger,
                    applier: { batch in try await Self.apply(batch, to: remote) },
                    onApplied: { _ in }
                )
                lanes.append(lane)
                slots.append(
                    TierSlot(
                        tier: remote, index: slots.count, lane: lane, pending: lane.queue, readGuard: readGuard,
                        read: remoteRead)
                )
            } else {
                slots.append(
                    TierSlot(
                        tier: remote, index: slots.count, lane: nil, pending: nil, readGuard: readGuard,
                        read: remoteRead)
                )
            }
        }
        self.slots = slots
        self.lanes = lanes
        if let sqlite, sqlite.configuration.inlineReaderCount > 0, let lane = lanes.first {
            self.localReads = LocalReads(tier: sqlite, queue: lane.queue)
        } else {
            self.localReads = nil
        }
        if let sharing = remote as? any InvalidationSharing, sharing.isReadable {
            // Invalidations apply to the tiers above the shared one: memory and the local lanes
            // (those that guard fills: SQLite). The closure holds them, never the cache.
            let localLanes = lanes.filter(\.guardsFills)
            self.invalidationFollower = InvalidationFollower(tier: sharing, recorder: recorder, logger: logger) {
                Self.applyInvalidations($0, memory: memory, lanes: localLanes, fence: fence)
            }
        } else {
            self.invalidationFollower = nil
        }
        self.drainerTasks = lanes.map { lane in Task { await lane.drainer.run() } }
        self.outboxTask = outbox.map { outbox in Task { await outbox.drainer.run() } }
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

    /// Returns once every write made before the call has reached every tier (for a remote tier
    /// below SQLite, has been uploaded from the outbox).
    ///
    /// After it returns, those writes survive the process being killed.
    ///
    /// - Throws: a tier's error when writing to it fails meanwhile (the writes stay queued and are
    ///   retried, so a later `flush()` can still succeed); ``PanzaError/Code/writeDropped`` when
    ///   some of them failed for good and went to the dead letters; `CancellationError`.
    public func flush() async throws {
        for lane in self.lanes {
            try await lane.drainer.waitUntilApplied(lane.queue.lastSequence())
        }
        if let outbox = self.outbox {
            let target = try await outbox.queue.lastSequence()
            outbox.drainer.notify()
            try await outbox.drainer.waitUntilApplied(target)
        }
    }

    /// Applies what is queued, then closes every tier, within ``Configuration/closeTimeout``
    /// whatever the tiers do. Calls after `close()` throw ``PanzaError/Code/closed``.
    ///
    /// Uploads still in the SQLite outbox stay there for the next cache that opens the file
    /// (waiting for them at most ``Configuration/remoteCloseTimeout``).
    ///
    /// - Throws: ``PanzaError/Code/closeTimedOut`` naming how many operations of which tiers were
    ///   not applied when the deadline passed (they are lost, unless they were in the outbox);
    ///   otherwise the first error of a tier's `close()`.
    public func close() async throws {
        guard !self.isClosed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        self.metricsTask.withLock { $0?.cancel() }
        self.cancelRefreshes()
        self.invalidationFollower?.stop()
        defer { self.reportMetrics() }
        let clock = ContinuousClock()
        let deadline = clock.now + self.configuration.closeTimeout
        for lane in self.lanes {
            lane.queue.close()
            lane.drainer.close()
        }
        let drainerTasks = self.drainerTasks
        let lanesDrained = await Deadline.completes(within: deadline - clock.now) {
            for task in drainerTasks { await task.value }
        }
        var lost: [String] = []
        if !lanesDrained {
            for lane in self.lanes where lane.queue.pendingCount > 0 {
                lost.append("\(lane.queue.pendingCount) for \(lane.queue.tierName)")
                lane.drainer.abandon()
            }
        }
        if let outbox = self.outbox {
            // Give pending uploads a bounded chance; what is left stays in the outbox for next time.
            let budget = min(self.configuration.remoteCloseTimeout, deadline - clock.now)
            if lanesDrained, budget > .zero {
                _ = await Deadline.completes(within: budget) {
                    if let target = try? await outbox.queue.lastSequence() {
                        outbox.drainer.notify()
                        try? await outbox.drainer.waitUntilApplied(target)
                    }
                }
            }
            outbox.drainer.abandon()
            self.outboxTask?.cancel()
            if let task = self.outboxTask {
                _ = await Deadline.completes(within: max(.zero, deadline - clock.now)) { await task.value }
            }
            _ = await Deadline.completes(within: max(.milliseconds(100), deadline - clock.now)) {
                await outbox.queue.releaseLeases()
            }
        }
        let errors = ErrorBox()
        let slots = self.slots
        let trace = self.configuration.trace
        let tiersClosed = await Deadline.completes(within: max(.milliseconds(100), deadline - clock.now)) {
            for slot in slots.reversed() {
                do { try await slot.tier.close() } catch { errors.record(error) }
            }
            do { try trace?.close() } catch { errors.record(error) }
        }
        if !lost.isEmpty || !tiersClosed {
            var message = "close() gave up after \(self.configuration.closeTimeout)"
            if !lost.isEmpty { message += "; operations not applied: " + lost.joined(separator: ", ") }
            if !tiersClosed { message += "; a tier did not finish closing" }
            self.logger.error("panza: \(message)")
            throw PanzaError(code: .closeTimedOut, message: message)
        }
        if let error = errors.first { throw error }
    }

    /// Applies a batch to a tier, telling a shared one when each operation was made.
    static func apply(_ batch: [QueuedWrite], to tier: any CacheTier) async throws {
        if let sharing = tier as? any InvalidationSharing {
            try await sharing.apply(batch.map(\.materialized), madeAtMilliseconds: batch.map(\.madeAtMilliseconds))
        } else {
            try await tier.apply(batch.map(\.materialized))
        }
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

    /// Applies invalidations from other caches to memory and the local lanes: each is versioned
    /// like a removal of this cache's own (so that no fill in flight lands after it), is not
    /// replicated (the shared tier already has it), and in SQLite removes only values made before
    /// it.
    static func applyInvalidations(
        _ invalidations: [CacheInvalidation], memory: MemoryTier?, lanes: [Lane], fence: VersionFence
    ) {
        for invalidation in invalidations {
            let operation: CacheTierOperation =
                switch invalidation.scope {
                case .key(let key): .remove(key)
                case .namespace(let namespace): .removeNamespace(namespace)
                case .all: .removeAll
                }
            fence.write(operation) { version in
                switch invalidation.scope {
                case .key(let key): memory?.remove(key.rawValue)
                case .namespace(let namespace): memory?.removeNamespace(namespace)
                case .all: memory?.removeAll()
                }
                for lane in lanes {
                    lane.queue.enqueue(
                        operation, version: version, replicate: false,
                        createdBefore: invalidation.createdBeforeMilliseconds)
                }
            }
        }
        for lane in lanes { lane.drainer.notify() }
    }

    // MARK: The chain

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

    /// Whether ``close()`` was called.
    var isClosedNow: Bool { self.isClosed.load(ordering: .relaxed) }

    private func checkOpen() throws {
        if self.isClosed.load(ordering: .relaxed) {
            throw PanzaError(code: .closed, message: "the cache is closed")
        }
    }

    /// Versions `operation`, applies it to memory and queues it for every tier below, in one
    /// step under the fence: so every queue sees writes in version order.
    ///
    /// Waits for room in the queues first (cancellable); room is advisory, so concurrent writers
    /// may overshoot the bounds by one operation each.
    ///
    /// - Returns: the operation's sequence in each lane, for waiting until applied.
    ///
    /// - Parameter refresh: for the store of a background refresh, the conditions it lands on:
    ///   nothing happens (and `nil` is returned) when a write of the key is newer than its ticket.
    private func submit(
        _ operation: CacheTierOperation,
        pending: PendingEnvelope? = nil,
        refresh: RefreshGuard? = nil,
        inMemory: (MemoryTier) -> Void
    ) async throws -> [(Lane, UInt64)]? {
        for lane in self.lanes { try await lane.queue.waitForRoom() }
        try self.checkOpen()
        let sequences = self.fence.write(operation, ifUnchangedSince: refresh?.ticket) { version in
            if let memory = self.memory { inMemory(memory) }
            return self.lanes.compactMap { lane in
                lane.queue.enqueue(
                    operation, version: version, replicate: lane.replicates, pending: pending,
                    refreshStamp: refresh?.sqliteStamp
                ).map { (lane, $0) }
            }
        }
        for lane in self.lanes { lane.drainer.notify() }
        return sequences
    }

    /// Encodes `value`, puts it in memory and queues it for every tier below.
    ///
    /// - Parameter replacing: a `set`: with a time to live of zero or less, the key's previous
    ///   value is removed (it was replaced). A loader's result is simply not stored.
    /// - Returns: the envelope's size, 0 when nothing was stored.
    @discardableResult
    ///   - freshness: the policy whose stale period the entry is kept for; `nil` for
    ///     ``Configuration/defaultFreshness``.
    ///   - refresh: for the store of a background refresh: when its value was made, and the
    ///     conditions it lands on (no write of the key since it started).
    func store<Value: Encodable & Sendable>(
        _ value: Value,
        key: CacheKey,
        timeToLive: Duration?,
        replacing: Bool,
        freshness: Freshness? = nil,
        refresh: RefreshGuard? = nil
    ) async throws -> Int {
        try self.checkOpen()
        let lifetime = Lifetime(timeToLive ?? self.configuration.defaultTimeToLive)
        guard case .milliseconds(let timeToLiveMilliseconds) = lifetime else {
            if replacing {
                _ = try await self.submit(.remove(key)) { $0.remove(key.rawValue) }
            }
            return 0
        }
        let (payloadCount, times, form): (Int, EntryTimes, ValueCoding.StoredForm)
        do {
            // A value that SQLite will keep in chunks goes down as it is and is encoded there,
            // frame by frame: the queue never holds a second copy of it.
            (payloadCount, times, form) = try ValueCoding.storedForm(
                of: value, createdAtMilliseconds: refresh?.createdAtMilliseconds ?? self.clock.nowMilliseconds(),
                timeToLiveMilliseconds: timeToLiveMilliseconds,
                staleForMilliseconds: (freshness ?? self.configuration.defaultFreshness)?.retentionMilliseconds ?? 0,
                compress: self.configuration.compression,
                maxPayloadBytes: self.configuration.maxValueBytes,
                pendingAbove: self.configuration.sqlite == nil ? nil : BlobChunks.chunkSize)
        } catch let error as PanzaError where error.code == .valueTooLarge {
            throw PanzaError(
                code: error.code, message: error.message + ", the safety limit of the cache's configuration",
                key: key.rawValue)
        }
        let expiresAt = times.retainedUntil
        let blob: [UInt8]
        let pending: PendingEnvelope?
        switch form {
        case .blob(let bytes): (blob, pending) = (bytes, nil)
        case .pending(let value): (blob, pending) = ([], value)
        }
        let operation = CacheTierOperation.store(key: key, blob: blob, expiresAtMilliseconds: expiresAt)
        let submitted = try await self.submit(operation, pending: pending, refresh: refresh) { memory in
            self.putInMemory(
                memory, value, key: key, cost: Self.memoryCost(payload: payloadCount, key: key),
                storedBytes: pending == nil ? blob.count : payloadCount, times: times)
        }
        guard let sequences = submitted else { return 0 }
        self.recorder.add(.writes)
        if self.configuration.writeMode == .writeThrough {
            for (lane, sequence) in sequences {
                try await lane.drainer.waitUntilApplied(sequence)
            }
        }
        return pending == nil ? blob.count : payloadCount
    }

    /// Removes from memory at once, then from every tier below; returns when they applied it.
    func remove(_ operation: CacheTierOperation) async throws {
        try self.checkOpen()
        let sequences = try await self.submit(operation) { memory in
            switch operation {
            case .remove(let key): memory.remove(key.rawValue)
            case .removeNamespace(let namespace): memory.removeNamespace(namespace)
            case .removeAll: memory.removeAll()
            case .store: preconditionFailure("remove(_:) takes removals only")
            }
        }
        for (lane, sequence) in sequences ?? [] {
            try await lane.drainer.waitUntilApplied(sequence)
        }
    }

    /// What an entry costs the memory tier: its decoded payload (compression saves nothing once
    /// the value is decoded) and its key.
    static func memoryCost(payload: Int, key: CacheKey) -> Int {
        payload + key.rawValue.utf8.count
    }

    /// Puts a decoded value in the memory tier and counts what it evicted.
    func putInMemory(
        _ memory: MemoryTier,
        _ value: any Sendable,
        key: CacheKey,
        cost: Int,
        storedBytes: Int,
        times: EntryTimes
    ) {
        let evicted = memory.insert(
            .make(value: value, cost: cost, storedBytes: storedBytes, namespace: key.namespace, times: times),
            forKey: key.rawValue
        )
        if evicted > 0 { self.recorder.add(.memoryEvictions, evicted) }
    }

    /// Looks `key` up in memory, then down the chain. A hit below memory fills the tiers above.
    func lookup<Value: Decodable & Sendable>(_ key: CacheKey, as type: Value.Type) async throws -> Value? {
        try self.checkOpen()
        if let value = try self.memoryLookup(key, as: type) { return value }
        if let value = self.localHit(key, as: type, refreshAhead: nil) { return value }
        let value = try await self.lowerLookup(key, as: type)
        if value == nil { self.configuration.trace?.record(key: key.rawValue, size: 0, source: .miss, latency: .zero) }
        return value
    }

    @inline(__always)
    func memoryLookup<Value: Sendable>(_ key: CacheKey, as _: Value.Type) throws -> Value? {
        guard let stored = self.memoryLookupUntyped(key) else { return nil }
        guard let value = stored as? Value else { throw Self.typeMismatch(stored, Value.self, key: key) }
        return value
    }

    /// Looks `key` up in memory and counts the hit or miss.
    @usableFromInline
    func memoryLookupUntyped(_ key: CacheKey) -> (any Sendable)? {
        guard let memory = self.memory else { return nil }
        switch memory.lookup(key.rawValue, nowMilliseconds: self.clock.nowMilliseconds()) {
        case .hit(let stored, let storedBytes, _):
            self.recorder.add(.memoryHits)
            self.trace?.record(key: key.rawValue, size: storedBytes, source: .memory, latency: .zero)
            return stored
        case .stale:
            // Kept for callers whose freshness serves it; not for this one.
            self.recorder.add(.memoryMisses)
            return nil
        case .expired:
            self.recorder.add(.expired)
            self.recorder.add(.memoryMisses)
            return nil
        case .miss:
            self.recorder.add(.memoryMisses)
            return nil
        }
    }

    /// Looks `key` up in the tiers below memory, in order.
    ///
    /// What a tier's queue holds decides before the tier is asked: a queued store is the answer, a
    /// queued removal ends the lookup (the tiers below may still hold the removed value). A hit
    /// fills the tiers above only if no write of the key got a newer version meanwhile.
    func lowerLookup<Value: Decodable & Sendable>(_ key: CacheKey, as type: Value.Type) async throws -> Value? {
        try await self.lowerLookupEntry(key, as: type, acceptingStale: false)?.value
    }

    /// ``lowerLookup(_:as:)``, with the entry's times.
    ///
    /// - Parameter acceptingStale: whether an entry past its time to live but within its stale
    ///   period is an answer; when not, it is a miss of its tier (and is left in place).
    func lowerLookupEntry<Value: Decodable & Sendable>(
        _ key: CacheKey,
        as type: Value.Type,
        acceptingStale: Bool
    ) async throws -> (value: Value, times: EntryTimes)? {
        let lookupStart = self.trace == nil ? nil : ContinuousClock.now
        let ticket = self.fence.beginRead()
        defer { self.fence.endRead(ticket) }
        /// The write stamps read by the tiers that missed, by slot index.
        var missStamps: [Int: Int64] = [:]
        for slot in self.slots where slot.tier.isReadable {
            let index = slot.index
            var found: TierFound?
            do {
                switch try await slot.pending?.shadow(forKey: key) ?? .none {
                case .stored(let queued):
                    found = .blob(queued)
                case .pending(let pending):
                    found = .decoded(pending.decoded)
                case .removed:
                    self.recorder.tierMiss(index)
                    return nil
                case .none:
                    guard let readGuard = slot.readGuard else {
                        let read = try await slot.read(key)
                        found = read.found
                        missStamps[index] = read.missStamp
                        break
                    }
                    switch await readGuard.read({ try await slot.read(key) }) {
                    case .value(let read):
                        found = read.found
                    case .skipped:
                        self.recorder.tierSkip(index)
                        self.recorder.tierMiss(index)
                        continue
                    case .timedOut(let timeout):
                        self.recorder.tierTimeout(index)
                        if slot.tier.failuresReachCallers {
                            // Counted as an error (and a miss) by the catch below.
                            throw PanzaError(
                                code: .timedOut,
                                message: "the \(slot.tier.name) tier did not answer within \(timeout)",
                                key: key.rawValue
                            )
                        }
                        self.recorder.tierMiss(index)
                        self.logger.warning(
                            "panza: tier lookup timed out; treated as a miss",
                            metadata: ["tier": "\(slot.tier.name)", "key": "\(key)", "timeout": "\(timeout)"]
                        )
                        continue
                    case .failed(let error):
                        throw error
                    }
                }
            } catch let error as PanzaError where error.code == .untrustedBlob {
                // A forged or foreign object: a miss, never copied up, never removed by a reader.
                self.recorder.add(.untrustedBlobs)
                self.recorder.tierMiss(index)
                self.logger.warning(
                    "panza: shared object refused: its signature does not verify; treated as a miss",
                    metadata: ["tier": "\(slot.tier.name)", "key": "\(key)", "error": "\(error)"]
                )
                continue
            } catch {
                self.recorder.tierError(index)
                self.recorder.tierMiss(index)
                self.logger.warning(
                    "panza: tier lookup failed; treated as a miss",
                    metadata: ["tier": "\(slot.tier.name)", "key": "\(key)", "error": "\(error)"]
                )
                if slot.tier.failuresReachCallers { throw error }
                continue
            }
            if found != nil, slot.readGuard == nil, let follower = self.invalidationFollower,
                !follower.isFirstPollDone
            {
                // A newly opened cache learns what other caches busted while it was closed before
                // it serves a local entry (waiting once, at most the remote read timeout).
                await follower.waitForFirstPoll(timeout: self.configuration.remoteReadTimeout ?? .seconds(1))
                do {
                    if case .removed = try await slot.pending?.shadow(forKey: key) ?? .none {
                        self.recorder.tierMiss(index)
                        return nil
                    }
                    let read = try await slot.read(key)
                    found = read.found
                    missStamps[index] = read.missStamp
                } catch {
                    found = nil
                }
            }
            guard let found else {
                self.recorder.tierMiss(index)
                continue
            }
            let envelope: DecodedEnvelope
            var blob: [UInt8]?
            do {
                switch found {
                case .blob(let bytes):
                    blob = bytes
                    envelope = try DecodedEnvelope.decode(bytes, maxPayloadBytes: self.configuration.maxValueBytes)
                case .decoded(let decoded):
                    envelope = decoded
                case .decodingFailed(let error):
                    throw error
                }
            } catch {
                self.recorder.add(.corruptBlobs)
                self.recorder.tierMiss(index)
                self.logger.error(
                    "panza: stored blob failed verification; treated as a miss",
                    metadata: ["tier": "\(slot.tier.name)", "key": "\(key)", "error": "\(error)"]
                )
                self.repair(key, in: slot, ticket: ticket)
                continue
            }
            let times = envelope.times
            switch times.state(atMilliseconds: self.clock.nowMilliseconds()) {
            case .fresh:
                break
            case .stale where acceptingStale:
                break
            case .stale:
                self.recorder.tierMiss(index)
                continue
            case .gone:
                self.recorder.add(.expired)
                self.recorder.tierMiss(index)
                self.repair(key, in: slot, ticket: ticket)
                continue
            }
            let value: Value
            do {
                value = try ValueCoding.decode(type, from: envelope, key: key.rawValue)
            } catch {
                // Not this type's value (another program's, or the type changed): a miss, and the
                // local copy goes; a shared tier's object is left to its writers.
                self.recorder.add(.undecodableValues)
                self.recorder.tierMiss(index)
                self.logger.warning(
                    "panza: stored value does not decode as \(Value.self); treated as a miss",
                    metadata: ["tier": "\(slot.tier.name)", "key": "\(key)", "error": "\(error)"]
                )
                self.repair(key, in: slot, ticket: ticket)
                continue
            }
            self.acceptHit(
                key, value: value, envelope: envelope, blob: blob, index: index, ticket: ticket, missStamps: missStamps,
                lookupStart: lookupStart)
            return (value, times)
        }
        return nil
    }

    /// Counts a hit of the tier at `index`, and fills memory and the write queues of the tiers
    /// above it with the entry, unless a write of `key` came after `ticket`.
    ///
    /// - Parameters:
    ///   - blob: the entry's stored bytes; `nil` when it was decoded as it was read.
    ///   - missStamps: the write stamps read by the tiers above that missed, by slot index.
    ///   - lookupStart: when the lookup started, for the access trace.
    func acceptHit(
        _ key: CacheKey,
        value: some Sendable,
        envelope: DecodedEnvelope,
        blob: [UInt8]?,
        index: Int,
        ticket: VersionFence.Ticket,
        missStamps: [Int: Int64],
        lookupStart: ContinuousClock.Instant?
    ) {
        self.recorder.tierHit(index)
        if let trace = self.trace {
            trace.record(
                key: key.rawValue,
                size: envelope.storedBytes,
                source: .tier(index),
                latency: lookupStart.map { ContinuousClock.now - $0 } ?? .zero
            )
        }
        self.recorder.add(.bytesRead, envelope.storedBytes)
        let times = envelope.times
        let expiresAt = times.retainedUntil
        let upper =
            index == 0
            ? []
            : self.slots[..<index].compactMap { slot in
                slot.lane.map { (lane: $0, stamp: missStamps[slot.index]) }
            }
        guard self.memory != nil || !upper.isEmpty else { return }
        self.fence.fill(key, ticket: ticket) {
            if let memory = self.memory {
                self.putInMemory(
                    memory, value, key: key, cost: Self.memoryCost(payload: envelope.payload.count, key: key),
                    storedBytes: envelope.storedBytes, times: times)
            }
            for (lane, stamp) in upper where stamp != nil || !lane.guardsFills {
                // A fill is not replicated (the entry came from below), is dropped when the
                // queue is full, and lands in SQLite only if no process wrote the key since
                // SQLite missed it. A value decoded as it streamed in has no stored bytes:
                // SQLite (the one lane above a remote tier) encodes it again, frame by frame.
                lane.queue.enqueue(
                    .store(key: key, blob: blob ?? [], expiresAtMilliseconds: expiresAt),
                    version: ticket.snapshot,
                    replicate: false,
                    isFill: true,
                    fillStamp: stamp,
                    pending: blob == nil
                        ? PendingEnvelope(decoded: envelope, compress: self.configuration.compression) : nil
                )
            }
        }
        for (lane, _) in upper { lane.drainer.notify() }
    }

    /// Removes a damaged or expired entry from the tier that holds it, unless a newer write of the
    /// key is already on its way. A shared (remote) tier is never repaired by a reader: an object
    /// this process cannot decode may be one a newer Panza wrote; it is counted, logged and left to
    /// its writers (and to the bucket's expiry).
    private func repair(_ key: CacheKey, in slot: TierSlot, ticket: VersionFence.Ticket) {
        guard slot.readGuard == nil, let lane = slot.lane else { return }
        self.fence.fill(key, ticket: ticket) {
            lane.queue.enqueue(.remove(key), version: ticket.snapshot, replicate: false, isFill: true)
        }
        lane.drainer.notify()
    }

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
        var fallback: StaleEntry<Value>?
        if !bust, !memoryChecked {
            switch try self.memoryEntry(key, as: Value.self) {
            case .fresh(let value, let times):
                self.refreshIfDue(call, times: times)
                return value
            case .stale(let entry):
                if let value = self.staleWhileRevalidate(entry, call: call) { return value }
                fallback = self.fallbackCandidate(entry, call: call)
            case .miss:
                if !localChecked, let value = self.localHit(key, as: Value.self, refreshAhead: call.policy.refreshAhead)
                {
                    return value
                }
            }
        }
        if let candidate = fallback {
            // A stale copy in memory: the load's flight first looks for a fresh copy below
            // (another process's refresh), and the load falls back on the stale one.
            return try await self.loadFallingBack(on: candidate, call: call)
        }
        let outcome: Fetched<Value> = try await self.singleFlight.run(
            key: key.rawValue,
            onJoin: { self.recorder.add(.coalescedWaits) },
            lookup: {
                guard !bust else { return nil }
                // A flight of this key that ended between this caller's look in memory and the
                // start of this flight left its value in memory: without this second look, the
                // loader would run again for a value just loaded.
                if let stored = self.freshInMemory(key, as: Value.self) {
                    self.recorder.add(.coalescedWaits)
                    return .found(stored.value, stored.times)
                }
                guard
                    let found = try await self.lowerLookupEntry(
                        key, as: Value.self, acceptingStale: call.policy.servesStale)
                else { return nil }
                return .found(found.value, found.times)
            },
            load: { .loaded(try await self.load(call)) }
        )
        switch outcome {
        case .loaded(let value):
            return value
        case .found(let value, let times):
            switch times.state(atMilliseconds: self.clock.nowMilliseconds()) {
            case .fresh:
                self.refreshIfDue(call, times: times)
                return value
            case .stale:
                let entry = StaleEntry(value: value, times: times)
                if let value = self.staleWhileRevalidate(entry, call: call) { return value }
                return try await self.loadFallingBack(on: self.fallbackCandidate(entry, call: call), call: call)
            case .gone:
                return try await self.loadFallingBack(on: nil, call: call)
            }
        }
    }

    /// The fresh value memory holds for `key` as a `Value`, not counted as a hit or a miss (the
    /// caller's first look in memory was counted).
    private func freshInMemory<Value: Sendable>(_ key: CacheKey, as _: Value.Type) -> (value: Value, times: EntryTimes)?
    {
        guard let memory = self.memory,
            case .hit(let stored, _, let times) = memory.lookup(
                key.rawValue, nowMilliseconds: self.clock.nowMilliseconds()),
            let value = stored as? Value
        else { return nil }
        return (value, times)
    }

    /// Calls the loader for `call` (within its limits and ``Freshness/hardTimeout``) and stores
    /// the result: what a miss's single flight runs.
    func load<Value: Codable & Sendable>(_ call: LoadCall<Value>) async throws -> Value {
        if call.modes.cacheOnly {
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
        return try await self.withHardTimeout(call) { try await self.loadAndStore(call, refresh: nil) }
    }

    /// Calls the loader within its limits, records how it went, and stores its result.
    ///
    /// - Parameter refresh: for a background refresh, the conditions its store lands on.
    func loadAndStore<Value: Codable & Sendable>(
        _ call: LoadCall<Value>,
        refresh: RefreshGuard?
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
                refresh: refresh)
        } catch let error as PanzaError where error.code == .encodingFailed || error.code == .valueTooLarge {
            // The call was paid for: its result reaches the caller even if it cannot be kept.
            self.recorder.add(.unstorableResults)
            self.warnUnstorable(id: id, error: error)
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
    private func warnUnstorable(id: String, error: PanzaError) {
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
        let maxRetries = all.map(\.maxRateLimitRetries).min() ?? 0
        var attempt = 0
        while true {
            var waited = Duration.zero
            for limit in all {
                if let rateLimiter = limit.rateLimiter {
                    waited += try await rateLimiter.acquireMeasured(cost: limit.cost)
                }
            }
            let concurrencyLimiters = all.compactMap(\.concurrencyLimiter)
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
        let (value, innerWait) = try await withPermits(limiters.dropFirst(), key: key, body)
        return (value, waited + innerWait)
    }

    private func recordThrottle(_ waited: Duration) {
        guard waited > .zero else { return }
        self.recorder.add(.throttledWaits)
        let (seconds, attoseconds) = waited.components
        self.recorder.add(.throttledNanoseconds, Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }

    /// The result of ``probeMemory(_:as:)``.
    @usableFromInline
    enum MemoryProbe<Value> {
        case hit(Value)
        case miss
        /// Memory was not consulted (a bust mode is on, or the cache is closed).
        case skipped

        @inlinable
        var isMiss: Bool {
            if case .miss = self { return true }
            return false
        }
    }

    /// The memory fast path of memoized calls: a hit without building the loader closure.
    ///
    /// - Parameter refreshAhead: the caller's ``Freshness/refreshAhead``: a hit it makes due for
    ///   a refresh is left to the full path (``MemoryProbe/skipped``), as is a stale entry.
    ///   - attaching: the memoized call's canonical bytes, by which the entry found is found next
    ///     time (see ``probeMemory(fast:as:refreshAhead:)``).
    @inlinable
    func probeMemory<Value: Sendable>(
        _ key: CacheKey,
        as type: Value.Type,
        refreshAhead: Double? = nil,
        attaching fast: MemoryFastKey? = nil
    ) throws -> MemoryProbe<Value> {
        guard let stored = self.probeMemoryUntyped(key, refreshAhead: refreshAhead, attaching: fast) else {
            return .skipped
        }
        switch stored {
        case .some(let stored):
            guard let value = stored as? Value else { throw Self.typeMismatch(stored, Value.self, key: key) }
            return .hit(value)
        case .none:
            return .miss
        }
    }

    /// `nil` when memory is skipped (or holds an entry the full path must see: stale, or due for
    /// a refresh); `.some(nil)` on a miss. Counts the hit or miss.
    @usableFromInline
    func probeMemoryUntyped(_ key: CacheKey, refreshAhead: Double?, attaching fast: MemoryFastKey?) -> (any Sendable)??
    {
        guard let memory = self.memory, !self.isClosed.load(ordering: .relaxed),
            !self.bustModeActive.load(ordering: .relaxed)
        else {
            return nil
        }
        switch memory.lookup(key.rawValue, nowMilliseconds: self.clock.nowMilliseconds()) {
        case .hit(let stored, let storedBytes, let times):
            if let ratio = refreshAhead, times.isRefreshDue(atMilliseconds: self.clock.nowMilliseconds(), ratio: ratio)
            {
                return nil
            }
            if let fast, self.trace == nil { memory.attach(fast, toKey: key.rawValue) }
            self.recorder.add(.memoryHits)
            self.trace?.record(key: key.rawValue, size: storedBytes, source: .memory, latency: .zero)
            return .some(stored)
        case .stale:
            return nil
        case .expired:
            self.recorder.add(.expired)
            self.recorder.add(.memoryMisses)
            return .some(nil)
        case .miss:
            self.recorder.add(.memoryMisses)
            return .some(nil)
        }
    }

    /// The memory fast path of memoized calls with their default keys: a fresh entry found by the
    /// call's canonical bytes, without its persistent key. Anything else (a miss, a stale entry,
    /// one due for a refresh, an access trace being recorded) is ``MemoryProbe/skipped``, for
    /// ``probeMemory(_:as:refreshAhead:attaching:)``; only a hit is counted.
    @inlinable
    func probeMemory<Value: Sendable>(
        fast: MemoryFastKey,
        as type: Value.Type,
        refreshAhead: Double?
    ) throws -> MemoryProbe<Value> {
        guard let entry = self.probeMemoryFast(fast, refreshAhead: refreshAhead) else { return .skipped }
        guard let value = entry.value(as: Value.self) else {
            throw PanzaError(
                code: .typeMismatch,
                message: "the value in memory is a \(Swift.type(of: entry.value)), not a \(Value.self)"
            )
        }
        return .hit(value)
    }

    /// The fresh entry the fast index holds for `fast`, counted as a hit; `nil` for anything else.
    @usableFromInline
    func probeMemoryFast(_ fast: MemoryFastKey, refreshAhead: Double?) -> MemoryTier.Entry? {
        guard let memory = self.unretainedMemory, self.trace == nil, !self.isClosed.load(ordering: .relaxed),
            !self.bustModeActive.load(ordering: .relaxed),
            let entry = memory._withUnsafeGuaranteedRef({ $0.entry(fast: fast) })
        else {
            return nil
        }
        let times = entry.times
        if times.freshUntilMilliseconds != .max {
            let now = self.clock.nowMilliseconds()
            guard case .fresh = times.state(atMilliseconds: now) else { return nil }
            if let ratio = refreshAhead, times.isRefreshDue(atMilliseconds: now, ratio: ratio) { return nil }
        }
        self.unretainedRecorder._withUnsafeGuaranteedRef { $0.add(.memoryHits) }
        return entry
    }

    /// The number of the memoized function whose persistent keys start with `prefix`, for its
    /// fast keys: the same number for every ``Memoized`` of the same id and arity. A cache keeps
    /// one small entry per such function for its life.
    func fastKeyFunction(forPrefix prefix: [UInt8]) -> UInt32 {
        self.fastKeyFunctions.withLock { functions in
            if let number = functions[prefix] { return number }
            let number = UInt32(functions.count)
            functions[prefix] = number
            return number
        }
    }

    @usableFromInline
    static func typeMismatch(_ stored: any Sendable, _ expected: Any.Type, key: CacheKey) -> PanzaError {
        PanzaError(
            code: .typeMismatch,
            message: "the value in memory is a \(type(of: stored)), not a \(expected)",
            key: key.rawValue
        )
    }
}

/// What ``TieredCache/statistics`` reads, apart from the cache itself.
struct StatisticsSource: Sendable {
    let recorder: StatisticsRecorder
    let lanes: [Lane]
    let slots: [TierSlot]
    let memory: MemoryTier?

    func snapshot() -> CacheStatistics {
        var statistics = self.recorder.snapshot()
        statistics.pendingWrites = self.lanes.reduce(0) { $0 + $1.queue.pendingCount }
        statistics.pendingBytes = self.lanes.reduce(0) { $0 + $1.queue.pendingBytes }
        for slot in self.slots {
            if let readGuard = slot.readGuard { statistics.tiers[slot.tier.name]?.breaker = readGuard.state }
        }
        if let memory = self.memory {
            statistics.memoryEntries = memory.count
            statistics.memoryBytes = memory.bytes
        }
        return statistics
    }
}
