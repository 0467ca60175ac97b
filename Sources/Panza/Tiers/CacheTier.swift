/// A tier that stores envelope bytes below the memory tier: SQLite, S3, or your own.
///
/// ``TieredCache`` reads tiers in order, fills the tiers above on a hit, and sends every write to
/// each tier in batches from its write-behind queue. A tier sees the operations in the order the
/// cache versioned them, and a fill from a lower tier never overtakes a newer write. A tier never decodes values: the bytes are ``BlobEnvelope``s, and the cache
/// verifies them.
///
/// The memory tier is not a `CacheTier`: it holds decoded values, so that its hits cost no
/// decoding at all.
public protocol CacheTier: Sendable {
    /// A short name for statistics and logs, such as `"sqlite"` or `"s3"`.
    var name: String { get }

    /// Returns the stored envelope bytes for `key`, or `nil` when the tier does not hold it.
    ///
    /// A tier may return expired or damaged bytes; the cache checks them and removes them.
    func blob(forKey key: CacheKey) async throws -> [UInt8]?

    /// Applies `operations` in order, atomically where the tier can.
    ///
    /// When this throws, the cache keeps the operations queued and retries them; nothing is lost.
    func apply(_ operations: [CacheTierOperation]) async throws

    /// Releases the tier's resources. Called once, after the last ``apply(_:)``.
    func close() async throws

    /// Whether the cache reads from this tier. `false` for a write-only tier.
    var isReadable: Bool { get }

    /// Whether the cache writes to this tier. `false` for a read-only tier (the tiers above are
    /// still written).
    var isWritable: Bool { get }

    /// Whether a failure of this tier reaches callers. `false` (the default): a failed read is a
    /// miss and a failed write is retried in the background.
    var failuresReachCallers: Bool { get }

    /// Whether `error`, thrown by ``apply(_:)``, will recur however often the operation is retried
    /// (a rejected request, not an outage). The cache then moves the operation to the dead letters
    /// at once instead of retrying it up to ``TieredCache/Configuration/WriteBehind/maxAttempts``
    /// times. `false` by default.
    func isPermanentFailure(_ error: any Error) -> Bool
}

extension CacheTier {
    /// Whether lookups may read this tier; `true` by default.
    public var isReadable: Bool { true }
    /// Whether writes reach this tier; `true` by default.
    public var isWritable: Bool { true }
    /// Whether this tier's failures reach callers instead of being misses; `false` by default.
    public var failuresReachCallers: Bool { false }
    /// Whether `error` will fail the same way on every retry; `false` by default (retried up to `maxAttempts`).
    public func isPermanentFailure(_ error: any Error) -> Bool { false }
}

/// A change that ``TieredCache`` asks a ``CacheTier`` to make.
public enum CacheTierOperation: Sendable {
    /// Stores `blob` under `key`, replacing any previous entry.
    case store(key: CacheKey, blob: [UInt8], expiresAtMilliseconds: Int64?)
    /// Removes the entry under `key`, if any.
    case remove(CacheKey)
    /// Removes every entry of a namespace (a memoize id).
    case removeNamespace(String)
    /// Removes every entry.
    case removeAll
}
