import Logging

/// What reading a tier found for a key.
enum TierFound: Sendable {
    /// The stored envelope bytes, to verify and decode.
    case blob([UInt8])
    /// An entry the tier verified and decoded piece by piece as it read it (a SQLite entry stored
    /// in chunks): there are no whole bytes to fill other tiers with.
    case decoded(DecodedEnvelope)
    /// The tier's entry failed verification while it was decoded piece by piece.
    case decodingFailed(any Error & Sendable)
    /// The tier holds a copy past its retention, made at this time: a miss, which still tells the
    /// lookup that copies below made before it were replaced by it.
    case expired(createdAtMilliseconds: Int64)

    var isExpiredCopy: Bool {
        if case .expired = self { return true }
        return false
    }
}

/// A tier below memory, and how the cache writes it.
struct TierSlot: Sendable {
    let tier: any CacheTier
    /// The tier's position in the chain (and in statistics).
    let index: Int
    /// The in-memory queue that writes the tier; `nil` when it is written through the SQLite
    /// outbox or not at all. Fills from the tiers below go here.
    let lane: Lane?
    /// The queue whose pending operations decide before the tier is asked: the lane, the outbox,
    /// or none for a read-only tier.
    let pending: (any WriteQueue)?
    /// Reads the tier: what it holds, and on a miss the write stamp a fill must find unchanged (SQLite).
    let read: @Sendable (CacheKey) async throws -> (found: TierFound?, missStamp: Int64?)
    /// The deadline and circuit breaker of a remote (shared) tier's reads; `nil` for SQLite, the
    /// one local tier, which is also the only one a reader repairs.
    let readGuard: RemoteReadGuard?

    init(
        tier: any CacheTier,
        index: Int,
        lane: Lane?,
        pending: (any WriteQueue)?,
        readGuard: RemoteReadGuard? = nil,
        read: (@Sendable (CacheKey) async throws -> (found: TierFound?, missStamp: Int64?))? = nil
    ) {
        self.tier = tier
        self.index = index
        self.lane = lane
        self.pending = pending
        self.readGuard = readGuard
        self.read = read ?? { key in (try await tier.blob(forKey: key).map { .blob($0) }, nil) }
    }
}

extension TierSlot {
    /// A read of a tier that hands envelopes over in pieces: decoded as they arrive.
    static func piecewiseRead(
        _ tier: any PieceWiseReading, maxPayloadBytes: Int
    ) -> @Sendable (CacheKey) async throws -> (found: TierFound?, missStamp: Int64?) {
        { key in
            let decoder = EnvelopeStreamDecoder(maxPayloadBytes: maxPayloadBytes)
            do {
                guard try await tier.readBlob(forKey: key, into: BlobSink { try decoder.append($0) }) else {
                    return (nil, nil)
                }
                return (.decoded(try decoder.finish()), nil)
            } catch {
                // The envelope failed verification (the decoder's error), or the tier failed.
                if let failure = decoder.failure as? PanzaError { return (.decodingFailed(failure), nil) }
                if let failure = error as? PanzaError,
                    [.corruptBlob, .unsupportedFormat, .valueTooLarge].contains(failure.code)
                {
                    return (.decodingFailed(failure), nil)
                }
                throw error
            }
        }
    }
}

/// An in-memory write-behind queue and the drainer that applies it to its tier.
struct Lane: Sendable {
    let queue: MemoryWriteQueue
    let drainer: QueueDrainer
    /// Whether its operations are also recorded in the SQLite outbox (the SQLite lane, when a
    /// writable remote tier is below it).
    let replicates: Bool
    /// Whether fills must carry a write stamp (SQLite, which other processes write too).
    let guardsFills: Bool

    init(
        tier: any CacheTier,
        replicates: Bool,
        guardsFills: Bool,
        writeBehind: TieredCache.Configuration.WriteBehind,
        timing: QueueDrainer.Timing,
        statistics: StatisticsRecorder,
        logger: Logger,
        applier: @escaping @Sendable ([QueuedWrite]) async throws -> Void,
        onApplied: @escaping @Sendable ([QueuedWrite]) -> Void
    ) {
        self.replicates = replicates
        self.guardsFills = guardsFills
        self.queue = MemoryWriteQueue(
            tierName: tier.name,
            maxPending: writeBehind.maxPendingWrites,
            maxPendingBytes: writeBehind.maxPendingBytes,
            isPermanent: { tier.isPermanentFailure($0) },
            applier: applier
        )
        self.drainer = QueueDrainer(
            queue: self.queue,
            configuration: writeBehind.drainConfiguration(maxBackoff: writeBehind.maxRetryBackoff, pollInterval: nil),
            timing: timing,
            statistics: statistics,
            logger: logger,
            onApplied: onApplied
        )
    }
}
