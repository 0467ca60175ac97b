/// A write that failed for good and was set aside instead of blocking the writes behind it.
///
/// A write goes to the dead letters when its tier calls the failure permanent
/// (``CacheTier/isPermanentFailure(_:)``) or after
/// ``TieredCache/Configuration/WriteBehind/maxAttempts`` failed attempts. Uploads to the remote tier
/// are kept in the SQLite file (`panza outbox` lists them, `panza outbox --retry` sends them again);
/// writes to other tiers are counted in ``CacheStatistics/droppedWrites`` and logged at error level.
/// A removal in the dead letters keeps hiding the copy it was meant to remove.
public struct DeadLetter: Hashable, Sendable, Codable {
    /// The outbox id of the operation.
    public var id: Int64
    /// `store`, `remove`, `removeNamespace` or `removeAll`.
    public var operation: String
    /// The key, for stores and removals of one key.
    public var key: String?
    /// The memoize id (`""` for plain keys), where the operation has one.
    public var namespace: String?
    /// The size of the stored envelope, for stores.
    public var bytes: Int
    /// Attempts made before it was set aside.
    public var attempts: Int
    /// The last error, as text.
    public var error: String
    /// When it was set aside, in milliseconds since 1970.
    public var failedAtMilliseconds: Int64
}
