/// A removal made by another cache that shares a tier with this one (another machine, or another
/// process), which this cache applies to the tiers above the shared one.
///
/// Values made before ``createdBeforeMilliseconds`` are invalid; those made after it (by any
/// machine) are kept, so applying an invalidation twice, or long after it was made, removes nothing
/// that is still valid.
public struct CacheInvalidation: Hashable, Sendable, CustomStringConvertible {
    /// What the removal covers.
    public enum Scope: Hashable, Sendable {
        /// One entry.
        case key(CacheKey)
        /// Every entry of a memoize id (`""` for plain keys).
        case namespace(String)
        /// Every entry.
        case all
    }

    /// What the removal covers.
    public var scope: Scope
    /// Values made before this time, in milliseconds since 1970-01-01 UTC, are removed.
    public var createdBeforeMilliseconds: Int64

    /// A removal of `scope` for values made before `createdBeforeMilliseconds`.
    ///
    /// - Parameters:
    ///   - scope: what the removal covers.
    ///   - createdBeforeMilliseconds: values made before this time (milliseconds since 1970) are removed.
    public init(scope: Scope, createdBeforeMilliseconds: Int64) {
        self.scope = scope
        self.createdBeforeMilliseconds = createdBeforeMilliseconds
    }

    /// `key k`, `id x` or `all`, with the time, for logs.
    public var description: String {
        switch self.scope {
        case .key(let key): "key \(key) before \(self.createdBeforeMilliseconds)"
        case .namespace(let namespace):
            "id \(namespace.isEmpty ? "(plain keys)" : namespace) before \(self.createdBeforeMilliseconds)"
        case .all: "all before \(self.createdBeforeMilliseconds)"
        }
    }
}

/// A shared tier through which caches see each other's removals: what one cache busts, every
/// cache that reads the tier stops serving.
///
/// `S3Tier` (PanzaS3) is one: it records removals in an invalidation log in the bucket. A
/// ``TieredCache`` whose remote tier adopts this protocol asks it for new invalidations every
/// ``invalidationPollInterval`` while it is open, applies them to memory and SQLite, and before
/// its first lookup below memory waits (at most ``TieredCache/Configuration/remoteReadTimeout``)
/// for the first answer, so that a newly opened cache does not serve a local entry busted while
/// it was closed. When the tier cannot be reached, local entries are served and the log is read
/// when it comes back.
public protocol InvalidationSharing: CacheTier {
    /// How often the cache asks for new invalidations; `nil` to never ask on its own (call
    /// ``TieredCache/synchronizeInvalidations()``).
    var invalidationPollInterval: Duration? { get }

    /// The invalidations made by other caches that this tier has not returned before: on the
    /// first call, every one still recorded.
    ///
    /// - Throws: the tier's failure; the cache counts it and asks again at the next interval.
    func newInvalidations() async throws -> [CacheInvalidation]

    /// Applies `operations` in order, like ``CacheTier/apply(_:)``, knowing when each was made: a
    /// removal is recorded with that time, so that other caches keep the values made after it
    /// (even before it reached the shared tier). The cache calls this instead of `apply(_:)`.
    ///
    /// - Parameters:
    ///   - operations: the operations, in order.
    ///   - madeAtMilliseconds: when each operation was made (milliseconds since 1970), `nil` when unknown.
    func apply(_ operations: [CacheTierOperation], madeAtMilliseconds: [Int64?]) async throws
}

extension InvalidationSharing {
    /// Applies the operations as ``CacheTier/apply(_:)`` does, without their times.
    public func apply(_ operations: [CacheTierOperation], madeAtMilliseconds: [Int64?]) async throws {
        try await self.apply(operations)
    }
}
