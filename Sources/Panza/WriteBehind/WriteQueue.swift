/// One operation waiting in a write-behind queue.
struct QueuedWrite: Sendable {
    /// The queue's own order: the drainer applies in increasing `sequence`.
    var sequence: UInt64
    var operation: CacheTierOperation
    /// Also record the operation in the SQLite outbox for the remote tier (SQLite queue only).
    var replicate: Bool
    /// Failed attempts so far.
    var attempts: Int
    /// For a fill into SQLite: the write stamp its lookup read (see ``SQLiteWrite/fillStamp``).
    var fillStamp: Int64? = nil
    /// For a store of a large value: the value not yet encoded (the operation's blob is then
    /// empty); see ``materialized``.
    var pending: PendingEnvelope? = nil
    /// For a large store claimed from the SQLite outbox: where its chunks are (the operation's
    /// blob is then empty); the uploader reads them one at a time.
    var outboxUpload: OutboxUpload? = nil
    /// For a removal: only values made before this time go (see ``SQLiteWrite/createdBefore``).
    var createdBefore: Int64? = nil
    /// When the operation was made (milliseconds since 1970): what a shared tier records as the
    /// time of a removal, which other caches compare with the creation times of values.
    var madeAtMilliseconds: Int64? = nil
    /// For the store of a background refresh into SQLite (see ``SQLiteWrite/refreshStamp``).
    var refreshStamp: Int64? = nil
    /// For a removal: a repair, the deletion of a copy a lookup found unusable (expired or
    /// damaged); see ``SQLiteWrite/isRepair``.
    var isRepair = false
    /// For a record claimed from the SQLite outbox: the claim's lease token (its owner and the
    /// claim's number), which every later step of the batch must still find on its rows.
    var leaseToken: String? = nil

    /// The bytes the operation carries (the payload of a pending envelope).
    var byteCount: Int {
        if let pending { return pending.payloadCount }
        if let outboxUpload { return outboxUpload.byteCount }
        if case .store(_, let blob, _) = self.operation { return blob.count }
        return 0
    }

    /// The operation with its envelope encoded whole, for a tier that takes bytes.
    var materialized: CacheTierOperation {
        guard let pending, case .store(let key, _, let expiresAt) = self.operation else { return self.operation }
        return .store(key: key, blob: pending.encoded(), expiresAtMilliseconds: expiresAt)
    }
}

/// A large outbox record: its head in the row, the rest in `chunks` chunk rows.
struct OutboxUpload: Sendable {
    var id: Int64
    var chunks: Int
    /// The envelope's whole length.
    var byteCount: Int
}

/// What a queue holds for a key, which decides before the tier below it is asked.
enum WriteShadow: Sendable, Equatable {
    /// Nothing queued concerns the key: ask the tier.
    case none
    /// A store is queued: these are the bytes the tier will hold.
    case stored([UInt8])
    /// A store of a large value is queued, not yet encoded: this is the value the tier will hold.
    case pending(PendingEnvelope)
    /// A removal of the key, its namespace or everything is queued: the tier will not hold it,
    /// and the tiers below must not be asked either.
    case removed
    /// A removal learned from another cache is queued: of what the tier holds, only a value made
    /// at or after this time (milliseconds since 1970) may be served; the tiers below judge their
    /// own copies (the removal came from the shared tier).
    case removedBefore(Int64)
}

/// A write-behind queue of one tier: the in-memory ``MemoryWriteQueue`` or the durable
/// ``OutboxWriteQueue``. ``QueueDrainer`` drains both the same way.
///
/// A claimed batch stays in the queue (and in ``shadow(forKey:)``) until ``complete(_:)`` or
/// ``deadLetter(_:error:)`` removes it, so that a read never misses a write in flight.
protocol WriteQueue: Sendable {
    /// The name of the tier the queue writes, for logs and errors.
    var tierName: String { get }

    /// The oldest pending operations, at most `limit`, in order; empty when nothing is pending
    /// (or another process holds the head).
    func claim(limit: Int) async throws -> [QueuedWrite]

    /// Writes `batch` to the tier.
    func apply(_ batch: [QueuedWrite]) async throws

    /// Removes an applied batch. Returns the new watermark.
    func complete(_ batch: [QueuedWrite]) async throws -> UInt64

    /// Records a failed attempt of every operation of `batch` and gives back any claim on it.
    func recordFailure(_ batch: [QueuedWrite]) async

    /// Moves `write` (the head) to the dead letters. Returns the new watermark.
    func deadLetter(_ write: QueuedWrite, error: any Error) async throws -> UInt64

    /// The highest sequence below which nothing is pending.
    func watermark() async throws -> UInt64

    /// The highest sequence queued so far: what a flush made now waits for.
    func lastSequence() async throws -> UInt64

    /// Whether the tier said `error` will not go away by retrying.
    func isPermanent(_ error: any Error) -> Bool

    /// What pending operations say about `key`.
    func shadow(forKey key: CacheKey) async throws -> WriteShadow
}
