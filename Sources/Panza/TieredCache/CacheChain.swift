import Logging

/// The tiers of a cache below memory and how each is written, wired once when the cache opens:
/// the slots in chain order, the write-behind lanes, the SQLite outbox and the
/// follower of other caches' invalidations. No policy lives here; ``TieredCache`` decides.
struct CacheChain: Sendable {
    let sqlite: SQLiteTier?
    /// The tiers below memory, in chain order, with how each is written.
    let slots: [TierSlot]
    /// The in-memory write-behind queues, one per tier written from memory, in chain order.
    let lanes: [Lane]
    /// Drains the SQLite outbox into the remote tier, when both exist and the remote is writable.
    let outbox: (queue: OutboxWriteQueue, drainer: QueueDrainer)?
    /// The SQLite tier's inline readers and the queue that decides before them.
    let localReads: LocalReads?
    /// Reads the shared tier's invalidations; `nil` without one.
    let invalidationFollower: InvalidationFollower?
    let loaderLatency: LoaderLatency

    /// Opens the configured tiers and wires them.
    ///
    /// - Parameters:
    ///   - applyInvalidations: where invalidations learned from other caches are applied (memory,
    ///     the local lanes given, flights), as this cache's own removals are.
    static func open(
        configuration: TieredCache.Configuration,
        logger: Logger,
        recorder: StatisticsRecorder,
        applyInvalidations: @escaping @Sendable ([CacheInvalidation], [Lane]) -> Void
    ) async throws -> CacheChain {
        var sqlite: SQLiteTier?
        if let sqliteConfiguration = configuration.sqlite {
            sqlite = try await SQLiteTier.open(
                configuration: sqliteConfiguration, logger: logger, clock: configuration.clock)
        }
        let remote = configuration.remote
        let writeBehind = configuration.writeBehind
        let timing = configuration.drainTiming ?? .continuous

        // A writable remote below SQLite is written through the SQLite outbox (durable); without
        // SQLite, through an in-memory queue like SQLite itself.
        var outbox: (queue: OutboxWriteQueue, drainer: QueueDrainer)?
        if let sqlite, let remote, remote.isWritable {
            let queue = OutboxWriteQueue(outbox: sqlite, remote: remote, lease: writeBehind.outboxLease)
            let drainer = QueueDrainer(
                queue: queue,
                configuration: writeBehind.drainConfiguration(
                    maxBackoff: .seconds(30), pollInterval: writeBehind.outboxPollInterval),
                timing: timing,
                statistics: recorder,
                logger: logger
            )
            outbox = (queue, drainer)
        }
        let outboxDrainer = outbox?.drainer
        var slots: [TierSlot] = []
        var lanes: [Lane] = []
        if let sqlite {
            let lane = Lane(
                tier: sqlite,
                replicates: outbox != nil,
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
                                madeAtMilliseconds: $0.madeAtMilliseconds, refreshStamp: $0.refreshStamp,
                                isRepair: $0.isRepair)
                        }
                    )
                },
                onApplied: { batch in
                    if batch.contains(where: \.replicate) { outboxDrainer?.notify() }
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
            var lane: Lane?
            if outbox == nil, remote.isWritable {
                lane = Lane(
                    tier: remote,
                    replicates: false,
                    guardsFills: false,
                    writeBehind: writeBehind,
                    timing: timing,
                    statistics: recorder,
                    logger: logger,
                    applier: { batch in try await TieredCache.apply(batch, to: remote) },
                    onApplied: { _ in }
                )
                lanes.append(lane!)
            }
            let pending: (any WriteQueue)? = outbox?.queue ?? lane?.queue
            slots.append(
                TierSlot(
                    tier: remote, index: slots.count, lane: lane, pending: pending, readGuard: readGuard,
                    read: remoteRead)
            )
        }
        var localReads: LocalReads?
        if let sqlite, sqlite.configuration.inlineReaderCount > 0, let lane = lanes.first {
            localReads = LocalReads(tier: sqlite, queue: lane.queue)
        }
        var follower: InvalidationFollower?
        if let sharing = remote as? any InvalidationSharing, sharing.isReadable {
            // Invalidations apply to the tiers above the shared one: memory and the local lanes
            // (those that guard fills: SQLite). The closure holds them, never the cache.
            let localLanes = lanes.filter(\.guardsFills)
            follower = InvalidationFollower(tier: sharing, recorder: recorder, logger: logger) {
                applyInvalidations($0, localLanes)
            }
        }
        return CacheChain(
            sqlite: sqlite, slots: slots, lanes: lanes, outbox: outbox, localReads: localReads,
            invalidationFollower: follower, loaderLatency: loaderLatency)
    }
}
